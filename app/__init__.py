"""The application layer: the `slt` console script and the sweep scripts' main, above sweep/ and dashboards/.

sweep/ runs sweeps and dashboards/ reads their runs; neither imports the other. The commands that
combine them (a sweep that ends with its report; `slt` with both its science and result commands)
live here.
"""
