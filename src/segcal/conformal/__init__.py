"""Per-pixel conformal prediction for segmentation: pixelwise, imagewise and Kandinsky calibration."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "ScoreAccumulator": "segcal.conformal.accumulate",
    "ScoreBank": "segcal.conformal.accumulate",
    "ConformalCalibrator": "segcal.conformal.calibrator",
    "ImagewiseCalibrator": "segcal.conformal.calibrator",
    "KandinskyCalibrator": "segcal.conformal.calibrator",
    "PixelwiseCalibrator": "segcal.conformal.calibrator",
    "assign_parts": "segcal.conformal.calibrator",
    "CoverageAccumulator": "segcal.conformal.evaluation",
    "CoverageResult": "segcal.conformal.evaluation",
    "evaluate_coverage": "segcal.conformal.evaluation",
    "PixelStatistics": "segcal.conformal.grouping",
    "get_grouping": "segcal.conformal.grouping",
    "register_grouping": "segcal.conformal.grouping",
    "COVERAGE_LEVELS": "segcal.conformal.quantile",
    "class_scores": "segcal.conformal.scores",
    "label_scores": "segcal.conformal.scores",
    "ambiguous": "segcal.conformal.sets",
    "prediction_sets": "segcal.conformal.sets",
    "set_size": "segcal.conformal.sets",
    "cache_test_scores": "segcal.conformal.sweep",
    "calibration_sweep": "segcal.conformal.sweep",
    "summarise_sweep": "segcal.conformal.sweep",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
