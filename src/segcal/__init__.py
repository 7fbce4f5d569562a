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

_EXPORTS = {"segcal.metrics": "CalibrationMetrics SegmentationMetrics",
            "segcal.calibrators": "TemperatureScaling VectorScaling SelectiveScaling LocalTemperatureScaling",
            "segcal.conformal": "PixelwiseCalibrator ImagewiseCalibrator KandinskyCalibrator LocalCalibrator "
                                "evaluate_coverage",
            "segcal.risk": "RiskController MarginController",
            "segcal.calibrated": "CalibrationBundle load_bundle save_bundle", "segcal.estimator": "NotFittedError"}
__getattr__, _dir, _names = lazy_exports(__name__, _EXPORTS)
__all__ = [*_names, "__version__"]


def __dir__() -> list[str]:
    return sorted(__all__)
