"""slt: lottery tickets in spiking neural networks and their ANN twins.

The science lives here and never imports Ray, Optuna or MLflow.
"""

__version__ = "0.1.0"
