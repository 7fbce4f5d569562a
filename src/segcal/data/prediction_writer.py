"""Writing prediction folders (the format of :mod:`segcal.data.predictions`), as ``segcal predict`` does."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segcal.data.files import find_images, write_png
from segcal.data.predictions import HEADS, META_FILE, PREDICTION_EXTS, as_numpy, write_meta, write_prediction
from segcal.io.atomic import atomic_write, staged_folder
from segcal.outputs import num_output_classes


def is_prediction_folder(folder: Path) -> bool:
    """``folder`` holds a ``meta.json`` or prediction files (what :class:`PredictionWriter` may replace)."""
    return (folder / META_FILE).is_file() or bool(find_images(folder, PREDICTION_EXTS))


class PredictionWriter:
    """Writes ``<name>.npz`` (logits + extras), ``masks/<name>.png`` and, last, ``meta.json`` into ``folder``.

    Everything goes to a temporary sibling folder that replaces ``folder`` in one rename when the writer
    closes normally; on an error or interrupt the temporary folder is removed and ``folder`` is untouched.
    An existing non-empty ``folder`` is refused unless ``overwrite`` (and then only a prediction folder).
    Use as a context manager, or call :meth:`close` / :meth:`abort`.
    """

    def __init__(self, folder: str | Path, *, classes: list[str], head: str, ignore_index: int = 255,
                 source: dict | None = None, overwrite: bool = False, colors: list | None = None,
                 resize: str | None = None) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be 'softmax' or 'sigmoid', got {head!r}")
        self.folder = Path(folder)
        if self.folder.exists():
            if not self.folder.is_dir():
                raise FileExistsError(f"{self.folder} exists and is not a folder")
            entries = [p for p in self.folder.iterdir() if not p.name.startswith(".")]
            old = find_images(self.folder, PREDICTION_EXTS)
            if entries and not overwrite:
                what = f"{len(old)} prediction file(s)" if old else f"{len(entries)} file(s)"
                raise FileExistsError(f"{self.folder} already holds {what}; refusing to overwrite them "
                                      "(pick a new folder or pass overwrite / --overwrite)")
            if entries and not is_prediction_folder(self.folder):
                raise FileExistsError(f"{self.folder} is not a prediction folder (no {META_FILE}, no prediction "
                                      "files); refusing to replace it, pick a new folder")
        self.classes, self.head, self.ignore_index = list(classes), head, ignore_index
        self.source = dict(source or {})
        self.colors = None if colors is None else [None if c is None else [float(v) for v in c] for c in colors]
        self.resize = resize
        self.original_sizes: dict[str, list[int]] = {}
        self._shape: tuple[int, ...] | None = None
        self._names: set[str] = set()
        self._staging = None
        self._stage: Path | None = None

    def path(self, relative: str | Path) -> Path:
        """Where ``relative`` (e.g. ``sets/x.png``) is written now: inside the temporary folder."""
        if self._stage is None:
            self._staging = staged_folder(self.folder)
            self._stage = self._staging.__enter__()
        return self._stage / relative

    def add(self, name: str, logits: Any, mask: Any | None = None, original_size: tuple[int, int] | None = None,
            **extra: Any) -> None:
        """Write logits ``[C, H, W]``, optional mask ``[H, W]`` and ``extra`` arrays for image ``name``
        (``original_size``: its ``(H, W)`` before ``resize``, kept in meta.json's geometry)."""
        if not name or name.startswith(".") or Path(name).name != name:
            raise ValueError(f"name must be a plain file stem, got {name!r}")
        if name in self._names:
            raise ValueError(f"name {name!r} was already added to {self.folder}")
        arr = as_numpy(logits).astype(np.float32)
        if arr.ndim != 3:
            raise ValueError(f"{name}: logits must have shape [C, H, W], got {arr.shape}")
        if self._shape is None:
            if num_output_classes(arr.shape[0], self.head) != len(self.classes):
                raise ValueError(f"{name}: logits have {arr.shape[0]} channels but classes has "
                                 f"{len(self.classes)} names (head {self.head})")
            self._shape = arr.shape
        if arr.shape != self._shape:
            raise ValueError(f"{name}: logits shape {arr.shape} differs from the first added {self._shape}")
        m = None if mask is None else as_numpy(mask)
        if m is not None and m.shape != arr.shape[1:]:
            raise ValueError(f"{name}: mask shape {m.shape} does not match logits [H, W] {arr.shape[1:]}")
        write_prediction(self.path(f"{name}.npz"), arr, **extra)
        if m is not None:
            atomic_write(self.path(f"masks/{name}.png"), lambda tmp: write_png(tmp, m))
        self._names.add(name)
        if original_size is not None:
            self.original_sizes[name] = [int(v) for v in original_size]

    def close(self) -> None:
        """Write meta.json (kind "logits", head, classes, ignore_index, image_size, source, count, and colors /
        geometry when known) and move the finished folder into place."""
        meta = {"kind": "logits", "head": self.head, "classes": self.classes, "ignore_index": self.ignore_index,
                "image_size": list(self._shape[1:]) if self._shape else None, "source": self.source,
                "count": len(self._names)}
        if self.colors is not None:
            meta["colors"] = self.colors
        if self.original_sizes:
            meta["geometry"] = {"resize": self.resize, "original_sizes": self.original_sizes}
        write_meta(self.path("."), meta)
        staging, self._staging, self._stage = self._staging, None, None
        staging.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        """Remove everything written so far; ``folder`` stays as it was."""
        staging, self._staging, self._stage = self._staging, None, None
        if staging is not None:
            exc = exc or RuntimeError("prediction writing aborted")
            staging.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)
