"""MLflow runs -> pandas -> Pareto fronts, CSV, figures and the paper tables."""
