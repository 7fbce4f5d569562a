"""JSON in and out: one conversion to plain values (NaN/inf → ``null``), one atomic writer, one reader.

:func:`plain` is pure (no I/O), so the tensor code may use it to build its ``to_dict`` views.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from segcal.io.atomic import atomic_write_text


def plain(x: Any) -> Any:
    """``x`` as JSON values: tensors and NumPy arrays → nested lists, NaN/inf → ``None``, paths → strings,
    recursively through dicts, lists and tuples."""
    if hasattr(x, "tolist") and callable(x.tolist):  # torch.Tensor, numpy arrays and scalars
        return plain(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``plain(data)`` as indented JSON (strict: no NaN tokens)."""
    return atomic_write_text(path, json.dumps(plain(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; a missing or invalid file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
