"""The up-front memory check of `segcal calibrate`: estimate (``segcal.conformal.memory``) against a budget, by
default 90% of what the machine has available (``MemAvailable`` of ``/proc/meminfo``; no check where that cannot
be read), or ``--max-memory``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES
from segcal.conformal.memory import BASE, estimate_peak_bytes
from segcal.methods import CONFORMAL_METHODS

GIB = 2**30
HEADROOM = 0.9
"""Without ``--max-memory``, a run is refused when its estimate exceeds this share of the available memory."""
GRIDS = (2, 4, 8, 16)
"""Calibration grids a refusal may suggest (``--param grid=G``)."""
GRIDDED = ("local", "kandinsky-kmeans")
"""Methods with a calibration grid, suggested when no method fits at full resolution."""


class MemoryBudgetError(ValueError, MemoryError):
    """A run refused before it starts because its memory estimate exceeds the budget."""


def available_bytes() -> int | None:
    """``MemAvailable`` in bytes, or ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def budget_bytes(max_bytes: int | None = None) -> int | None:
    """``max_bytes`` when given, else :data:`HEADROOM` of the available memory (``None`` where unknown)."""
    if max_bytes is not None:
        return max_bytes
    have = available_bytes()
    return None if have is None else int(HEADROOM * have)


def in_flight_bytes(source) -> int:
    """What a prefetching model source holds beyond the batch being used: ``prefetch + 1`` batches (queued, and
    being run) of float32 logits ``[B, C, H, W]`` and int64 labels (0 for sources without a prefetch)."""
    ahead = int(getattr(source, "prefetch", 0) or 0)
    if ahead < 1:
        return 0
    h, w = source.image_size
    return (ahead + 1) * source.batch_size * (4 * source.num_classes + 8) * int(h) * int(w)


def _estimate(source, method: str, images: int, params: dict[str, Any]) -> int:
    return in_flight_bytes(source) + estimate_peak_bytes(
        CONFORMAL_METHODS[method][0], source.num_classes, tuple(source.image_size), images,
        int(params.get("grid", 1)), int(params.get("max_exact_scores", DEFAULT_MAX_EXACT_SCORES)),
        getattr(params.get("bins"), "num_bins", params.get("bins") or 256))


def memory_plan(source, method: str, n_cal: int | None = None, params: dict[str, Any] | None = None,
                max_bytes: int | None = None) -> tuple[int, int | None] | None:
    """``(estimated peak bytes, budget bytes or None)`` of calibrating ``method`` on ``source``; ``None`` for
    methods without per-pixel state (recalibration, risk control: their memory does not grow with the image).
    The budget is ``max_bytes`` when given, else :data:`HEADROOM` of the available memory."""
    if method not in CONFORMAL_METHODS:
        return None
    return _estimate(source, method, n_cal or len(source), params or {}), budget_bytes(max_bytes)


def alternatives(source, method: str, images: int, params: dict[str, Any], budget: int) -> list[str]:
    """What would fit ``budget``, most relevant first: a coarser calibration grid of ``method`` (when it has one),
    other methods at full resolution, else the smallest grid of the :data:`GRIDDED` methods."""
    def grid_of(m: str) -> int | None:
        return next((g for g in GRIDS if g > int(params.get("grid", 1))
                     and _estimate(source, m, images, {**params, "grid": g}) <= budget), None)
    gridded = CONFORMAL_METHODS[method][0] not in ("pixel", "image")
    own = grid_of(method) if gridded else None
    fits = [f"--param grid={own}"] if own else []
    full = [m for m in CONFORMAL_METHODS if m != method and _estimate(source, m, images, {**params, "grid": 1})
            <= budget]
    fits += [f"--method {m}" for m in full[:2]]
    for m in [] if gridded else [m for m in GRIDDED if m not in full]:
        grid = grid_of(m)
        fits += [f"--method {m} --param grid={grid}"] if grid else []
    return fits


def check_memory(source, method: str, n_cal: int | None = None, params: dict[str, Any] | None = None,
                 max_bytes: int | None = None) -> None:
    """:class:`MemoryBudgetError` naming what would fit when ``method`` is estimated to need more memory than the
    budget (``max_bytes``, or :data:`HEADROOM` of the available memory)."""
    params = params or {}
    plan = memory_plan(source, method, n_cal, params, max_bytes)
    if plan is None or plan[1] is None or plan[0] <= plan[1]:
        return
    need, budget = plan
    h, w = source.image_size
    images = n_cal or len(source)
    fits = alternatives(source, method, images, params, budget)
    what = "--max-memory" if max_bytes is not None else "90% of the available memory"
    raise MemoryBudgetError(
        f"{method} on {images} images of {source.num_classes} classes at {h}×{w} needs about {need / GIB:.1f} GiB "
        f"but the budget is {budget / GIB:.1f} GiB ({what}): use " + (f"{' or '.join(fits)}, " if fits else "")
        + "a smaller data.image_size (predict at a lower resolution), or pass --no-memory-check to try anyway")


EVALUATE_PER_PIXEL = 400
"""Bytes per pixel of an evaluation whatever the classes (the per-pixel ECE map of 15 bins, batch work)."""
EVALUATE_PER_CELL = 30
"""Bytes per (pixel, class, coverage level) of a conformal evaluation (thresholds, level histograms, coverage
maps; measured 27.5 at 19 classes, 512 × 1024 and 19 levels)."""


def evaluate_peak_bytes(num_classes: int, shape: tuple[int, int], levels: int, conformal: bool) -> int:
    """Estimated peak resident bytes of ``segcal evaluate`` at images ``shape``, with ``levels`` coverage levels
    when a conformal calibrator is evaluated."""
    pixels = int(shape[0]) * int(shape[1])
    cells = pixels * num_classes * levels if conformal else 0
    return BASE + EVALUATE_PER_PIXEL * pixels + EVALUATE_PER_CELL * cells


def check_evaluate_memory(source, levels: int, conformal: bool, max_bytes: int | None = None) -> tuple[int, int | None]:
    """``(estimate, budget)`` of evaluating ``source``; :class:`MemoryBudgetError` naming how many coverage levels
    (``--alphas``) would fit when the estimate exceeds the budget (``max_bytes``, or :data:`HEADROOM` of the
    available memory)."""
    shape, c = tuple(source.image_size), source.num_classes
    need = evaluate_peak_bytes(c, shape, levels, conformal) + in_flight_bytes(source)
    budget = budget_bytes(max_bytes)
    if budget is None or need <= budget:
        return need, budget
    per_level = evaluate_peak_bytes(c, shape, 1, True) - evaluate_peak_bytes(c, shape, 0, False)
    fits = (budget - evaluate_peak_bytes(c, shape, 0, False)) // per_level if conformal else 0
    what = "--max-memory" if max_bytes is not None else "90% of the available memory"
    use = (f"--alphas with at most {fits} levels (e.g. --alphas 0.1), " if fits >= 1 else "") + \
        "--segmentation-only, a smaller data.image_size"
    raise MemoryBudgetError(
        f"evaluating {c} classes at {shape[0]}×{shape[1]}" + (f" with {levels} coverage levels" if conformal else "")
        + f" needs about {need / GIB:.1f} GiB but the budget is {budget / GIB:.1f} GiB ({what}): use {use}, "
        "or pass --no-memory-check to try anyway")
