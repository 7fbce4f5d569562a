"""`segcal prepare-hybrid`: split a folder dataset into accurate BASELINE / EVAL subsets and a coarse rest.

The sewer-pipe workflow starts from many images with coarse masks (filled detection boxes) of
which a few also have accurate masks. Which ones is read from ``labels.csv`` (in the source
folder, or given explicitly)::

    name,accurate          # header; ``name`` is the image file stem
    0001,1                 # accurate: 1/0, true/false, yes/no (case-insensitive)
    0002,0

A CSV with only a ``name`` column lists the accurate images. The accurate images are shuffled
with ``seed``; the first ``n_baseline`` form ``P_BASELINE``, the next ``n_eval`` ``P_EVAL``;
every other image (accurate ones left over included) forms ``P_COARSE``. With
``simulate_boxes`` every image counts as accurate and the ``P_COARSE`` masks are replaced by
filled bounding boxes (:func:`box_mask`) — the seed's situation made from a fully annotated
dataset. Images are hard-linked (or copied) unchanged; masks are written as PNG after ``remap``.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from segcal.data.files import write_png
from segcal.pipeline.progress import track
from segcal.refine.project import (
    PROVENANCE_FILE,
    Project,
    atomic_folders,
    link_or_copy,
    open_folder,
    start_folder_dataset,
    write_json,
)

LABELS_FILE = "labels.csv"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass
class PrepareResult:
    baseline: Path
    eval: Path
    coarse: Path
    names: dict[str, list[str]] = field(default_factory=dict)  # role -> image names


def read_accurate_list(path: str | Path) -> list[str]:
    """Names of images with accurate masks from a ``name[,accurate]`` CSV (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels: file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
        header = [h.strip() for h in (rows[0].keys() if rows else [])]
    if not rows or "name" not in header:
        raise ValueError(f"{path}: expected a CSV with a header holding a 'name' column (and optionally "
                         f"'accurate'), got columns {header}")
    names = []
    for i, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        flag = row.get("accurate", "1").lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"{path}, line {i}: 'accurate' must be 1/0, true/false or yes/no, got {flag!r}")
        if not row["name"]:
            raise ValueError(f"{path}, line {i}: empty name")
        if flag in _TRUE:
            names.append(Path(row["name"]).stem)
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: some names are listed more than once")
    return names


def box_mask(mask: np.ndarray, num_classes: int, ignore_index: int = 255, per_component: bool = False
             ) -> np.ndarray:
    """Fill the bounding box of each class (or of each connected component) of ``mask [H, W]``.

    Boxes are painted largest first, so a smaller object's box stays visible; ``ignore_index``
    pixels outside every box are kept.
    """
    boxes = []
    for k in range(1, num_classes):
        region = mask == k
        if not region.any():
            continue
        if per_component:
            comps, _ = ndimage.label(region)
            slices = ndimage.find_objects(comps)
        else:
            rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
            slices = [(slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))]
        boxes += [(k, s) for s in slices if s is not None]
    out = np.where(mask == ignore_index, ignore_index, 0).astype(np.int64)
    for k, (sy, sx) in sorted(boxes, key=lambda b: -(b[1][0].stop - b[1][0].start) * (b[1][1].stop - b[1][1].start)):
        out[sy, sx] = k
    return out


