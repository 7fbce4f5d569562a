"""Probability recalibration: temperature, vector, matrix, selective and local temperature scaling, Dirichlet
calibration, histogram binning and isotonic regression."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.calibrators.base": "Calibrator", "segcal.calibrators.lts": "LocalTemperatureScaling",
            "segcal.calibrators.binning": "HistogramBinning IsotonicCalibration",
            "segcal.calibrators.matrix": "MatrixScaling DirichletCalibration",
            "segcal.calibrators.registry": "CALIBRATORS load_calibrator make_calibrator",
            "segcal.calibrators.selective": "SelectiveScaling",
            "segcal.calibrators.temperature": "TemperatureScaling VectorScaling"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
