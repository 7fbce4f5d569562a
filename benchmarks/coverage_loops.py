"""Per-pixel Python loops that compute what :class:`segcal.conformal.evaluation.CoverageAccumulator`
computes, on a crop: the baselines of ``bench_conformal.py``'s evaluation measurement."""
from __future__ import annotations

import numpy as np
import torch


class CropThresholds:
    """Stands in for a calibrator whose thresholds ``[A, C, h, w]`` are those of a crop."""

    method, ignore_index = "crop", 255

    def __init__(self, thresholds: torch.Tensor) -> None:
        self.thresholds = thresholds

    def thresholds_at(self, levels: torch.Tensor) -> torch.Tensor:
        return self.thresholds

    info_: dict = {}  # a calibrator's fit description (read only)


def loop_per_pixel(thr: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over pixels and classes (vectorised over images and levels): coverage ``[A, C, h, w]``,
    summed set sizes ``[A, h, w]``."""
    a, c, h, w = thr.shape
    coverage = torch.full((a, c, h, w), float("nan"), dtype=torch.float64)
    sizes = torch.zeros(a, h, w, dtype=torch.long)
    for i in range(h):
        for j in range(w):
            pixel_scores = scores[:, :, i, j]  # [N, C]
            for k in range(c):
                sel = labels[:, i, j] == k
                if sel.any():
                    inside = pixel_scores[sel, k].unsqueeze(0) <= thr[:, k, i, j].unsqueeze(1)
                    coverage[:, k, i, j] = inside.double().mean(1)
            labelled = pixel_scores[labels[:, i, j] < c]  # set sizes over labelled images only
            sizes[:, i, j] = (labelled.unsqueeze(0) <= thr[:, :, i, j].unsqueeze(1)).sum(2).sum(1)
    return coverage, sizes


def loop_per_pixel_and_level(thr: np.ndarray, scores: np.ndarray, labels: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loop over pixels, levels and classes in NumPy (vectorised over images), as research code
    does it, computing what the vectorised evaluation computes: coverage ``[A, C, h, w]``, summed
    set sizes ``[A, h, w]`` and the numbers of empty and of full sets ``[A]``."""
    a, c, h, w = thr.shape
    coverage = np.full((a, c, h, w), np.nan)
    sizes = np.zeros((a, h, w), dtype=np.int64)
    empty, full = np.zeros(a, dtype=np.int64), np.zeros(a, dtype=np.int64)
    for i in range(h):
        for j in range(w):
            labelled = labels[:, i, j] < c
            for level in range(a):
                in_set = scores[:, :, i, j] <= thr[level, :, i, j]  # [N, C]
                for k in range(c):
                    targets = labels[:, i, j] == k
                    if targets.any():
                        coverage[level, k, i, j] = (targets & in_set[:, k]).sum() / targets.sum()
                size = in_set[labelled].sum(1)
                sizes[level, i, j] = size.sum()
                empty[level] += (size == 0).sum()
                full[level] += (size == c).sum()
    return coverage, sizes, empty, full
