"""How much memory a conformal calibration will need, estimated before the pass from its size alone.

While scores are exact (up to ``max_exact_scores`` per part) the peak is
``BASE + FULL_RES·C·H·W + EXACT·C·blocks + PER_BLOCK·blocks + PER_SCORE[g]·scores``: what every method
keeps at full resolution (thresholds, group maps), the grouping's fit structures per (class, block of the
calibration grid) and per block (the local method's integral images of one class), and the exact scores as
they are pooled. When the parts pass their budget they switch to compact histograms and the peak is
``BASE + FULL_RES·C·H·W + BINNED·C·blocks + PER_BLOCK·blocks + HELD·max_exact_scores·parts``
(the histograms of every part, and the exact scores held until they are binned). ``EXACT``, ``BINNED`` and
``PER_BLOCK`` have a part per score bin (:data:`EXACT_PER_BIN`, ...). The coefficients were measured by
``benchmarks/large_predictions.py`` and ``benchmarks/large_synthetic.py`` (19 classes at 128 × 256 to
1024 × 2048, 12 to 500 images; peak resident memory of a fresh process) and rounded up. The estimate is an
upper guide for refusing runs that cannot fit, not a promise.
"""
from __future__ import annotations

from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES
from segcal.conformal.grid import POOLED_MAX_EXACT_SCORES

BASE = 512 * 2**20
"""The Python process with torch and segcal's CLI imported (measured 0.47 GiB)."""

FULL_RES = 48
"""Bytes per (class, pixel) every method keeps at full resolution (measured for imagewise: 27)."""

EXACT = {"image": 0, "pixel": 650, "kmeans": 260, "annuli": 260, "local": 88}
"""Bytes per (class, block) of each grouping's fit structures while scores are exact, beyond
:data:`EXACT_PER_BIN` (measured in all: – / 470–660 / 130–290 / – / 520 at 256 bins)."""
EXACT_PER_BIN = {"local": 2}
"""Bytes per (class, block) and score bin while scores are exact (the local method's uint16 CDFs)."""

BINNED = {"image": 0, "pixel": 64, "kmeans": 128, "annuli": 128, "local": 108}
"""Bytes per (class, block) once the parts hold compact histograms, beyond :data:`BINNED_PER_BIN` (measured in
all: – / 290 / 580 / – / – at 256 bins)."""
BINNED_PER_BIN = {"pixel": 1, "kmeans": 2, "annuli": 2, "local": 7}
"""Bytes per (class, block) and score bin of compact histograms (one byte per part) and the local CDFs."""

PER_BLOCK_PER_BIN = {"local": 26}
"""Bytes per block and score bin whatever the classes (the local method's integral images of one class)."""

PARTS = {"image": 1, "pixel": 1, "kmeans": 2, "annuli": 2, "local": 5}
"""Accumulators a grouping fills (cal, fit; the local method's folds): each holds up to ``max_exact_scores``."""

PER_SCORE = {"image": 24, "pixel": 24, "kmeans": 24, "annuli": 24, "local": 14}
"""Bytes per exact score (per labelled pixel and image) while the scores are pooled and sorted (the local method
reads them one class at a time from one pixel-major copy instead)."""
HELD = 6
"""Bytes per exact score held (float32 score, int16 label)."""


def estimate_peak_bytes(grouping: str, num_classes: int, shape: tuple[int, int], num_images: int, grid: int = 1,
                        max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES, num_bins: int = 256) -> int:
    """Estimated peak resident bytes of calibrating ``grouping`` (``image``, ``pixel``, ``kmeans``, ``annuli``,
    ``local``; others count as ``kmeans``) on ``num_images`` images of ``num_classes`` classes at ``shape`` with
    calibration grid ``grid`` and ``num_bins`` score-histogram bins."""
    pixels = int(shape[0]) * int(shape[1])
    g = grouping if grouping in EXACT else "kmeans"
    if g == "image":
        max_exact_scores = min(max_exact_scores, POOLED_MAX_EXACT_SCORES)
    blocks = -(-int(shape[0]) // grid) * -(-int(shape[1]) // grid)
    base = BASE + FULL_RES * num_classes * pixels + PER_BLOCK_PER_BIN.get(g, 0) * num_bins * blocks
    if num_images * pixels <= max_exact_scores * PARTS[g]:  # the parts stay exact
        per = EXACT[g] + EXACT_PER_BIN.get(g, 0) * num_bins
        return base + per * num_classes * blocks + PER_SCORE[g] * num_images * pixels
    per = BINNED[g] + BINNED_PER_BIN.get(g, 0) * num_bins
    return base + per * num_classes * blocks + HELD * max_exact_scores * PARTS[g]
