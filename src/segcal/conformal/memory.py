"""How much memory a conformal calibration will need, estimated before the pass from its size alone.

The peak is modelled as ``BASE + per_class_pixel · C·H·W + per_pixel_image · N·H·W`` with coefficients measured
by ``benchmarks/large_predictions.py`` (19 classes at 128 × 256 and 512 × 1024, 12 images; peak resident memory
of a fresh ``segcal calibrate`` process) and rounded up: the per-pixel methods keep statistics and curves for
every (class, pixel), the local method per-pixel score CDFs of every fold, imagewise only one image's scores at
a time. Exact scores add about 24 bytes per labelled pixel and image while they are pooled. The estimate is an
upper guide for refusing runs that cannot fit, not a promise.
"""
from __future__ import annotations

BASE = 512 * 2**20
"""The Python process with torch and segcal's CLI imported (measured 0.47 GiB)."""

PER_CLASS_PIXEL = {"image": 48, "pixel": 700, "kmeans": 300, "annuli": 300, "local": 6144}
"""Bytes per (class, pixel) at the peak, by grouping (measured: 27 / 490–660 / 190–290 / – / 5,800)."""

PER_PIXEL_IMAGE = 24
"""Bytes per pixel and calibration image (exact scores and labels while they are pooled and sorted)."""


def estimate_peak_bytes(grouping: str, num_classes: int, shape: tuple[int, int], num_images: int) -> int:
    """Estimated peak resident bytes of calibrating ``grouping`` (``image``, ``pixel``, ``kmeans``, ``annuli``,
    ``local``; others count as ``kmeans``) on ``num_images`` images of ``num_classes`` classes at ``shape``."""
    pixels = int(shape[0]) * int(shape[1])
    per = PER_CLASS_PIXEL.get(grouping, PER_CLASS_PIXEL["kmeans"])
    return BASE + per * num_classes * pixels + PER_PIXEL_IMAGE * num_images * pixels
