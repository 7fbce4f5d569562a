"""Class names, ``classes.json`` and label remapping (source labels → target classes).

Remapping is a look-up table over source label values; ``ignore_index`` pixels are never
remapped. Label checks happen after remapping: every value must be a target class or
``ignore_index``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

REST = "rest"
"""In ``data.remap`` groups: every label not listed elsewhere."""


if TYPE_CHECKING:
    from segcal.data.config import DataConfig

CLASSES_FILE = "classes.json"
_UNMAPPED = -1


Color = tuple[float, float, float]


def read_classes_json(path: str | Path) -> list[str]:
    """Class names indexed by label from ``classes.json`` (see :func:`read_classes_file`)."""
    return read_classes_file(path)[0]


def read_classes_file(path: str | Path) -> tuple[list[str], list[Color | None] | None]:
    """Class names indexed by label, and their colours, from ``classes.json``.

    Accepts a list of names, a dict ``name -> id`` or a dict ``id -> name`` (ids may be JSON
    strings); ids missing from a dict get the name ``class<id>``. Any name may instead be an object
    ``{"name": "sky", "color": [70, 130, 180]}`` (0–255 RGB, or ``"#4682b4"``): the colour drawn for
    that class in every figure. Colours are ``(r, g, b)`` in [0, 1], ``None`` for classes without one;
    the second value is ``None`` when the file gives no colour at all.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read class names ({exc})") from exc
    entries: list | None = None
    if isinstance(data, list) and data:
        entries = data
    elif isinstance(data, dict) and data:
        try:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
                by_id = {int(v): k for k, v in data.items()}
            else:
                by_id = {int(k): v for k, v in data.items()}
        except ValueError:
            by_id = None
        if by_id is not None and min(by_id) >= 0:
            entries = [by_id.get(i, f"class{i}") for i in range(max(by_id) + 1)]
    if entries is None or not all(isinstance(e, (str, dict)) for e in entries):
        raise ValueError(f"{path}: expected a list of class names, or a dict name -> id or id -> name, "
                         f"got {str(data)[:80]!r}")
    names, colors = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            names.append(entry)
            colors.append(None)
            continue
        if not isinstance(entry.get("name"), str):
            raise ValueError(f"{path}: class {i} is an object without a \"name\" string: {entry!r}")
        names.append(entry["name"])
        colors.append(None if entry.get("color") is None else parse_color(entry["color"], f"{path}: class {i}"))
    return names, (colors if any(c is not None for c in colors) else None)


def parse_color(value: object, where: str) -> Color:
    """``[r, g, b]`` (0–255) or ``"#rrggbb"`` → ``(r, g, b)`` in [0, 1]; ``ValueError`` naming ``where``."""
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        rgb = [int(value[k:k + 2], 16) for k in (1, 3, 5)]
    elif (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        rgb = list(value)
    else:
        raise ValueError(f"{where}: color must be [r, g, b] with integers 0-255 or \"#rrggbb\", got {value!r}")
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def check_remap_spec(remap: object, ignore_index: int, key: str = "data.remap") -> None:
    """Validate the structure of a remap spec (see :class:`~segcal.data.config.DataConfig`)."""
    if remap is None or remap == "binary":
        return
    if not isinstance(remap, list) or len(remap) < 2:
        raise ValueError(f"{key} must be null, 'binary' or a list of >= 2 label groups "
                         f"(e.g. [[0], [41], [19], rest]), got {remap!r}")
    seen: dict[int, int] = {}
    rests = 0
    for k, group in enumerate(remap):
        if group == REST:
            rests += 1
            continue
        if not isinstance(group, list) or not group or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in group):
            raise ValueError(f"{key}[{k}] must be a non-empty list of source labels (integers >= 0) "
                             f"or '{REST}', got {group!r}")
        for v in group:
            if v == ignore_index:
                raise ValueError(f"{key}[{k}] contains ignore_index {v}; ignored pixels are never remapped")
            if v in seen:
                raise ValueError(f"{key}: source label {v} is in both group {seen[v]} and group {k}")
            seen[v] = k
    if rests > 1:
        raise ValueError(f"{key} may contain '{REST}' at most once, got {remap!r}")


