"""Lottery tickets: supermask (edge-popup), multi-prize (biprop), binary activations, patch pruning."""
