"""Which calibration image fits what: data-independent rules on the image index (the stream order).

Learned groupings fit on a share of the images and set thresholds on the others (:func:`assign_parts`); the
local method deals images into cross-fitting folds (:func:`fold_parts`). Both depend only on the index, never
on the data, so the parts stay exchangeable.
"""
from __future__ import annotations

import torch


def assign_parts(first: int, n: int, split: float | None, with_val: bool = False) -> torch.Tensor:
    """Part code per image (0 = thresholds, 1 = grouping fit, 2 = group-count selection).

    Image ``i`` goes to the grouping part when ``⌊(i+1)·split⌋ > ⌊i·split⌋`` (exactly
    ``⌊N·split⌋`` of the first N images, evenly interleaved); with ``with_val`` every other
    grouping image is held out for selecting the number of groups.
    """
    i = torch.arange(first, first + n, dtype=torch.float64)
    if split is None:
        return torch.zeros(n, dtype=torch.long)
    slack = 1 + 1e-12
    j = torch.floor((i + 1) * split * slack)
    is_fit = j > torch.floor(i * split * slack)
    codes = is_fit.long()
    if with_val:
        codes = torch.where(is_fit & (j.long() % 2 == 0), torch.full_like(codes, 2), codes)
    return codes


def fold_parts(first: int, n: int, folds: int) -> torch.Tensor:
    """Fold of images ``first … first + n − 1``: image ``i`` → ``i mod folds`` (evenly interleaved)."""
    return torch.arange(first, first + n) % folds