class Remap:
    """Source label map → target label map via a look-up table; ``ignore_index`` is kept."""

    def __init__(self, spec: str | list, ignore_index: int = 255):
        check_remap_spec(spec, ignore_index)
        self.spec = spec
        self.ignore_index = ignore_index
        if spec == "binary":
            self.groups: dict[int, int] = {}
            self.rest: int | None = 1
            self.zero: int | None = 0
        else:
            self.groups = {v: k for k, g in enumerate(spec) if g != REST for v in g}
            self.rest = next((k for k, g in enumerate(spec) if g == REST), None)
            self.zero = None

    def table(self, max_label: int) -> np.ndarray:
        """Look-up table ``[max_label + 1]`` (``-1`` = not covered by any group)."""
        default = _UNMAPPED if self.rest is None else self.rest
        lut = np.full(max_label + 1, default, dtype=np.int64)
        for v, k in self.groups.items():
            if v <= max_label:
                lut[v] = k
        if self.zero is not None:
            lut[0] = self.zero
        if 0 <= self.ignore_index <= max_label:
            lut[self.ignore_index] = self.ignore_index
        return lut

    def __call__(self, mask: np.ndarray, where: str = "mask") -> np.ndarray:
        """Remap an integer mask ``[H, W]``; ``where`` names the file in errors."""
        lut = self.table(int(mask.max()) if mask.size else 0)
        out = lut[mask]
        if (out == _UNMAPPED).any():
            bad = np.unique(mask[out == _UNMAPPED])
            raise ValueError(f"{where}: label values {_short(bad)} are in no data.remap group; add them to a "
                             f"group or use '{REST}'")
        return out


def check_labels(mask: np.ndarray, num_classes: int, ignore_index: int, where: str = "mask") -> None:
    """Raise unless every value of ``mask`` is in ``0..num_classes-1`` or ``ignore_index``."""
    bad = (mask < 0) | (mask >= num_classes)
    bad &= mask != ignore_index
    if bad.any():
        raise ValueError(f"{where}: label values {_short(np.unique(mask[bad]))} outside the class range "
                         f"0..{num_classes - 1} (and not ignore_index {ignore_index}); set data.classes "
                         "or data.remap")


def _short(values: np.ndarray, k: int = 10) -> str:
    vals = [int(v) for v in values[:k]]
    return str(vals) + (f" (+{len(values) - k} more)" if len(values) > k else "")


def source_class_names(cfg: DataConfig) -> list[str] | None:
    """Names of the labels the dataset stores, before remapping (``None`` if unknown)."""
    if cfg.kind == "synthetic":
        return ["background"] + [f"class{k}" for k in range(1, cfg.synthetic.num_classes)]
    if cfg.kind == "coco":
        return ["background"] + list(cfg.categories)
    if cfg.root is None:
        raise ValueError("data.root is required for kind 'folder' (a folder with images/ and masks/)")
    path = Path(cfg.root) / CLASSES_FILE
    return read_classes_json(path) if path.is_file() else None


def target_class_names(cfg: DataConfig) -> list[str]:
    """Target class names after remapping, background first."""
    source = source_class_names(cfg)
    if cfg.classes is not None:
        names = list(cfg.classes)
    elif cfg.remap == "binary":
        names = ["background", "foreground"]
    elif isinstance(cfg.remap, list):
        names = [_group_name(g, k, source) for k, g in enumerate(cfg.remap)]
    elif source is not None:
        names = source
    else:
        root = Path(cfg.root)
        if not (root / "images").is_dir() or not any((root / "images").iterdir()):
            raise ValueError(f"data.root {root}: no dataset there (expected images/ and masks/ with files "
                             f"matched by stem, and optionally {CLASSES_FILE})")
        raise ValueError(f"{root / CLASSES_FILE} not found: set data.classes (one name per label "
                         "value, background first) or data.remap")
    if cfg.remap is None and source is not None and len(names) != len(source):
        raise ValueError(f"data.classes has {len(names)} names but {CLASSES_FILE} lists {len(source)} "
                         "classes; set data.remap to merge labels")
    if 0 <= cfg.ignore_index < len(names):
        raise ValueError(f"data.ignore_index {cfg.ignore_index} is a class index; use a value outside "
                         f"0..{len(names) - 1} (e.g. 255)")
    return names


def target_class_colors(cfg: DataConfig) -> list[Color | None] | None:
    """Colours of the target classes from ``classes.json`` (folder datasets without ``data.remap``), else
    ``None`` (figures use the default palette)."""
    if cfg.kind != "folder" or cfg.remap is not None or cfg.root is None:
        return None
    path = Path(cfg.root) / CLASSES_FILE
    return read_classes_file(path)[1] if path.is_file() else None


def _group_name(group: list | str, k: int, source: list[str] | None) -> str:
    if group == REST:
        return REST
    if source is not None and len(group) == 1 and group[0] < len(source):
        return source[group[0]]
    return f"class{k}"
