"""Datasets (folder, COCO, synthetic), splits, transforms and the Lightning data module."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.data.coco": "CocoDataset", "segcal.data.config": "AugmentConfig DataConfig SyntheticConfig",
            "segcal.data.datamodule": "SegDataModule build_datamodule build_dataset",
            "segcal.data.folder": "FolderDataset write_folder_dataset", "segcal.data.mixup": "mixup_batch",
            "segcal.data.splits": "make_splits read_manifests write_manifests",
            "segcal.data.synthetic": "SyntheticDataset difficulty_map",
            "segcal.data.transforms": "SegTransform denormalize"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
