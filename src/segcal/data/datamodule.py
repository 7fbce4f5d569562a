"""Dataset construction from a :class:`DataConfig` and the Lightning data module.

``build_datamodule(cfg, seed)`` → ``dm.setup()`` indexes the dataset and splits it
(or reuses manifests given to ``dm.load_manifests(dir)``, which then win over ``cfg.splits``).
``dm.split_names`` has ``cfg.n_cal`` applied to ``"cal"``; manifests always hold full splits.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from segcal.data.base import SeededSampler, SegSource, SplitDataset
from segcal.data.config import KINDS, DataConfig
from segcal.data.labels import target_class_names
from segcal.data.splits import SPLITS, make_splits, read_manifests, write_manifests
from segcal.data.transforms import SegTransform


def build_dataset(cfg: DataConfig) -> SegSource:
    """The whole dataset described by ``cfg`` (no resizing: items at native size)."""
    if cfg.kind not in KINDS:
        raise ValueError(f"data.kind must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.kind == "synthetic":
        from segcal.data.synthetic import SyntheticDataset

        return SyntheticDataset(cfg.synthetic, target_class_names(cfg), cfg.ignore_index, cfg.remap)
    if cfg.root is None:
        what = "a folder with images/ and masks/" if cfg.kind == "folder" else "the COCO images folder"
        raise ValueError(f"data.root is required for kind {cfg.kind!r} ({what})")
    if not Path(cfg.root).is_dir():
        raise FileNotFoundError(f"data.root: folder not found: {cfg.root}")
    names = target_class_names(cfg)
    if cfg.kind == "folder":
        from segcal.data.folder import FolderDataset

        return FolderDataset(cfg.root, names, cfg.ignore_index, cfg.remap)
    if cfg.annotations is None:
        raise ValueError("data.annotations is required for kind 'coco' (the instances json)")
    from segcal.data.coco import CocoDataset

    return CocoDataset(cfg.root, cfg.annotations, cfg.categories, names, cfg.ignore_index, cfg.remap)


class SegDataModule(L.LightningDataModule):
    """Splits, datasets and loaders for one :class:`DataConfig`.

    Items are ``{"image": float32 [3, H, W], "mask": int64 [H, W], "name": str}``; batches stack
    them (``name`` becomes a list). Training batches are shuffled and augmented from ``seed``.
    """

    def __init__(self, cfg: DataConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg.validate()
        self.seed = seed
        self.source: SegSource | None = None
        self.splits: dict[str, list[str]] | None = None
        self._manifests: tuple[Path, dict[str, list[str]]] | None = None

    def load_manifests(self, directory: str | Path) -> None:
        """Use the splits in ``directory/<split>.txt`` instead of making new ones."""
        self._manifests = (Path(directory), read_manifests(directory))
        if self.source is not None:
            self.splits = self._checked_manifests()

    def setup(self, stage: str | None = None) -> None:
        """Index the dataset and make (or load) the splits; later calls do nothing."""
        if self.source is None:
            self.source = build_dataset(self.cfg)
        if self.splits is None:
            self.splits = self._checked_manifests() if self._manifests else make_splits(
                self.source.names, self.cfg.splits, self.cfg.split_seed)

    def _checked_manifests(self) -> dict[str, list[str]]:
        directory, splits = self._manifests
        known = set(self.source.names)
        for k, names in splits.items():
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{directory / (k + '.txt')} lists {len(unknown)} image(s) not in the dataset: "
                                 f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        return splits

    def _require_setup(self) -> None:
        if self.source is None or self.splits is None:
            raise RuntimeError("call setup() first")

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names if self.source is not None else target_class_names(self.cfg)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_names(self) -> dict[str, list[str]]:
        """Names per split, ``"cal"`` truncated to its first ``cfg.n_cal``."""
        self._require_setup()
        out = {k: list(v) for k, v in self.splits.items()}
        n_cal = self.cfg.n_cal
        if n_cal is not None and "cal" in out:
            if n_cal > len(out["cal"]):
                raise ValueError(f"data.n_cal={n_cal} exceeds the {len(out['cal'])} calibration images")
            out["cal"] = out["cal"][:n_cal]
        return out

    def write_manifests(self, directory: str | Path) -> Path:
        """Write the full splits (before ``n_cal``) as ``directory/<split>.txt``."""
        self._require_setup()
        return write_manifests(self.splits, directory)

    def dataset(self, split: str, augment: bool = False) -> SplitDataset:
        """The images of ``split`` resized/normalised to the model input (augmented if asked)."""
        self._require_setup()
        names = self.split_names
        if split not in names:
            raise ValueError(f"split {split!r} not available; this data module has {list(names)} "
                             f"(expected one of {list(SPLITS)})")
        index = {n: i for i, n in enumerate(self.source.names)}
        transform = SegTransform.from_config(self.cfg, augment=augment)
        return SplitDataset(self.source, [index[n] for n in names[split]], transform, augment, self.seed)

    def dataloader(self, split: str, augment: bool = False, shuffle: bool = False) -> DataLoader:
        """Batches of ``split``; shuffling and augmentation are reproducible from ``seed``."""
        ds = self.dataset(split, augment)
        if len(ds) == 0:
            raise ValueError(f"split {split!r} has no images")
        sampler = None
        if augment or shuffle:
            sub_seed = int(np.random.SeedSequence([self.seed, SPLITS.index(split)]).generate_state(1)[0])
            sampler = SeededSampler(len(ds), sub_seed, shuffle)
        workers = self.cfg.num_workers
        return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", augment=self.cfg.augment.enabled, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self.dataloader("val") if "val" in self.split_names else []

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")


def build_datamodule(cfg: DataConfig, seed: int = 0) -> SegDataModule:
    """A :class:`SegDataModule` for ``cfg`` (validated); call ``setup()`` before using it."""
    return SegDataModule(cfg, seed)
