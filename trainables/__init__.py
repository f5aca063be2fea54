"""Ray Tune trainables: config dict -> slt calls -> tune.report (issue: sweep service)."""
