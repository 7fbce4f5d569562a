"""Calibration (ECE family, spatial views) and segmentation-quality metrics on tensors."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.metrics.boundary": "boundary_mask", "segcal.metrics.calibration": "CalibrationMetrics",
            "segcal.metrics.calibration_results": "CalibrationResults Reliability",
            "segcal.metrics.segmentation": "SegmentationMetrics quality_from_confusion"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
