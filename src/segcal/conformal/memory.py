"""How much memory a conformal calibration will need, estimated before the pass from its size alone.

The peak is modelled as ``BASE + C·H·W·(FULL_RES + per_class_block / grid²) + PER_SCORE · exact scores``:
``FULL_RES`` bytes per (class, pixel) for what every method keeps at full resolution (thresholds, group maps),
the grouping's statistics per (class, block of the calibration grid), and the exact scores held while they
are pooled (at most ``max_exact_scores`` per part before the accumulators switch to compact histograms). The
coefficients were measured by ``benchmarks/large_predictions.py`` and ``benchmarks/large_synthetic.py`` (19
classes at 128 × 256 to 1024 × 2048, 12 to 500 images; peak resident memory of a fresh process) and rounded
up. The estimate is an upper guide for refusing runs that cannot fit, not a promise.
"""
from __future__ import annotations

from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES

BASE = 512 * 2**20
"""The Python process with torch and segcal's CLI imported (measured 0.47 GiB)."""

FULL_RES = 48
"""Bytes per (class, pixel) every method keeps at full resolution (measured for imagewise: 27)."""

PER_CLASS_BLOCK = {"image": 0, "pixel": 650, "kmeans": 260, "annuli": 260, "local": 6100}
"""Bytes per (class, block of the calibration grid) of each grouping's statistics, beyond :data:`FULL_RES`."""

PARTS = {"image": 1, "pixel": 1, "kmeans": 2, "annuli": 2, "local": 5}
"""Accumulators a grouping fills (cal, fit; the local method's folds): each holds up to ``max_exact_scores``."""

PER_SCORE = 24
"""Bytes per exact score (per labelled pixel and image) while the scores are pooled and sorted."""


def estimate_peak_bytes(grouping: str, num_classes: int, shape: tuple[int, int], num_images: int, grid: int = 1,
                        max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES) -> int:
    """Estimated peak resident bytes of calibrating ``grouping`` (``image``, ``pixel``, ``kmeans``, ``annuli``,
    ``local``; others count as ``kmeans``) on ``num_images`` images of ``num_classes`` classes at ``shape`` with
    calibration grid ``grid``."""
    pixels = int(shape[0]) * int(shape[1])
    known = grouping if grouping in PER_CLASS_BLOCK else "kmeans"
    blocks = -(-int(shape[0]) // grid) * -(-int(shape[1]) // grid)
    statistics = num_classes * (FULL_RES * pixels + PER_CLASS_BLOCK[known] * blocks)
    exact = min(num_images * pixels, PARTS[known] * max_exact_scores)
    return BASE + statistics + PER_SCORE * exact
