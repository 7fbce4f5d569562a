"""Figures without pyplot: no global backend switch, nothing left open in a notebook's figure registry.

Every plot builds a :class:`matplotlib.figure.Figure` with :func:`new_figure` and writes it with
:func:`save_figure` (atomically, see :mod:`segcal.io.atomic`). Importing segcal never calls
``matplotlib.use``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from segcal.io.atomic import atomic_write


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True,
               **subplot_kw: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, but not registered with pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` atomically (temporary file, then rename)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))


def finish_figure(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save ``fig`` to ``path`` when one is given; return it (every plot function ends with this)."""
    if path is not None:
        save_figure(fig, path)
    return fig
