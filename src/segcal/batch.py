"""The one batch type that travels from the data sources to the calibrators.

Sources (a model over a split, a folder of saved predictions) yield :class:`Batch` es; every
calibrator's ``fit`` and every evaluation accept them, and also plain ``(logits, labels)`` /
``(logits, labels, images)`` tuples or mappings with the same field names, for users of other
frameworks (:func:`unpack_item`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from segcal.outputs import as_tensor, check_batch, num_output_classes


@dataclass(frozen=True)
class Batch:
    """``logits [N, C, H, W]`` float32, ``labels [N, H, W]`` int64 (``ignore_index`` kept), image ``names [N]``,
    ``images [N, K, H, W]`` (the model's normalised input) or ``None`` for saved predictions, and ``sizes``:
    each image's original ``(H, W)`` before it was fitted to the model's size, or ``None`` when unknown."""

    logits: Any
    labels: Any
    names: list[str] = field(default_factory=list)
    images: Any = None
    sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def with_logits(self, logits: Any) -> Batch:
        """The same batch with other logits (e.g. recalibrated ones)."""
        return replace(self, logits=logits)

    def head(self, n: int) -> Batch:
        """The first ``n`` images of the batch."""
        return Batch(self.logits[:n], self.labels[:n], list(self.names[:n]),
                     None if self.images is None else self.images[:n],
                     None if self.sizes is None else list(self.sizes[:n]))


FIELDS = ("logits", "labels", "images")


def unpack_item(item: object) -> tuple[Any, Any, Any]:
    """``(logits, labels, images or None)`` as tensors from a :class:`Batch`, a 2- or 3-tuple, or a mapping
    with keys ``"logits"``, ``"labels"`` (and ``"images"``); NumPy arrays are accepted. ``ValueError`` otherwise."""
    if isinstance(item, Batch):
        parts = (item.logits, item.labels, item.images)
    elif isinstance(item, Mapping):
        if "logits" not in item or "labels" not in item:
            raise ValueError(f"stream item mappings need keys 'logits' and 'labels', got {sorted(item)}")
        parts = (item["logits"], item["labels"], item.get("images"))
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        parts = (item[0], item[1], item[2] if len(item) == 3 else None)
    else:
        raise ValueError("stream items must be a Batch, (logits, labels), (logits, labels, images) or a mapping "
                         f"with keys 'logits', 'labels'[, 'images']; got {type(item).__name__}")
    return tuple(None if value is None else as_tensor(value, f"stream item {name}")  # type: ignore[return-value]
                 for name, value in zip(FIELDS, parts))


def calibration_batches(stream: Iterable, n_cal: int | None, num_classes: int | None, ignore_index: int,
                        kind: str, head: str) -> Iterator[tuple[Any, Any, int]]:
    """Checked ``(preds [N, C, H, W], labels [N, H, W], num_classes)`` of the first ``n_cal`` images of ``stream``
    (all of them for ``None``), without pulling a batch past them; ``ValueError`` once the stream is spent if it
    held fewer than ``n_cal`` images or none."""
    if n_cal is not None and n_cal < 1:
        raise ValueError(f"n_cal must be a positive int, got {n_cal!r}")
    seen = 0
    for batch in stream:
        preds, labels, _ = unpack_item(batch)
        if n_cal is not None:
            preds, labels = preds[: n_cal - seen], labels[: n_cal - seen]
        if preds.shape[0] == 0:
            break
        check_batch(preds, labels, num_classes, ignore_index, kind, head)
        num_classes = num_output_classes(preds.shape[1], head)
        yield preds, labels, num_classes
        seen += preds.shape[0]
        if n_cal is not None and seen >= n_cal:
            break  # do not pull (run the model on) another batch
    if n_cal is not None and seen < n_cal:
        raise ValueError(f"n_cal={n_cal} is larger than the {seen} calibration images available")
    if seen == 0:
        raise ValueError("the calibration stream is empty")
