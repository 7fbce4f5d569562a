"""Reading and writing checkpoints safely.

Checkpoints are shared and downloaded, so they are untrusted: they are read with
``torch.load(weights_only=True)``, which accepts tensors and plain containers (dict, list, tuple,
str, numbers) and refuses any other pickled object before it can run code. Everything segcal writes
into a checkpoint (model weights, hyper-parameters, configs, calibration state) is of that kind.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from segcal.io.atomic import atomic_write

UNREADABLE = (KeyError, TypeError, RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
              AttributeError, IndexError)
"""What ``torch.load`` raises for a file that is not a readable checkpoint."""


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds pickled Python objects beyond tensors and plain containers."""


def checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    """``checkpoint`` as a path; ``FileNotFoundError`` naming it when it is missing."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict in ``path``, loaded weights-only on the CPU; every failure names the file.

    Raises :class:`UnsafeCheckpointError` for files holding other pickled objects (they could run code
    when unpickled) and ``ValueError`` for truncated, corrupt or non-checkpoint files.
    """
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), None)
        if detail is not None:  # a pickled class or function: the weights-only unpickler refused to run it
            raise UnsafeCheckpointError(
                f"{path}: refused to open: the file contains pickled Python objects, not only tensors and plain "
                f"containers, and opening it could run arbitrary code ({detail}). segcal reads checkpoints with "
                "torch.load(weights_only=True); re-save the checkpoint's state_dict from a trusted environment"
            ) from None
        reason = next((ln for ln in lines if ln.startswith("Unsupported")), lines[0] if lines else "")
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt? {reason})") from None
    except UNREADABLE as exc:
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt? {exc})") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def write_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``ckpt`` to ``path`` (see :func:`segcal.io.atomic.atomic_write`)."""
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
