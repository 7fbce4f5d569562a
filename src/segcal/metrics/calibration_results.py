"""Results of :class:`~segcal.metrics.calibration.CalibrationMetrics`, read by plots and reports.

Undefined quantities (no valid pixel, empty bin, a pixel never labelled) are NaN in the
object and ``None`` in :meth:`CalibrationResults.to_dict`, which is JSON-serialisable.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from segcal.io.jsonio import plain
from segcal.stats.binned import BinnedStats


def _tensor(x: Any) -> torch.Tensor:
    """Inverse of :func:`_jsonable` for a (nested) list of numbers with ``None`` for NaN."""
    def fill(v: Any) -> Any:
        if isinstance(v, list):
            return [fill(u) for u in v]
        return float("nan") if v is None else v
    return torch.tensor(fill(x), dtype=torch.float64)


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class Reliability:
    """Reliability-diagram data for one or more histograms with shared bin edges.

    ``edges [B + 1]``; ``confidence``, ``accuracy`` (NaN for empty bins) and ``count``:
    ``[*cells, B]`` (``[B]`` top-label, ``[C, B]`` one-vs-rest per class).
    """

    edges: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor

    @classmethod
    def from_stats(cls, stats: BinnedStats, edges: torch.Tensor) -> Reliability:
        return cls(edges.double().cpu(), stats.confidence().cpu(), stats.accuracy().cpu(), stats.count.long().cpu())

    def to_dict(self) -> dict[str, Any]:
        return plain({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reliability:
        return cls(_tensor(d["edges"]), _tensor(d["confidence"]), _tensor(d["accuracy"]),
                   _tensor(d["count"]).long())


def lookup(d: Any, path: tuple[Any, ...]) -> Any:
    """``d[path[0]][path[1]]...`` or ``None`` where a level is absent."""
    for key in path:
        if isinstance(d, dict):
            d = d.get(key)
        elif isinstance(d, list) and isinstance(key, int) and -len(d) <= key < len(d):
            d = d[key]
        else:
            return None
    return d


SCALARS = ("ece", "mce", "rmsce", "adaptive_ece", "adaptive_ece_bound", "mean_classwise_ece", "brier", "nll")
MAPS = ("ece_map", "map_count", "class_ece_maps", "gap_map", "accuracy_map")


@dataclass
class CalibrationResults:
    """Everything :class:`~segcal.metrics.calibration.CalibrationMetrics` measures.

    Scalars are Python floats; per-class vectors are ``[C]``; maps are ``[H, W]`` (``[C, H, W]``
    per class) or ``None`` when disabled. ``regions`` maps ``"boundary"`` / ``"interior"`` to
    ``{ece, mce, pixels, accuracy, confidence}``; ``segmentation`` holds per-class Dice, IoU,
    recall, precision, accuracy ``[C]`` and ``overall_accuracy``. ``tests`` holds Spiegelhalter's Z and the KS
    and Kuiper statistics of top-label calibration with p-values (:mod:`segcal.stats.calibration_tests`) and the
    smooth ECE with its bandwidth (:mod:`segcal.stats.smooth_ece`).
    ``label`` names the results
    in overlaid plots (e.g. ``"uncalibrated"``).
    """

    num_classes: int
    bins: int
    scheme: str
    adaptive_scheme: str
    head: str
    kind: str
    ignore_index: int
    boundary_width: int
    num_images: int
    num_pixels: int
    ece: float
    mce: float
    rmsce: float
    adaptive_ece: float
    adaptive_ece_bound: float
    mean_classwise_ece: float
    brier: float
    nll: float
    classwise_ece: torch.Tensor
    classwise_mce: torch.Tensor
    reliability: Reliability
    class_reliability: Reliability
    regions: dict[str, dict[str, float]]
    image_ece: torch.Tensor
    segmentation: dict[str, Any]
    ece_map: torch.Tensor | None = None
    map_count: torch.Tensor | None = None
    class_ece_maps: torch.Tensor | None = None
    gap_map: torch.Tensor | None = None  # [H, W] confidence − accuracy (signed)
    accuracy_map: torch.Tensor | None = None  # [H, W] top-label accuracy
    tests: dict[str, float] = field(default_factory=dict)  # Spiegelhalter Z, KS, Kuiper, smooth ECE (stats/)
    label: str = field(default="")

    @property
    def binning(self) -> str:
        """Human-readable binning, e.g. ``"15 equal-width bins"`` – name it in every report."""
        return f"{self.bins} {self.scheme} bins"

    def summary(self) -> dict[str, float]:
        """Headline scalars (for tables), including boundary/interior ECE."""
        out = {name: getattr(self, name) for name in SCALARS}
        out.update({f"{r}_ece": v["ece"] for r, v in self.regions.items()})
        out["pixel_accuracy"] = float(self.segmentation["overall_accuracy"])
        return out

    def to_dict(self, maps: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict (NaN → ``None``); the maps (large) only with ``maps=True``."""
        d: dict[str, Any] = {"binning": self.binning}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in MAPS and not maps:
                continue
            d[f.name] = value.to_dict() if isinstance(value, Reliability) else plain(value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationResults:
        """Rebuild results from :meth:`to_dict` output (maps absent → ``None``)."""
        kw = {f.name: d.get(f.name) for f in fields(cls) if f.name in d}
        for name in SCALARS:
            kw[name] = _float(d[name])
        for name in ("classwise_ece", "classwise_mce", "image_ece"):
            kw[name] = _tensor(d[name])
        for name in MAPS:
            kw[name] = None if d.get(name) is None else _tensor(d[name])
        kw["reliability"] = Reliability.from_dict(d["reliability"])
        kw["class_reliability"] = Reliability.from_dict(d["class_reliability"])
        kw["regions"] = {r: {k: _float(v) for k, v in m.items()} for r, m in d["regions"].items()}
        kw["segmentation"] = {k: _tensor(v) if isinstance(v, list) else _float(v) for k, v in d["segmentation"].items()}
        kw["tests"] = {k: _float(v) for k, v in (d.get("tests") or {}).items()}
        return cls(**kw)
