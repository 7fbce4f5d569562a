"""A fitted conformal calibrator as plain tensors and containers, and back.

The state (format ``segcal.conformal/1``) holds the parameters, ``group_map [C, H, W]`` (int16/int32, or
``{"constant", "shape"}`` for one group; for the blocks of the calibration grid when ``grid > 1``),
``n_per_group [C, G]`` (calibration scores pooled per class and group), the stored scores and the level grid
``nc_levels [Q]`` with ``nc_group_curves [Q, C, G]``: the thresholds of every group, what the method needs (one
curve per class for imagewise, per group for Kandinsky, per pixel for pixelwise). ``include_curves="dense"`` also stores
``nc_curves [Q, C, H, W]`` (the layout of the Kandinsky reference code; :func:`nc_curves_of` expands any state
to it), ``include_curves=False`` neither. Thresholds are always recomputed from the stored scores; the curves are
for other readers (float32, or float16 rounded up for per-pixel curves of large images). An imagewise state
stores its one pool once (``"scores": "image_scores"``).
"""
from __future__ import annotations

from typing import Any

import torch

from segcal.conformal.grid import to_pixels
from segcal.conformal.quantile import SortedScores, expand_groups, group_thresholds, grouped_from_state_dict
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

STATE_FORMAT = "segcal.conformal/1"
NC_CURVE_LEVELS = 100
PARAMS = ("grouping", "num_classes", "marginal", "num_groups", "split", "score", "kind", "head", "ignore_index",
          "mode", "max_exact_scores", "grid", "seed")
"""Constructor parameters stored as they are (``bins`` and ``group_candidates`` are converted)."""


def conformal_state(cp, include_curves: bool | str = True) -> dict[str, Any]:
    """The state of fitted calibrator ``cp`` (a :class:`~segcal.conformal.calibrator.ConformalCalibrator`)."""
    params = {**{name: getattr(cp, name) for name in PARAMS}, "group_candidates": list(cp.group_candidates),
              "bins": None if cp.bins is None else cp.bins.state_dict()}
    state = {"format": STATE_FORMAT, "params": params, **cp.info_, "num_classes": cp.num_classes_,
             "shape": list(cp.shape_),
             "kind": cp.kind, "head": cp.head, "ignore_index": cp.ignore_index, "mode": cp.mode,
             "bins": (cp.bins or ScoreBins()).state_dict(), "max_exact_scores": cp.max_exact_scores,
             "group_candidates": list(cp.group_candidates),
             "group_map": compact_group_map(cp.group_map_[:, ::cp.grid, ::cp.grid]),  # per block of the grid
             "n_per_group": cp.scores_.group_counts(),
             # one pool (imagewise): stored once
             "scores": "image_scores" if cp.scores_ is cp.image_scores_ else compact_scores(cp.scores_),
             "image_scores": compact_scores(cp.image_scores_)}
    if include_curves:
        levels = torch.linspace(0, 1, NC_CURVE_LEVELS, dtype=torch.float64)
        state["nc_levels"] = levels
        state["nc_group_curves"] = group_curves(cp.scores_, cp.image_scores_, levels)
        if include_curves == "dense":
            state["nc_curves"] = expand_groups(state["nc_group_curves"].float(), cp.group_map_)
    return state


LARGE_POOL_BYTES = 8 * 2**20
STATE_BINS = 65536
"""Exact pooled scores taking more than ``LARGE_POOL_BYTES`` are stored as histograms of ``STATE_BINS`` logit-spaced
bins when that is smaller (thresholds read from the state then sit at most one bin above the exact ones:
``≤ p(1 − p) · 8.3e-4 ≤ 2.1e-4``)."""


def compact_scores(scores) -> dict[str, Any]:
    """``scores.state_dict()``, or, for a large exact pool of scores in ``[0, 1]``, that of its fine histogram."""
    if not isinstance(scores, SortedScores) or scores.values.numel() * 4 <= LARGE_POOL_BYTES:
        return scores.state_dict()
    cells = scores.num_classes * scores.num_groups
    if cells * STATE_BINS * 4 * 2 > scores.values.numel() * 4 or float(scores.values.max()) > 1.0:
        return scores.state_dict()  # per-pixel pools, or RAPS scores above 1: exact
    bins = ScoreBins(STATE_BINS)
    cell = torch.repeat_interleave(torch.arange(cells), scores.offsets.diff())
    counts = torch.bincount(cell * STATE_BINS + bins.index(scores.values), minlength=cells * STATE_BINS)
    hist = ScoreHistogram(scores.num_classes, (scores.num_groups,), bins,
                          counts.view(scores.num_classes, scores.num_groups, STATE_BINS).to(torch.int32))
    return hist.state_dict()


