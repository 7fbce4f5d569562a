"""segcal: how far to trust every pixel of a segmentation model, and how to fix it.

The short path for users with their own model (any framework): feed ``(logits, labels)``
batches ``[N, C, H, W]`` / ``[N, H, W]``::

    from segcal import CalibrationMetrics, TemperatureScaling, KandinskyCalibrator
    m = CalibrationMetrics(num_classes=2, kind="logits"); m.update(logits, labels); m.compute()

The names below are imported on first use, so ``import segcal`` (and the ``segcal`` command's
``--help``) stays fast.
"""
from __future__ import annotations

from segcal._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "CalibrationMetrics": "segcal.metrics", "SegmentationMetrics": "segcal.metrics",
    "TemperatureScaling": "segcal.calibrators", "VectorScaling": "segcal.calibrators",
    "SelectiveScaling": "segcal.calibrators", "LocalTemperatureScaling": "segcal.calibrators",
    "PixelwiseCalibrator": "segcal.conformal", "ImagewiseCalibrator": "segcal.conformal",
    "KandinskyCalibrator": "segcal.conformal", "evaluate_coverage": "segcal.conformal",
    "CalibrationBundle": "segcal.calibrated", "load_bundle": "segcal.calibrated", "save_bundle": "segcal.calibrated",
    "NotFittedError": "segcal.estimator",
}

__all__ = [*_EXPORTS, "__version__"]
__getattr__, _dir = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
