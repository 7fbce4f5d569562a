"""Warnings about calibrations too small for the requested level.

With ``n`` scores in a group the conformal quantile at level ``1 − α`` is the ``⌈(n + 1)(1 − α)⌉``-th
smallest, which does not exist when that rank exceeds ``n``: the threshold is then ``q̂ = 1`` and the
class is in every set (a trivial, uninformative threshold). The smallest ``n`` that avoids it is
:func:`min_scores`; e.g. 9 scores at α = 0.1, 19 at α = 0.05, 99 at α = 0.01.
"""
from __future__ import annotations

import torch

from segcal.conformal.quantile import conformal_rank, levels_from_alpha

WARN_TRIVIAL_SHARE = 0.01
"""Warn when more than this share of the (class, pixel) thresholds is trivial."""


class TrivialThresholdWarning(UserWarning):
    """Many thresholds are trivial (``q̂ = 1``) because their groups hold too few calibration scores."""


def min_scores(alpha: float) -> int:
    """The smallest number of scores ``n`` with ``⌈(n + 1)(1 − α)⌉ ≤ n`` (a non-trivial threshold at α)."""
    level = levels_from_alpha(alpha)
    n = torch.arange(1, 10 * int(1 / float(alpha)) + 10)
    ok = conformal_rank(n, level)[0] <= n
    return int(n[ok][0])


def trivial_share(thresholds: torch.Tensor) -> float:
    """Share of thresholds ``[C, H, W]`` that are trivial (``q̂ ≥ 1``)."""
    return float((thresholds >= 1).double().mean())


def trivial_message(thresholds: torch.Tensor, alpha: float, pixelwise: bool, n_cal: int) -> str | None:
    """A warning text when more than :data:`WARN_TRIVIAL_SHARE` of ``thresholds [C, H, W]`` at ``alpha`` are
    trivial, naming the number of scores (and, for pixelwise calibration, of images) that would avoid it."""
    share = trivial_share(thresholds)
    if share <= WARN_TRIVIAL_SHARE:
        return None
    need = min_scores(alpha)
    unit = (f"a pixel needs at least {need} calibration images labelled with the class there"
            if pixelwise else f"a group needs at least {need} calibration scores of the class")
    return (f"{share:.0%} of the per-pixel thresholds at alpha={alpha:g} are trivial (q̂ = 1: the class is in "
            f"every set) with n_cal={n_cal}: {unit} (or the class never appears in the calibration labels); use "
            "more calibration images, a larger alpha, or a pooled method (image, kandinsky-*)")
