"""Ray Tune trainables: a config dict -> slt calls -> tune.report each epoch, with checkpoints."""

from trainables.ticket import REPORTED_METRICS, run_fields, train_ticket

__all__ = ["REPORTED_METRICS", "run_fields", "train_ticket"]
