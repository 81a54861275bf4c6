"""Data generators, loaders and data cards, imported as ``invdiff.datasets``."""
