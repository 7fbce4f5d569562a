"""Which classes a mean over classes covers (torch-free: config validation uses it)."""
from __future__ import annotations

BACKGROUND_NAMES = ("background", "bg", "void", "unlabeled", "unlabelled", "ignore", "null", "none")
"""Class names taken for background: left out of the default class mean."""


def averaged_classes(class_names: list[str], chosen: list[str] | None = None) -> list[int]:
    """Indices of the classes averaged in tables and the monitored metric: ``chosen`` names (the config key
    ``data.mean_classes``), or every class not named like a background (:data:`BACKGROUND_NAMES`)."""
    names = [str(n) for n in class_names]
    if chosen is not None:
        unknown = [c for c in chosen if c not in names]
        if unknown or not chosen:
            raise ValueError(f"data.mean_classes must name classes of {names}; got {list(chosen)}")
        return [names.index(c) for c in chosen]
    picked = [i for i, n in enumerate(names) if n.lower() not in BACKGROUND_NAMES]
    return picked or list(range(len(names)))
