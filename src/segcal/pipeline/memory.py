"""The up-front memory check of `segcal calibrate`: estimate (``segcal.conformal.memory``) against what the
machine has available (``MemAvailable`` of ``/proc/meminfo``; no check where that cannot be read)."""
from __future__ import annotations

from pathlib import Path

from segcal.conformal.memory import estimate_peak_bytes
from segcal.methods import CONFORMAL_METHODS

GIB = 2**30
HEADROOM = 0.9
"""A run is refused when its estimate exceeds this share of the available memory."""


class MemoryBudgetError(ValueError, MemoryError):
    """A run refused before it starts because its memory estimate exceeds the available memory."""


def available_bytes() -> int | None:
    """``MemAvailable`` in bytes, or ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_plan(source, method: str, n_cal: int | None = None) -> tuple[int, int | None] | None:
    """``(estimated peak bytes, available bytes or None)`` of calibrating ``method`` on ``source``; ``None`` for
    methods without per-pixel state (recalibration, risk control: their memory does not grow with the image)."""
    if method not in CONFORMAL_METHODS:
        return None
    images = n_cal or len(source)
    grouping = CONFORMAL_METHODS[method][0]
    return estimate_peak_bytes(grouping, source.num_classes, tuple(source.image_size), images), available_bytes()


def check_memory(source, method: str, n_cal: int | None = None) -> None:
    """:class:`MemoryBudgetError` naming what would fit when ``method`` is estimated to need more memory than is
    available."""
    plan = memory_plan(source, method, n_cal)
    if plan is None or plan[1] is None or plan[0] <= HEADROOM * plan[1]:
        return
    need, have = plan
    h, w = source.image_size
    images = n_cal or len(source)
    fits = [m for m in CONFORMAL_METHODS if m != method and
            estimate_peak_bytes(CONFORMAL_METHODS[m][0], source.num_classes, (h, w), images) <= HEADROOM * have]
    raise MemoryBudgetError(
        f"{method} on {images} images of {source.num_classes} classes at {h}×{w} needs about {need / GIB:.1f} GiB "
        f"but {have / GIB:.1f} GiB is available: use " + (f"--method {' or '.join(fits[:3])}, " if fits else "")
        + "a smaller data.image_size (predict at a lower resolution), or pass --no-memory-check to try anyway")
