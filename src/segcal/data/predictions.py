"""Saved predictions on disk: one file per image plus a ``masks/`` folder, for models of any framework.

A prediction folder holds, matched by file stem::

    DIR/<name>.npy|.npz|.pt     per-image array [C, H, W] of logits or probabilities
    DIR/masks/<name>.png|.npy   label map [H, W] (class indices, ``ignore_index`` excluded)
    DIR/meta.json               optional: kind, head, classes, ignore_index, image_size, source,
                                colors (per class [r, g, b] in [0, 1] or null), geometry
                                ({"resize": "pad", "original_sizes": {name: [H, W]}})

:class:`PredictionWriter` writes such folders (``segcal predict``); :class:`PredictionFolder`
streams them back as :class:`~segcal.batch.Batch` es (``logits [N, C, H, W]``, ``labels [N, H, W]``, ``names``).
Every file is written atomically (temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcal.batch import Batch
from segcal.classes import averaged_classes
from segcal.data.files import find_images, read_mask
from segcal.io.atomic import atomic_write
from segcal.io.jsonio import read_json, write_json
from segcal.outputs import PROB_SUM_TOL, check_batch, num_output_classes, probs_to_logits

PREDICTION_EXTS = (".npy", ".npz", ".pt")
MASK_EXTS = (".png", ".npy")
META_FILE = "meta.json"
KEYS = ("logits", "probs")
HEADS = ("softmax", "sigmoid")


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _select(path: Path, obj: Any) -> tuple[Any, str | None]:
    """The array in ``obj`` (an array, or a mapping with "logits"/"probs" or one entry) and its key hint."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj, None
    if not hasattr(obj, "keys"):
        raise ValueError(f"{path}: expected an array or a mapping with 'logits'/'probs', got {type(obj).__name__}")
    keys = [str(k) for k in obj.keys()]
    key = next((k for k in KEYS if k in keys), None)
    if key is None and len(keys) != 1:
        raise ValueError(f"{path}: holds {keys}; expected a 'logits' or 'probs' key or a single array")
    return obj[key or keys[0]], key


def _load_array(path: Path) -> tuple[Any, str | None]:
    """The raw array stored in ``path`` and its key hint ("logits"/"probs"/None)."""
    ext = path.suffix.lower()
    if ext == ".pt":
        return _select(path, torch.load(path, map_location="cpu", weights_only=True))
    if ext not in PREDICTION_EXTS:
        raise ValueError(f"{path}: unsupported prediction file type; expected one of {PREDICTION_EXTS}")
    obj = np.load(path, allow_pickle=False)
    if isinstance(obj, np.ndarray):
        return obj, None
    with obj:  # NpzFile: read only the selected array
        return _select(path, obj)


