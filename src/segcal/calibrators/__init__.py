"""Probability recalibration: temperature, vector, selective and local temperature scaling."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "Calibrator": "segcal.calibrators.base",
    "LocalTemperatureScaling": "segcal.calibrators.lts",
    "CALIBRATORS": "segcal.calibrators.registry",
    "load_calibrator": "segcal.calibrators.registry",
    "make_calibrator": "segcal.calibrators.registry",
    "SelectiveScaling": "segcal.calibrators.selective",
    "TemperatureScaling": "segcal.calibrators.temperature",
    "VectorScaling": "segcal.calibrators.temperature",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
