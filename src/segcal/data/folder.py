"""Folder datasets: ``images/`` + ``masks/`` matched by file stem, optional ``classes.json``."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from segcal.data.base import Sample, SegSource
from segcal.data.files import IMAGE_EXTS, find_images, read_image, read_mask, write_png
from segcal.data.labels import CLASSES_FILE
from segcal.io.atomic import staged_folder


class FolderDataset(SegSource):
    """``root/images/<stem>.{png,jpg,jpeg,tif,tiff}`` with ``root/masks/<stem>.<ext>`` label maps.

    ``class_names`` are the target classes (see :func:`segcal.data.labels.target_class_names`).
    Every image needs a mask and every mask an image; the error lists the unmatched stems.
    """

    def __init__(self, root: str | Path, class_names: Sequence[str], ignore_index: int = 255,
                 remap: str | list | None = None, transform: Callable[..., dict] | None = None):
        super().__init__(class_names, ignore_index, remap, transform)
        self.root = Path(root)
        folders = {}
        for sub in ("images", "masks"):
            folders[sub] = self.root / sub
            if not folders[sub].is_dir():
                raise FileNotFoundError(f"{folders[sub]}: folder not found; a folder dataset needs "
                                        f"{self.root}/images/ and {self.root}/masks/")
        self.images, self.masks = find_images(folders["images"]), find_images(folders["masks"])
        no_mask = sorted(set(self.images) - set(self.masks))
        no_image = sorted(set(self.masks) - set(self.images))
        for missing, have, lack in ((no_mask, "images", "masks"), (no_image, "masks", "images")):
            if missing:
                raise ValueError(f"{len(missing)} file(s) in {folders[have]} have no counterpart in "
                                 f"{folders[lack]} (matched by file stem): {_few(missing)}")
        if not self.images:
            raise ValueError(f"empty dataset: no images in {folders['images']} "
                             f"(expected files ending in {', '.join(IMAGE_EXTS)}, any case)")
        self.names = sorted(self.images)

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        stem = self.names[i]
        image_path, mask_path = self.images[stem], self.masks[stem]
        return read_image(image_path), read_mask(mask_path), str(image_path), str(mask_path)


def _few(items: list[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (f", ... (+{len(items) - k} more)" if len(items) > k else "")


def _samples(dataset_or_items) -> Iterable[Sample]:
    if hasattr(dataset_or_items, "load") and hasattr(dataset_or_items, "__len__"):
        return (dataset_or_items.load(i) for i in range(len(dataset_or_items)))
    return (it if isinstance(it, Sample) else Sample(it["name"], it["image"], it["mask"])
            for it in dataset_or_items)


def write_folder_dataset(dataset_or_items, out_dir: str | Path, classes: Sequence[str] | None = None,
                         overwrite: bool = False) -> Path:
    """Write ``images/<name>.png``, ``masks/<name>.png`` and ``classes.json`` atomically.

    ``dataset_or_items``: a dataset with ``load(i)`` (e.g. :class:`SyntheticDataset`) or an
    iterable of :class:`Sample` / dicts with ``name``, ``image`` (uint8 ``[H, W, 3]`` or
    ``[H, W]``) and ``mask`` (integer ``[H, W]``). ``classes`` defaults to the dataset's
    ``class_names``. Everything is written to a temporary folder that is renamed at the end;
    an existing ``out_dir`` is refused unless ``overwrite``.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    classes = list(classes) if classes is not None else getattr(dataset_or_items, "class_names", None)
    with staged_folder(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        seen: set[str] = set()
        for s in _samples(dataset_or_items):
            stem = str(s.name).replace("/", "_").replace(os.sep, "_")
            if stem in seen:
                raise ValueError(f"duplicate item name {s.name!r}; names become file stems and must be unique")
            seen.add(stem)
            image, mask = np.asarray(s.image), np.asarray(s.mask)
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.shape[:2] != mask.shape:
                raise ValueError(f"item {s.name!r}: expected a uint8 image [H, W, 3] and a mask [H, W] of the "
                                 f"same size, got image {image.dtype} {image.shape} and mask {mask.shape}")
            write_png(tmp / "images" / f"{stem}.png", image)
            write_png(tmp / "masks" / f"{stem}.png", mask)
        if not seen:
            raise ValueError("no items to write (empty dataset)")
        if classes is not None:
            (tmp / CLASSES_FILE).write_text(json.dumps(list(classes), indent=1) + "\n")
    return out
