"""Files of a refinement project: naming, atomic output folders, copied images, provenance.

A *project* is a path prefix ``P`` (e.g. ``datasets/Deformation``) shared by its folders::

    P_BASELINE/  P_EVAL/  P_COARSE/     written by ``segcal prepare-hybrid`` (folder datasets)
    P_H1/  P_H2/  ...                   hybrid datasets written by ``segcal refine``
    P_rounds.csv  P_rounds.png          metrics of each round on P_EVAL (``segcal refine-eval``)

Every folder dataset written here holds ``images/``, ``masks/``, ``classes.json`` and
``provenance.json``, and is written to a temporary sibling that is renamed at the end, so an
error never leaves a half-written folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from segcal.data.folder import FolderDataset
from segcal.data.labels import CLASSES_FILE
from segcal.io.atomic import staged_folder
from segcal.io.jsonio import read_json, write_json  # noqa: F401  (write_json: re-exported for refine)

PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class Project:
    """The folders and files of the refinement project with path prefix ``prefix``."""

    prefix: Path

    def folder(self, role: str) -> Path:
        """``P_<role>``, e.g. ``P_BASELINE`` or ``P_H1``."""
        return self.prefix.with_name(f"{self.prefix.name}_{role}")

    @property
    def baseline(self) -> Path:
        return self.folder("BASELINE")

    @property
    def eval(self) -> Path:
        return self.folder("EVAL")

    @property
    def coarse(self) -> Path:
        return self.folder("COARSE")

    @property
    def rounds_csv(self) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}_rounds.csv")

    @property
    def rounds_png(self) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}_rounds.png")

    def hybrid(self, k: int) -> Path:
        return self.folder(f"H{k}")

    def is_prepared(self) -> bool:
        return self.coarse.is_dir()


def is_folder_dataset(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "masks").is_dir()


def check_new_folder(out: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse an existing ``out`` unless ``overwrite`` (one clear error, nothing written)."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{what} folder {out} already exists; refusing to overwrite it (pick a new name, "
                              "e.g. the next _H<k>, or pass --overwrite)")


@contextlib.contextmanager
def atomic_folders(outs: Sequence[Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """Yield temporary folders, one per ``outs``; on success rename each onto its target.

    Existing targets are refused before anything is written (unless ``overwrite``, then they
    are replaced). On any error the temporary folders are removed and no target changes.
    """
    outs = [Path(o) for o in outs]
    for out in outs:
        check_new_folder(out, overwrite)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(staged_folder(out)) for out in outs]


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk space), or copy it where linking fails."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def start_folder_dataset(root: Path, classes: Sequence[str]) -> None:
    """Create ``images/``, ``masks/`` and ``classes.json`` in a (temporary) dataset folder."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / CLASSES_FILE).write_text(json.dumps(list(classes), indent=1) + "\n")


def read_provenance(folder: Path) -> dict:
    """``provenance.json`` of a dataset folder, or ``{}`` when there is none."""
    path = Path(folder) / PROVENANCE_FILE
    return read_json(path) if path.is_file() else {}


def open_folder(root: Path, classes: Sequence[str] | None = None, remap: str | list | None = None,
                ignore_index: int = 255, what: str = "data") -> FolderDataset:
    """A :class:`FolderDataset` with class names resolved like ``data.*`` keys (errors name ``what``)."""
    from segcal.data.config import DataConfig
    from segcal.data.labels import target_class_names

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {root}")
    missing = [sub + "/" for sub in ("images", "masks") if not (root / sub).is_dir()]
    if missing:
        raise FileNotFoundError(f"{what} {root}: not a folder dataset, {' and '.join(missing)} missing (it needs "
                                "images/ and masks/ matched by file stem)")
    cfg = DataConfig(kind="folder", root=str(root), classes=list(classes) if classes else None, remap=remap,
                     ignore_index=ignore_index)
    try:
        names = target_class_names(cfg)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc} (command line: --classes or --remap)") from exc
    return FolderDataset(root, names, ignore_index, remap)


def open_for_model(model, root: Path, remap: str | list | None = None, what: str = "data") -> FolderDataset:
    """A folder dataset for ``model`` (a :class:`~segcal.models.lightning.SegModel`), class count checked.

    Class names come from the folder's ``classes.json``, else ``remap``, else the model's.
    """
    root = Path(root)
    names = model.class_names if remap is None and not (root / CLASSES_FILE).is_file() else None
    dataset = open_folder(root, names, remap, model.ignore_index, what=what)
    if dataset.num_classes != model.num_classes:
        raise ValueError(f"{what} {root} has {dataset.num_classes} classes {dataset.class_names} but the model "
                         f"has {model.num_classes} {model.class_names}; pass --remap binary or fix classes.json")
    return dataset
