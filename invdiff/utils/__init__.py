"""Small shared helpers: input checks, atomic files, randomness, progress bars."""
from invdiff.utils.checks import check_finite, check_positive, check_shape, check_floating
from invdiff.utils.io import atomic_path
from invdiff.utils.progress import progress
from invdiff.utils.random import randn_like, randn

__all__ = [
    "check_finite",
    "check_positive",
    "check_shape",
    "check_floating",
    "atomic_path",
    "progress",
    "randn_like",
    "randn",
]
