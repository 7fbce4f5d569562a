"""Calibration streams: validated ``(logits, labels[, images])`` batches and their class counts.

A calibration stream is any iterable whose items are :class:`segcal.batch.Batch` es or
``(logits [N, C, H, W], labels [N, H, W][, images [N, K, H, W]])`` tuples or mappings with those keys
(see :func:`segcal.batch.unpack_item`); images are used by local temperature scaling with
``use_image=True`` and ignored by the other methods.

The stream is consumed once; calibrators keep a bounded, seeded sample of what they need
(see :mod:`segcal.calibrators.sampling`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

from segcal.batch import unpack_item
from segcal.errors import no_labels
from segcal.outputs import Head, check_batch, num_output_classes

Progress = Callable[[Iterable, str], Iterable]
"""``progress(iterable, description) -> iterable``, e.g. a rich progress-bar wrapper."""


@dataclass(frozen=True)
class CalibrationBatch:
    """One validated batch: ``logits [N, C, H, W]`` float32, ``labels [N, H, W]`` int64,
    ``images [N, K, H, W]`` float32 or ``None``."""

    logits: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor | None = None


class CalibrationStream:
    """Iterate a calibration stream as :class:`CalibrationBatch` es, validating every batch.

    Every batch is checked with :func:`segcal.outputs.check_batch` (shapes, finite
    logits, labels in ``[0, C)`` or ``ignore_index``) and against the channel count of the
    first batch. While iterating, the number of batches, images and valid pixels per class
    are counted; :meth:`check_usable` then rejects streams that cannot be calibrated on.
    Batches are moved to ``device`` (default: where each batch already is).
    """

    def __init__(
        self,
        stream: Iterable,
        head: Head = "softmax",
        ignore_index: int = 255,
        device: torch.device | str | None = None,
        progress: Progress | None = None,
        description: str = "calibration batches",
    ) -> None:
        if isinstance(stream, (torch.Tensor, Mapping)) or not isinstance(stream, Iterable):
            raise ValueError(
                "stream must be an iterable of (logits, labels[, images]) batches,"
                f" got {type(stream).__name__}"
            )
        self.stream = stream
        self.head = head
        self.ignore_index = ignore_index
        self.device = torch.device(device) if device is not None else None
        self.progress = progress
        self.description = description
        self.num_channels: int | None = None
        self.num_batches = 0
        self.num_images = 0
        self.class_counts: torch.Tensor | None = None

    @property
    def num_classes(self) -> int | None:
        """Classes ``C'`` represented by the logits (2 for a one-channel sigmoid head)."""
        return None if self.num_channels is None else num_output_classes(self.num_channels, self.head)

    def __iter__(self) -> Iterator[CalibrationBatch]:
        items = self.progress(self.stream, self.description) if self.progress is not None else self.stream
        for item in items:
            yield self._validate(*unpack_item(item))

    def _validate(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor | None) -> CalibrationBatch:
        if logits.ndim == 4 and self.num_channels is not None and logits.shape[1] != self.num_channels:
            raise ValueError(
                f"logits has {logits.shape[1]} channels but earlier batches had {self.num_channels}"
            )
        check_batch(logits, labels, ignore_index=self.ignore_index, kind="logits", head=self.head, name="logits")
        if images is not None:
            n, _, h, w = logits.shape
            if images.ndim != 4 or (images.shape[0], images.shape[2], images.shape[3]) != (n, h, w):
                raise ValueError(f"images must have shape [{n}, K, {h}, {w}], got {tuple(images.shape)}")
            if not torch.isfinite(images).all():
                raise ValueError("images contains NaN or inf values")
        if self.num_channels is None:
            self.num_channels = logits.shape[1]
            self.class_counts = torch.zeros(self.num_classes, dtype=torch.long)
        valid = labels[labels != self.ignore_index]
        self.class_counts += torch.bincount(valid.flatten().long().cpu(), minlength=self.num_classes)
        self.num_batches += 1
        self.num_images += logits.shape[0]
        device = self.device or logits.device
        return CalibrationBatch(
            logits.to(device, torch.float32),
            labels.to(device, torch.long),
            None if images is None else images.to(device, torch.float32),
        )

    def all_reduce(self) -> None:
        """Sum the batch, image and class counts over ``torch.distributed`` ranks."""
        import torch.distributed as dist

        assert self.class_counts is not None
        totals = torch.cat([torch.tensor([self.num_batches, self.num_images]), self.class_counts])
        dist.all_reduce(totals)
        self.num_batches, self.num_images = int(totals[0]), int(totals[1])
        self.class_counts = totals[2:]

    def check_usable(self) -> None:
        """``ValueError`` if the stream was empty, had no valid pixel, or only one class."""
        if self.num_batches == 0:
            raise ValueError("stream yielded no batches: cannot fit a calibrator on an empty calibration set")
        assert self.class_counts is not None
        if int(self.class_counts.sum()) == 0:
            raise no_labels(self.ignore_index, "the calibration stream")
        present = (self.class_counts > 0).nonzero().flatten().tolist()
        if len(present) < 2:
            raise ValueError(
                f"labels contain a single class ({present[0]}): calibration needs at least two classes"
                " present, otherwise the likelihood is optimised by a degenerate temperature (0 or ∞)"
            )
