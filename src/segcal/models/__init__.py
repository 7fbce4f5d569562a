"""MONAI networks, training losses and the Lightning module."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.models.config": "LossConfig LossTerm ModelConfig OptimConfig",
            "segcal.models.lightning": "SegModel", "segcal.models.losses": "SegmentationLoss Target",
            "segcal.models.networks": "build_network"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
