"""Class colours that stay distinct for many classes, and their legends."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

TAB20_ORDER = [*range(0, 20, 2), *range(1, 20, 2)]
"""tab20's strong colours first, then their light partners: the first 10 classes get the clearest ones."""


Colors = Sequence[Sequence[float] | None] | None
"""Per-class colours ``(r, g, b)`` in [0, 1] (e.g. from ``classes.json``); ``None`` entries use the palette."""


def class_palette(num_classes: int, colors: Colors = None) -> np.ndarray:
    """A distinct RGB colour per class ``[C, 3]`` in [0, 1]: tab20 up to 20 classes, then evenly spaced hues
    of alternating lightness (never a repeated colour). ``colors`` (one per class, ``None`` = default) win."""
    if num_classes <= 20:
        palette = matplotlib.colormaps["tab20"](TAB20_ORDER[:num_classes])[:, :3]
    else:
        palette = np.array([colorsys.hls_to_rgb(i / num_classes, 0.45 if i % 2 else 0.65, 0.75)
                            for i in range(num_classes)])
    if colors is not None:
        if len(colors) != num_classes:
            raise ValueError(f"colors has {len(colors)} entries for {num_classes} classes")
        for c, colour in enumerate(colors):
            if colour is not None:
                palette[c] = colour
    return palette


def class_colormap(num_classes: int, ignore_color=(1.0, 1.0, 1.0), colors: Colors = None) -> ListedColormap:
    """Colormap for label maps: classes ``0..C-1`` (:func:`class_palette`), then ignored pixels (index ``C``)."""
    return ListedColormap([*map(tuple, class_palette(num_classes, colors)), ignore_color])


def class_legend(ax, class_names: Sequence[str], ignore_label: str | None = "ignored",
                 ignore_color=(1.0, 1.0, 1.0), colors: Colors = None) -> None:
    """A legend naming every class colour (and the ignored-pixel colour) beside ``ax``."""
    colours = class_palette(len(class_names), colors)
    handles = [Patch(facecolor=colours[i], edgecolor="0.5", label=name) for i, name in enumerate(class_names)]
    if ignore_label:
        handles.append(Patch(facecolor=ignore_color, edgecolor="0.5", label=ignore_label))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
              ncol=1 if len(handles) <= 16 else 2)
