"""Exceptions segcal raises on purpose, shared by every layer (this module imports nothing)."""
from __future__ import annotations


class NoLabelsError(ValueError):
    """A split, stream or folder has no labelled pixel (every label equals ``ignore_index``)."""


def no_labels(ignore_index: int, what: str = "the data") -> NoLabelsError:
    """The one message for data without supervision."""
    return NoLabelsError(f"{what} has no labelled pixels: every label equals ignore_index={ignore_index} "
                         "(check the masks, data.ignore_index and the class mapping)")