LARGE_CURVES = 1 << 24
"""Curves with more values than this (per-pixel groupings of large images) are stored in float16."""


def group_curves(scores, image_scores, levels: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """:func:`group_thresholds` ``[Q, C, G]`` computed a few levels at a time (peak memory ≈ the output), float32,
    or float16 (rounded up, so never below the exact threshold) when there are more than :data:`LARGE_CURVES`."""
    c, g = scores.group_counts().shape
    large = levels.numel() * c * g > LARGE_CURVES
    out = torch.empty(levels.numel(), c, g, dtype=torch.float16 if large else torch.float32)
    for i in range(0, levels.numel(), chunk):
        q = group_thresholds(scores, image_scores, levels[i:i + chunk]).float()
        if large:
            half = q.half()
            q = torch.where(half.float() < q, torch.nextafter(half, torch.full_like(half, 2.0)), half)
        out[i:i + chunk] = q
    return out


def compact_group_map(group_map: torch.Tensor) -> torch.Tensor | dict[str, Any]:
    """``group_map [C, H, W]`` in the smallest form: ``{"constant": g, "shape"}`` when every entry is one group
    (imagewise), else int16 / int32 (pixelwise needs int32 beyond 32,767 pixels)."""
    if bool((group_map == group_map.flatten()[0]).all()):
        return {"constant": int(group_map.flatten()[0]), "shape": list(group_map.shape)}
    return group_map.to(torch.int16 if int(group_map.max()) < 2**15 else torch.int32)


def expand_group_map(stored: torch.Tensor | dict[str, Any]) -> torch.Tensor:
    """The ``[C, H, W]`` int64 group map of :func:`compact_group_map`'s output (or of a plain tensor)."""
    if isinstance(stored, dict):
        return torch.full(tuple(stored["shape"]), int(stored["constant"]), dtype=torch.long)
    return stored.long()


def pixel_group_map(state: dict[str, Any]) -> torch.Tensor:
    """The ``[C, H, W]`` group map of a state (stored for the blocks of its calibration grid)."""
    grid = int((state.get("params") or {}).get("grid", 1))
    return to_pixels(expand_group_map(state["group_map"]), grid, tuple(state["shape"]))


def nc_curves_of(state: dict[str, Any]) -> torch.Tensor:
    """``nc_curves [Q, C, H, W]`` of any conformal state: stored, expanded from ``nc_group_curves`` through the
    group map, or recomputed from the stored scores (local states, states saved without curves)."""
    if "nc_curves" in state:
        return state["nc_curves"]
    if "nc_group_curves" in state and "group_map" in state:
        return expand_groups(state["nc_group_curves"].float(), pixel_group_map(state))
    from segcal.conformal.calibrator import ConformalCalibrator

    return ConformalCalibrator.from_state_dict(state).nc_curves(NC_CURVE_LEVELS)


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(constructor parameters, fitted attributes)`` of a state; ``ValueError`` if it is not one."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "scores" not in state:
        raise ValueError(f"not a segcal conformal calibrator state (expected format {STATE_FORMAT!r}"
                         " with nc_curves and scores)")
    if "params" in state:  # parameters as given (states written since the calibrator contract)
        given = state["params"]
        params = {**given, "group_candidates": tuple(given["group_candidates"]),
                  "bins": None if given["bins"] is None else ScoreBins.from_state_dict(given["bins"])}
    else:
        params = {"grouping": state["grouping"], "num_classes": state["num_classes"],
                  "num_groups": state["num_groups_requested"], "split": state["split"],
                  "score": "lac", "kind": state["kind"], "head": state["head"],
                  "ignore_index": state["ignore_index"], "mode": state["mode"],
                  "bins": ScoreBins.from_state_dict(state["bins"]), "max_exact_scores": state["max_exact_scores"],
                  "group_candidates": tuple(state["group_candidates"]), "seed": state["seed"]}
    fitted = {"num_classes_": int(state["num_classes"]), "shape_": tuple(state["shape"]),
              "group_map_": pixel_group_map(state), "num_groups_": int(state["num_groups"]),
              "image_scores_": grouped_from_state_dict(state["image_scores"]),
              "images_per_part_": dict(state["images_per_part"]),
              "group_selection_": {int(k): float(v) for k, v in state["group_selection"].items()},
              "fallback_pixels_": torch.tensor(state["fallback_pixels"])}
    stored = state["scores"]
    fitted["scores_"] = fitted["image_scores_"] if stored == "image_scores" else grouped_from_state_dict(stored)
    return params, fitted
