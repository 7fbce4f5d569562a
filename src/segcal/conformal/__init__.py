"""Per-pixel conformal prediction for segmentation: pixelwise, imagewise, Kandinsky and local calibration."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.conformal.accumulate": "ScoreAccumulator ScoreBank",
            "segcal.conformal.calibrator": "ConformalCalibrator ImagewiseCalibrator KandinskyCalibrator "
                                           "PixelwiseCalibrator",
            "segcal.conformal.evaluation": "CoverageAccumulator CoverageResult evaluate_coverage",
            "segcal.conformal.local_calibrator": "LocalCalibrator",
            "segcal.conformal.parts": "assign_parts fold_parts",
            "segcal.conformal.grouping": "PixelStatistics get_grouping register_grouping",
            "segcal.conformal.quantile": "COVERAGE_LEVELS", "segcal.conformal.scores": "class_scores label_scores",
            "segcal.conformal.sets": "ambiguous prediction_sets set_size",
            "segcal.conformal.sweep": "cache_test_scores calibration_sweep summarise_sweep"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
