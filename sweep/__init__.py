"""Sweep entry scripts and the engine that turns a search-space YAML into a Tuner."""
