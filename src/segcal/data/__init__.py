"""Datasets (folder, COCO, synthetic), splits, transforms and the Lightning data module."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "CocoDataset": "segcal.data.coco",
    "AugmentConfig": "segcal.data.config",
    "DataConfig": "segcal.data.config",
    "SyntheticConfig": "segcal.data.config",
    "SegDataModule": "segcal.data.datamodule",
    "build_datamodule": "segcal.data.datamodule",
    "build_dataset": "segcal.data.datamodule",
    "FolderDataset": "segcal.data.folder",
    "write_folder_dataset": "segcal.data.folder",
    "mixup_batch": "segcal.data.mixup",
    "make_splits": "segcal.data.splits",
    "read_manifests": "segcal.data.splits",
    "write_manifests": "segcal.data.splits",
    "SyntheticDataset": "segcal.data.synthetic",
    "difficulty_map": "segcal.data.synthetic",
    "SegTransform": "segcal.data.transforms",
    "denormalize": "segcal.data.transforms",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