def select_subsets(names: list[str], accurate: list[str], n_baseline: int | None, n_eval: int | None,
                   seed: int = 0, max_coarse: int | None = None) -> dict[str, list[str]]:
    """``{"BASELINE", "EVAL", "COARSE": sorted names}``; deterministic in (names, accurate, sizes, seed)."""
    known = set(names)
    unknown = sorted(set(accurate) - known)
    if unknown:
        raise ValueError(f"labels: {len(unknown)} accurate name(s) are not images of the dataset: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    pool = sorted(set(accurate))
    if n_baseline is None and n_eval is None:
        n_baseline = (len(pool) + 1) // 2
    n_baseline = len(pool) - n_eval if n_baseline is None else n_baseline
    n_eval = len(pool) - n_baseline if n_eval is None else n_eval
    if n_baseline < 1 or n_eval < 1:
        raise ValueError(f"n_baseline and n_eval must each be >= 1 (got {n_baseline}, {n_eval}) from "
                         f"{len(pool)} accurate images")
    if n_baseline + n_eval > len(pool):
        raise ValueError(f"n_baseline + n_eval = {n_baseline + n_eval} but only {len(pool)} images have "
                         "accurate masks")
    rng = np.random.default_rng(seed)
    order = [pool[i] for i in rng.permutation(len(pool))]
    baseline, evaluation = order[:n_baseline], order[n_baseline:n_baseline + n_eval]
    taken = set(baseline) | set(evaluation)
    coarse = [n for n in sorted(known) if n not in taken]
    if max_coarse is not None:
        if max_coarse < 1:
            raise ValueError(f"max_coarse must be >= 1, got {max_coarse}")
        if max_coarse < len(coarse):
            keep = np.random.default_rng([seed, 1]).permutation(len(coarse))[:max_coarse]
            coarse = [coarse[i] for i in sorted(keep)]
    if not coarse:
        raise ValueError("no images left for the coarse dataset: every image went to BASELINE or EVAL")
    return {"BASELINE": sorted(baseline), "EVAL": sorted(evaluation), "COARSE": coarse}


def prepare_hybrid(source: str | Path, prefix: str | Path | None = None, labels: str | Path | None = None,
                   n_baseline: int | None = None, n_eval: int | None = None, seed: int = 0,
                   remap: str | list | None = None, classes: list[str] | None = None,
                   simulate_boxes: bool = False, per_component: bool = False, max_coarse: int | None = None,
                   ignore_index: int = 255, overwrite: bool = False, progress: bool = True) -> PrepareResult:
    """Write ``P_BASELINE``, ``P_EVAL`` and ``P_COARSE`` (``P = prefix``, default ``source``) atomically."""
    source = Path(source)
    project = Project(Path(prefix) if prefix is not None else source)
    outs = [project.baseline, project.eval, project.coarse]
    dataset = open_folder(source, classes, remap, ignore_index, what="source")
    labels_path = Path(labels) if labels is not None else source / LABELS_FILE
    if labels is not None or labels_path.is_file():
        accurate = read_accurate_list(labels_path)
    elif simulate_boxes:
        if n_baseline is None or n_eval is None:
            raise ValueError("--simulate-boxes treats every image as accurate: give both --baseline N and --eval N "
                             "(the other images become the coarse boxes)")
        accurate = list(dataset.names)
    else:
        raise ValueError(f"which images have accurate masks? {source / LABELS_FILE} does not exist: pass "
                         "--labels CSV (columns name[,accurate]) or --simulate-boxes")
    subsets = select_subsets(dataset.names, accurate, n_baseline, n_eval, seed, max_coarse)
    index = {n: i for i, n in enumerate(dataset.names)}
    leftover = sorted(set(accurate) & set(subsets["COARSE"])) if not simulate_boxes else []
    common = {"source": str(source.resolve()), "labels": str(labels_path) if labels_path.is_file() else None,
              "seed": seed, "remap": remap, "classes": dataset.class_names,
              "simulate_boxes": simulate_boxes, "per_component_boxes": per_component, "max_coarse": max_coarse,
              "sizes": {k: len(v) for k, v in subsets.items()}, "num_accurate": len(set(accurate)),
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    with atomic_folders(outs, overwrite) as temps:
        for role, tmp in zip(("BASELINE", "EVAL", "COARSE"), temps):
            start_folder_dataset(tmp, dataset.class_names)
            boxes = simulate_boxes and role == "COARSE"
            for name in track(subsets[role], f"write {project.folder(role).name}", enabled=progress):
                i = index[name]
                mask = dataset.load(i).mask
                if boxes:
                    mask = box_mask(mask, dataset.num_classes, ignore_index, per_component)
                image_path = dataset.images[name]
                link_or_copy(image_path, tmp / "images" / image_path.name)
                write_png(tmp / "masks" / f"{name}.png", mask)
            write_json(tmp / PROVENANCE_FILE, {"role": role, "masks": "coarse (boxes)" if boxes else
                                               ("coarse" if role == "COARSE" else "accurate"),
                                               **common, "names": subsets[role],
                                               "accurate_in_coarse": leftover if role == "COARSE" else []})
    return PrepareResult(project.baseline, project.eval, project.coarse, subsets)
