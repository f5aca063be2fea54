"""Ray Tune trainables: a config dict -> slt calls -> tune.report each epoch, with checkpoints."""

from trainables.ticket import train_ticket

__all__ = ["train_ticket"]