def read_prediction(path: str | Path) -> tuple[np.ndarray, str | None]:
    """Prediction ``float32 [C, H, W]`` stored in ``path`` and its kind hint ("logits", "probs" or None).

    ``.npy``: the array; ``.npz``: key "logits" or "probs" (the hint), else its single array;
    ``.pt``: a tensor, or a dict with "logits"/"probs". Bad files raise ``ValueError`` naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    try:
        raw, hint = _load_array(path)
        arr = as_numpy(raw).astype(np.float32, copy=False)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: unreadable prediction file ({exc})") from exc
    except Exception as exc:  # corrupt zip/pickle/header: numpy and torch raise many types
        raise ValueError(f"{path}: unreadable prediction file ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 3:
        raise ValueError(f"{path}: prediction must have shape [C, H, W], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: prediction contains NaN or inf values")
    return arr, hint


def write_prediction(path: str | Path, logits: Any, **extra: Any) -> None:
    """Atomically save ``logits`` (float32 ``[C, H, W]``) under key "logits" plus ``extra`` arrays
    (e.g. ``sets`` bool ``[C, H, W]``, ``set_size`` uint8 ``[H, W]``) as an uncompressed ``.npz``."""
    path = Path(path)
    arr = as_numpy(logits).astype(np.float32)
    if arr.ndim != 3:
        raise ValueError(f"{path}: logits must have shape [C, H, W], got {arr.shape}")
    arrays = {"logits": arr, **{k: as_numpy(v) for k, v in extra.items()}}
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def write_meta(folder: str | Path, meta: dict) -> None:
    """Atomically write ``meta`` as ``<folder>/meta.json``."""
    write_json(Path(folder) / META_FILE, meta)


def read_meta(folder: str | Path) -> dict:
    """``<folder>/meta.json`` as a dict (``{}`` when absent); invalid JSON raises ``ValueError`` naming it."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _read_label_map(path: Path) -> np.ndarray:
    """Mask ``int64 [H, W]`` from a PNG (via ``read_mask``) or an integer ``.npy``."""
    if path.suffix.lower() != ".npy":
        return read_mask(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable mask file ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: mask must be an integer array [H, W], got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def detect_kind(arr: np.ndarray, head: str, path: Path) -> tuple[str, str]:
    """``(kind, reason)`` for prediction ``arr [C, H, W]`` of a ``head`` model read from ``path``.

    Values outside [0, 1] are logits; values in [0, 1] are probabilities when the head is sigmoid or the
    channels sum to 1. Values in [0, 1] that do not sum to 1 under a softmax head are ambiguous: ``ValueError``.
    """
    if arr.min() < 0 or arr.max() > 1:
        return "logits", "detected: values outside [0, 1]"
    if head == "sigmoid":
        return "probs", "detected: values in [0, 1] under a sigmoid head"
    deviation = float(np.abs(arr.sum(axis=0) - 1).max())
    if deviation <= PROB_SUM_TOL:
        return "probs", "detected: values in [0, 1] summing to 1 over the classes"
    raise ValueError(f"{path}: cannot tell logits from probabilities: every value lies in [0, 1] but the "
                     f"{arr.shape[0]} class values do not sum to 1 (off by up to {deviation:.3g}); pass --kind "
                     "logits or --kind probs (kind=...), or --head sigmoid for independent per-class probabilities")


BATCH_BYTES = 64 * 2**20
"""Most bytes of float32 logits in one batch from a predictions folder (19 classes at 512 × 1024: 1 image)."""


class PredictionFolder:
    """Saved per-image predictions in ``predictions`` paired by stem with label maps in ``masks``.

    ``masks`` defaults to ``<predictions>/masks``. Explicit ``kind``/``head``/``classes``/``ignore_index``
    override ``meta.json``; ``kind="auto"`` uses meta.json, else the file's key, else inspects the first
    file. Iterating yields
    :class:`~segcal.batch.Batch` es of ``batch_size`` (fewer when ``batch_size`` images would exceed
    :data:`BATCH_BYTES` of logits: large images come one or two at a time), loading files lazily; probabilities
    are converted with :func:`~segcal.outputs.probs_to_logits`.
    """

    def __init__(self, predictions: str | Path, masks: str | Path | None = None, *, kind: str = "auto",
                 head: str | None = None, classes: list[str] | None = None, ignore_index: int | None = None,
                 batch_size: int = 8, limit: int | None = None) -> None:
        self.predictions = Path(predictions)
        if not self.predictions.is_dir():
            raise FileNotFoundError(f"predictions folder not found: {self.predictions}")
        self.masks = self.predictions / "masks" if masks is None else Path(masks)
        if not self.masks.is_dir():
            raise FileNotFoundError(f"masks folder {self.masks} not found (predictions: {self.predictions}); "
                                    "pass masks=DIR or put the label maps in <predictions>/masks")
        if kind not in ("auto", *KEYS):
            raise ValueError(f"kind must be 'auto', 'logits' or 'probs', got {kind!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        preds = find_images(self.predictions, PREDICTION_EXTS)
        if not preds:
            raise ValueError(f"{self.predictions}: no prediction files ({', '.join(PREDICTION_EXTS)})")
        labels = find_images(self.masks, MASK_EXTS)
        missing = [s for s in preds if s not in labels]
        if missing:
            raise ValueError(f"{len(missing)} prediction(s) in {self.predictions} have no mask in {self.masks}: "
                             f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        self.unmatched_masks = sum(s not in preds for s in labels)
        self._pairs = [(preds[s], labels[s]) for s in preds]
        if limit is not None:
            if not 1 <= limit <= len(self._pairs):
                raise ValueError(f"limit={limit} but only {len(self._pairs)} images in {self.predictions}")
            self._pairs = self._pairs[:limit]

        self._stored = meta = read_meta(self.predictions)
        first, hint = read_prediction(self._pairs[0][0])
        self._shape = first.shape
        self.requested_batch_size = batch_size
        self.batch_size = max(1, min(batch_size, BATCH_BYTES // (4 * first.size)))
        self.head = head or meta.get("head") or ("sigmoid" if first.shape[0] == 1 else "softmax")
        if self.head not in HEADS:
            raise ValueError(f"head must be 'softmax' or 'sigmoid', got {self.head!r}")
        if kind != "auto":
            self.kind, self.kind_origin = kind, "given"
        elif meta.get("kind"):
            self.kind, self.kind_origin = meta["kind"], META_FILE
        elif hint:
            self.kind, self.kind_origin = hint, f"the file's {hint!r} key"
        else:
            self.kind, self.kind_origin = detect_kind(first, self.head, self._pairs[0][0])
        if self.kind not in KEYS:
            raise ValueError(f"{self.predictions / META_FILE}: kind must be 'logits' or 'probs', got {self.kind!r}")
        ignore = meta.get("ignore_index") if ignore_index is None else ignore_index
        self.ignore_index = 255 if ignore is None else int(ignore)
        self.class_names = list(classes or meta.get("classes") or [f"class{i}" for i in range(self.num_classes)])
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"classes has {len(self.class_names)} names but {self._pairs[0][0]} has "
                             f"{self.num_channels} channels ({self.num_classes} classes with a {self.head} head)")
        self.class_colors = _meta_colors(meta.get("colors"), self.num_classes, self.predictions / META_FILE)
        geometry = meta.get("geometry") or {}
        self.resize: str | None = geometry.get("resize")
        self._sizes = {name: tuple(size) for name, size in (geometry.get("original_sizes") or {}).items()}
        self._load(0, first)

    @property
    def averaged(self) -> list[int]:
        """The classes averaged in tables: all but those named like a background."""
        return averaged_classes(self.class_names)

    @property
    def names(self) -> list[str]:
        return [p.stem for p, _ in self._pairs]

    def summary(self) -> str:
        """One line for the console: where, how many, and how kind and head were decided."""
        return (f"{self.predictions}: {len(self)} predictions of {self.num_classes} classes "
                f"{tuple(self.image_size)}, kind {self.kind} ({self.kind_origin}), head {self.head}")

    @property
    def num_channels(self) -> int:
        return self._shape[0]

    @property
    def num_classes(self) -> int:
        return num_output_classes(self.num_channels, self.head)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self._shape[1:])

    @property
    def meta(self) -> dict:
        """Description of this folder in the ``meta.json`` format."""
        meta = {"kind": self.kind, "head": self.head, "classes": self.class_names,
                "ignore_index": self.ignore_index, "image_size": list(self.image_size),
                "source": dict(self._stored.get("source") or {}), "count": len(self)}
        if self.class_colors is not None:
            meta["colors"] = [None if c is None else list(c) for c in self.class_colors]
        sizes = {n: list(self._sizes[n]) for n in self.names if n in self._sizes}
        if sizes:
            meta["geometry"] = {"resize": self.resize, "original_sizes": sizes}
        return meta

    def __len__(self) -> int:
        return len(self._pairs)

    def subset(self, n: int) -> PredictionFolder:
        """The same folder restricted to its first ``n`` images (by stem)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"n={n} must be between 1 and {len(self)} (images in {self.predictions})")
        sub = copy.copy(self)
        sub._pairs = self._pairs[:n]
        return sub

    def _load(self, i: int, arr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prediction ``[C, H, W]`` and mask ``[H, W]`` of pair ``i``, checked against this folder."""
        pred_path, mask_path = self._pairs[i]
        if arr is None:
            arr = read_prediction(pred_path)[0]
        if arr.shape != self._shape:
            raise ValueError(f"{pred_path}: prediction shape {arr.shape} differs from {self._pairs[0][0]} "
                             f"{self._shape}; all predictions must share one [C, H, W]")
        mask = _read_label_map(mask_path)
        try:
            check_batch(torch.from_numpy(arr)[None], torch.from_numpy(mask)[None], self.num_classes,
                        self.ignore_index, self.kind, self.head, name="prediction")
        except ValueError as exc:
            raise ValueError(f"{pred_path} (mask {mask_path}): {exc}") from exc
        return arr, mask

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self), self.batch_size):
            idx = range(start, min(start + self.batch_size, len(self)))
            batch, masks = np.empty((len(idx), *self._shape), dtype=np.float32), []
            for j, i in enumerate(idx):  # filled in place: no second copy of the batch
                arr, mask = self._load(i)
                batch[j] = arr
                masks.append(mask)
                del arr
            logits = torch.from_numpy(batch)
            if self.kind == "probs":
                logits = probs_to_logits(logits, self.head)
            names = [self._pairs[i][0].stem for i in idx]
            sizes = [self._sizes[n] for n in names] if all(n in self._sizes for n in names) else None
            yield Batch(logits, torch.from_numpy(np.stack(masks)), names, sizes=sizes)

    def describe(self) -> dict[str, Any]:
        """JSON description (the pipeline's source record)."""
        return {"checkpoint": None, "predictions": str(self.predictions), "split": None, "num_images": len(self),
                "classes": list(self.class_names), "head": self.head}

    def display_image(self, batch: Batch, i: int) -> torch.Tensor:
        """No input image is saved: the label map of image ``i`` in grey, ``[3, H, W]`` in [0, 1]."""
        mask = batch.labels[i].float()
        mask = torch.where(mask == self.ignore_index, torch.zeros_like(mask), mask)
        return (mask / max(self.num_classes - 1, 1)).expand(3, *mask.shape)


def _meta_colors(colors: Any, num_classes: int, where: Path) -> list | None:
    """``colors`` of ``meta.json``: ``None`` or one ``[r, g, b]`` in [0, 1] (or ``None``) per class."""
    if colors is None:
        return None
    ok = isinstance(colors, list) and len(colors) == num_classes and all(
        c is None or (isinstance(c, list) and len(c) == 3 and all(isinstance(v, (int, float)) and 0 <= v <= 1
                                                                   for v in c)) for c in colors)
    if not ok:
        raise ValueError(f"{where}: colors must list one [r, g, b] in [0, 1] (or null) per class "
                         f"({num_classes}), got {str(colors)[:80]}")
    return [None if c is None else tuple(c) for c in colors]
