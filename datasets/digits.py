"""The 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits", test part; the
copy scikit-learn bundles as ``load_digits``), shipped offline in ``invdiff/assets/digits-8x8.csv.gz``.

1,797 images of 8x8 integer pixels in ``0..16`` (each the count of on pixels in a 4x4 block
of a 32x32 bitmap), with their class labels ``0..9``. Source: E. Alpaydin, C. Kaynak (1998),
UCI Machine Learning Repository, CC BY 4.0. invdiff splits them once, in file order:
``"train"`` is the first 1,497, ``"test"`` the last 300 (used by the benchmarks, never trained on).

>>> from invdiff.datasets.digits import load_digits
>>> images, labels = load_digits("test")
>>> images.shape, int(images.max()), labels.shape
(torch.Size([300, 8, 8]), 16, torch.Size([300]))
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_digits", "DIGITS_PATH", "N_TRAIN", "LEVELS"]

DIGITS_PATH = Path(__file__).resolve().parent.parent / "invdiff" / "assets" / "digits-8x8.csv.gz"
N_TRAIN = 1497
LEVELS = 17


def _path() -> Path:
    import invdiff

    p = Path(invdiff.__file__).resolve().parent / "assets" / "digits-8x8.csv.gz"
    return p if p.exists() else DIGITS_PATH


def load_digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: long tensors ``(N, 8, 8)`` with values ``0..16`` and ``(N,)``.

    :param split: ``"all"`` (1,797), ``"train"`` (first 1,497) or ``"test"`` (last 300).
    """
    if split not in ("all", "train", "test"):
        raise ValueError(f"split: expected 'all', 'train' or 'test', got {split!r}")
    with gzip.open(_path(), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(data[:, :64]).reshape(-1, 8, 8)
    labels = torch.from_numpy(data[:, 64])
    sl = {"all": slice(None), "train": slice(0, N_TRAIN), "test": slice(N_TRAIN, None)}[split]
    return images[sl].contiguous(), labels[sl].contiguous()
