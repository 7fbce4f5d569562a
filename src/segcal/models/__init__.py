"""MONAI networks, training losses and the Lightning module."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "LossConfig": "segcal.models.config",
    "LossTerm": "segcal.models.config",
    "ModelConfig": "segcal.models.config",
    "OptimConfig": "segcal.models.config",
    "SegModel": "segcal.models.lightning",
    "SegmentationLoss": "segcal.models.losses",
    "Target": "segcal.models.losses",
    "build_network": "segcal.models.networks",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
