"""Data-driven number of groups for a learned grouping (beyond the Kandinsky paper).

The grouping-fit images are split in two (interleaved, data-independent): for each candidate
``k`` the grouping and its pooled thresholds are fitted on the first half, and the
per-pixel coverage they give on the second half is scored by the **bias-corrected mean
squared coverage error**

    (ĉ − ℓ)² − ĉ(1 − ĉ)/(m − 1),   ĉ = covered / m,

averaged over the α grid and over (pixel, class) pairs with ``m ≥ 2`` held-out labels. It is
an unbiased estimate of ``(coverage − ℓ)²`` (plain |ĉ − ℓ| with few held-out labels rewards
over-coverage, i.e. giving up). Few images favour few, large groups (their thresholds
overfit less); many images favour many groups (tracking pixelwise). The threshold images
are never used here, so the final thresholds keep their guarantee.
"""
from __future__ import annotations

import torch

from segcal.conformal.accumulate import ScoreAccumulator
from segcal.conformal.grouping import (
    GroupingSpec,
    normalise_group_map,
    pixel_statistics,
)
from segcal.conformal.quantile import pixel_thresholds

DEFAULT_GROUP_CANDIDATES = (1, 2, 4, 8, 16, 32)


def coverage_mse(covered: torch.Tensor, counts: torch.Tensor, levels: torch.Tensor) -> float:
    """Bias-corrected mean squared coverage error: ``covered [A, C, P]``, ``counts [C, P]``, ``levels [A]``."""
    m = counts.double().unsqueeze(0)
    keep = (m >= 2).expand_as(covered)
    if not keep.any():
        raise ValueError("too few held-out images to choose the number of groups:"
                         " no pixel has two held-out labels of one class (use more calibration images"
                         " or a fixed num_groups)")
    c_hat = covered.double() / m.clamp_min(1)
    lv = levels.double().view(-1, 1, 1)
    est = (c_hat - lv) ** 2 - c_hat * (1 - c_hat) / (m - 1).clamp_min(1)
    return float(est[keep].mean())


def select_num_groups(spec: GroupingSpec, fit: ScoreAccumulator, held_out: ScoreAccumulator,
                      candidates: tuple[int, ...], levels: torch.Tensor, seed: int
                      ) -> tuple[int, dict[int, float]]:
    """The candidate ``k`` with the lowest held-out :func:`coverage_mse`, and every candidate's score."""
    c, (h, w) = fit.num_classes, fit.shape
    stats = pixel_statistics(fit, spec.feature_levels)
    image = fit.pool(torch.zeros(c, h * w, dtype=torch.long), 1)
    held_counts = held_out.pixel_counts()
    scores: dict[int, float] = {}
    for k in candidates:
        group_map, num_groups = normalise_group_map(spec.fn(stats, int(k), seed), c, (h, w))
        thresholds = pixel_thresholds(fit.pool(group_map.view(c, -1), num_groups), image, group_map, levels)
        covered = held_out.count_leq(thresholds.view(len(levels), c, h * w))
        scores[int(k)] = coverage_mse(covered, held_counts, levels)
    best = min(scores, key=lambda k: (scores[k], k))
    return best, scores
