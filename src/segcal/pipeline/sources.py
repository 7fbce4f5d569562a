"""Where predictions come from: a checkpoint run over a data split, or a folder of saved predictions.

Every source follows the :class:`Source` protocol: it yields :class:`~segcal.batch.Batch` es (model
sources fill ``images``, the normalised input) and describes itself, so every pipeline stage works on any.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Subset

from segcal.batch import Batch
from segcal.configio import apply_overrides, from_dict, to_dict
from segcal.data.datamodule import SegDataModule, build_datamodule
from segcal.data.predictions import PredictionFolder
from segcal.data.transforms import denormalize
from segcal.models.lightning import SegModel
from segcal.pipeline.config import ExperimentConfig
from segcal.pipeline.inference import experiment_of, load_model, run_model
from segcal.pipeline.prefetch import prefetched


@runtime_checkable
class Source(Protocol):
    """What every pipeline stage reads: batches of model outputs with labels, and what they are."""

    num_classes: int
    class_names: list[str]
    head: str
    ignore_index: int
    image_size: tuple[int, int]
    class_colors: list | None
    resize: str | None
    batch_size: int
    averaged: list[int]

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def subset(self, n: int) -> Source: ...

    def describe(self) -> dict[str, Any]: ...

    def display_image(self, batch: Batch, i: int) -> torch.Tensor: ...


@dataclass
class ModelSource:
    """``model`` run over ``split`` of ``datamodule`` (optionally only its first ``limit`` images); with
    ``keep_device`` the batches' logits and labels stay on the model's device (device-resident statistics).
    Batches are loaded and run by a background thread up to ``prefetch`` batches ahead of the consumer
    (:mod:`segcal.pipeline.prefetch`; 0: in the consumer's thread)."""

    model: SegModel
    datamodule: SegDataModule
    split: str
    checkpoint: str | None = None
    limit: int | None = None
    keep_device: bool = False
    prefetch: int = 1

    def __post_init__(self) -> None:
        if self.split not in self.datamodule.split_names:
            raise ValueError(f"split must be one of {sorted(self.datamodule.split_names)}, got {self.split!r}")
        available = len(self.datamodule.dataset(self.split))
        if available == 0:
            raise ValueError(f"split {self.split!r} has no images")
        if self.limit is not None and not 1 <= self.limit <= available:
            raise ValueError(f"n_cal/limit={self.limit} but split {self.split!r} has only {available} images")

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def head(self) -> str:
        return self.model.head

    @property
    def class_colors(self) -> list | None:
        """Colours of the classes (from ``classes.json`` at training), ``None`` for the default palette."""
        return self.model.class_colors

    @property
    def resize(self) -> str:
        """How images were fitted to the model's size (``data.resize``)."""
        return self.datamodule.cfg.resize

    @property
    def ignore_index(self) -> int:
        return self.model.ignore_index

    @property
    def averaged(self) -> list[int]:
        """The classes averaged in tables (the model's, from ``data.mean_classes`` at training)."""
        return list(self.model.averaged)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.datamodule.cfg.image_size)

    @property
    def batch_size(self) -> int:
        return self.datamodule.cfg.batch_size

    def __len__(self) -> int:
        return self.limit or len(self.datamodule.dataset(self.split))

    def subset(self, n: int) -> ModelSource:
        return replace(self, limit=n)

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "predictions": None, "split": self.split, "num_images": len(self),
                "classes": self.class_names, "head": self.head}

    def __iter__(self) -> Iterator[Batch]:
        ds = self.datamodule.dataset(self.split)
        if self.limit is not None:
            ds = Subset(ds, range(self.limit))
        cuda = self.keep_device and next(self.model.parameters()).device.type == "cuda"
        loader = DataLoader(ds, batch_size=self.datamodule.cfg.batch_size, shuffle=False,
                            num_workers=self.datamodule.cfg.num_workers, pin_memory=cuda)
        for logits, batch in prefetched(run_model(self.model, loader, keep_device=self.keep_device), self.prefetch):
            yield Batch(logits, batch["mask"].to(logits.device, non_blocking=True), list(batch["name"]),
                        batch["image"],
                        [tuple(s) for s in batch["size"].tolist()] if "size" in batch else None)

    def display_image(self, batch: Batch, i: int) -> torch.Tensor:
        """RGB ``[3, H, W]`` in [0, 1] of image ``i`` of ``batch``."""
        return denormalize(batch.images[i], self.datamodule.cfg)


def datamodule_for(checkpoint: str | Path, model: SegModel, overrides: list[str] | None = None) -> SegDataModule:
    """The data module a checkpoint was trained with (its run's manifests when present)."""
    cfg = experiment_of(model)
    if overrides:
        cfg = from_dict(ExperimentConfig, apply_overrides(to_dict(cfg), overrides)).validate()
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    manifests = Path(checkpoint).resolve().parent.parent / "manifests"
    if manifests.is_dir():
        dm.load_manifests(manifests)
    dm.setup()
    return dm


def model_source(checkpoint: str | Path, split: str, overrides: list[str] | None = None,
                 device: str = "auto", limit: int | None = None) -> ModelSource:
    """Run ``checkpoint`` over ``split`` of its own data config (``overrides`` such as ``data.root=...``)."""
    model = load_model(checkpoint, device)
    return ModelSource(model, datamodule_for(checkpoint, model, overrides), split, str(checkpoint), limit)


def folder_source(predictions: str | Path, masks: str | Path | None = None, **options: Any) -> PredictionFolder:
    """Saved predictions (see :mod:`segcal.data.predictions`)."""
    return PredictionFolder(predictions, masks, **options)


def source_name(source: Source) -> str:
    """How errors name a source: ``split 'cal' of CKPT`` or ``predictions DIR``."""
    d = source.describe()
    if d.get("split"):
        return f"split {d['split']!r}" + (f" of {d['checkpoint']}" if d.get("checkpoint") else "")
    return f"predictions {d.get('predictions')}"


class Stream:
    """``fn(batch)`` for every batch of ``source``; ``len()`` is the number of batches (progress bars)."""

    def __init__(self, source: Source, fn: Callable[[Batch], Any] = lambda batch: batch) -> None:
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.source.batch_size)

    def __iter__(self) -> Iterator[Any]:
        return (self.fn(batch) for batch in self.source)


class CachedSource:
    """A source's batches held in memory (for small splits that several stages read, e.g. the demo)."""

    def __init__(self, source, progress: bool = False, description: str = "predict") -> None:
        from segcal.pipeline.progress import track

        self.inner = source
        self.batches = list(track(Stream(source, lambda b: b), description, enabled=progress))

    def __getattr__(self, name: str) -> Any:  # num_classes, class_names, head, image_size, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def subset(self, n: int) -> CachedSource:
        if not 1 <= n <= len(self):
            raise ValueError(f"n_cal/limit={n} but the source has only {len(self)} images")
        out = object.__new__(CachedSource)
        out.inner, out.batches, left = self.inner.subset(n), [], n
        for batch in self.batches:
            if left <= 0:
                break
            out.batches.append(batch.head(left))
            left -= len(batch)
        return out

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def display_image(self, batch: Batch, i: int) -> torch.Tensor:
        return self.inner.display_image(batch, i)
