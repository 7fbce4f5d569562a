"""Calibration (ECE family, spatial views) and segmentation-quality metrics on tensors."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "boundary_mask": "segcal.metrics.boundary",
    "CalibrationMetrics": "segcal.metrics.calibration",
    "CalibrationResults": "segcal.metrics.calibration_results",
    "Reliability": "segcal.metrics.calibration_results",
    "SegmentationMetrics": "segcal.metrics.segmentation",
    "quality_from_confusion": "segcal.metrics.segmentation",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
