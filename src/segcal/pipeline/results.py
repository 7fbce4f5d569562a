"""Typed results of an evaluation, computed once and serialised with one schema (``evaluation.json``).

The CLI tables, the demo summary and the report read these objects, never raw JSON keys. JSON written
by :meth:`EvaluationResult.write` carries ``"schema": "segcal.evaluation/2"``; :meth:`from_dict` also
reads the first layout (without ``schema``), so older run directories still make a report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segcal.io.jsonio import plain, read_json, write_json
from segcal.metrics.calibration_results import CalibrationResults, lookup

SCHEMA = "segcal.evaluation/2"
EVALUATION_FILE = "evaluation.json"
REPORT_LEVEL = 0.9
"""The coverage level ``1 − α`` at which tables show coverage, set size and full sets."""


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class SegmentationQuality:
    """Per-class Dice, IoU, recall, precision, accuracy ``{metric: [C]}`` and their mean over
    ``averaged_classes`` (by default every class not named like a background; ``None`` where undefined)."""

    classes: list[str]
    per_class: dict[str, list[float | None]]
    mean_foreground: dict[str, float | None]
    overall_accuracy: float | None = None
    num_images: int | None = None
    averaged_classes: list[str] | None = None

    @property
    def mean_label(self) -> str:
        """How tables name the class mean: ``mean over car, person``."""
        names = self.averaged_classes
        if not names:
            return "foreground mean"
        return f"mean over {', '.join(names)}" if len(names) <= 4 else f"mean over {len(names)} classes"

    def mean(self, metric: str) -> float | None:
        return self.mean_foreground.get(metric)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentationQuality:
        return cls(**_known(cls, {"classes": [], "per_class": {}, "mean_foreground": {}, **d}))


@dataclass
class CalibrationSummary:
    """The headline numbers of a :class:`CalibrationResults` (``None`` where not measured); ``details`` keeps
    everything else it measured (reliability bins, per-image ECE, ...) for ``evaluation.json``."""

    binning: str | None = None
    ece: float | None = None
    adaptive_ece: float | None = None
    mce: float | None = None
    mean_classwise_ece: float | None = None
    boundary_ece: float | None = None
    interior_ece: float | None = None
    brier: float | None = None
    nll: float | None = None
    smooth_ece: float | None = None
    spiegelhalter_z: float | None = None
    ks: float | None = None
    classwise_ece: list[float | None] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    COLUMNS = (("ECE", "ece"), ("adaptive ECE", "adaptive_ece"), ("MCE", "mce"),
               ("classwise ECE (mean)", "mean_classwise_ece"), ("boundary ECE", "boundary_ece"),
               ("interior ECE", "interior_ece"), ("smooth ECE", "smooth_ece"), ("Brier", "brier"), ("NLL", "nll"),
               ("Spiegelhalter Z", "spiegelhalter_z"), ("KS (ECCE-MAD / σ)", "ks"))
    """``(title, attribute)`` of the headline numbers: the one table the CLI, the demo and the report show."""

    def row(self) -> list[float | None]:
        return [getattr(self, name) for _, name in self.COLUMNS]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationSummary:
        """From :meth:`CalibrationResults.to_dict` output (missing parts → ``None``)."""
        names = ("binning", "ece", "adaptive_ece", "mce", "mean_classwise_ece", "brier", "nll")
        return cls(**{k: d.get(k) for k in names}, boundary_ece=lookup(d, ("regions", "boundary", "ece")),
                   interior_ece=lookup(d, ("regions", "interior", "ece")),
                   smooth_ece=lookup(d, ("tests", "smooth_ece")),
                   spiegelhalter_z=lookup(d, ("tests", "spiegelhalter_z")), ks=lookup(d, ("tests", "ks")),
                   classwise_ece=list(d.get("classwise_ece") or []), details=dict(d))

    @classmethod
    def of(cls, results: CalibrationResults) -> CalibrationSummary:
        return cls.from_dict(results.to_dict())


@dataclass
class LevelSummary:
    """Marginal coverage, mean set size and the share of full sets at one level ``1 − α``."""

    level: float
    coverage: float | None
    mean_set_size: float | None
    full_fraction: float | None
    multi_fraction: float | None = None
    num_classes: int | None = None

    @property
    def relative_set_size(self) -> float | None:
        """Mean set size as a share of the number of classes (1 = every pixel gets the full set)."""
        if self.mean_set_size is None or not self.num_classes:
            return None
        return self.mean_set_size / self.num_classes


@dataclass
class CoverageSummary:
    """What a conformal evaluation measured (the JSON view of a :class:`~segcal.conformal.CoverageResult`):
    CE next to informativeness, averaged over the level grid, and per level ``[A]``."""

    method: str
    mean_ce: float | None
    mean_ce_per_class: list[float | None]
    mean_set_size: float | None
    full_fraction: float | None
    empty_fraction: float | None
    trivial_fraction: float | None
    levels: list[float] = field(default_factory=list)
    marginal_coverage: list[float | None] = field(default_factory=list)
    mean_set_size_per_level: list[float | None] = field(default_factory=list)
    full_fraction_per_level: list[float | None] = field(default_factory=list)
    multi_fraction_per_level: list[float | None] = field(default_factory=list)
    num_classes: int | None = None
    empty_fraction_per_level: list[float | None] = field(default_factory=list)
    trivial_fraction_per_level: list[float | None] = field(default_factory=list)
    trivial_fraction_per_class: list[Any] = field(default_factory=list)
    class_coverage: list[Any] = field(default_factory=list)
    ce_pixels_per_class: list[int] = field(default_factory=list)
    min_test_labels: int | None = None
    num_test_images: int | None = None
    calibration: dict[str, Any] = field(default_factory=dict)

    def at(self, level: float = REPORT_LEVEL) -> LevelSummary | None:
        """Coverage, set size and full sets at ``level`` (``None`` when it is not on the evaluated grid)."""
        hits = [i for i, lv in enumerate(self.levels) if abs(lv - level) < 1e-9]
        if not hits:
            return None
        i = hits[0]
        values = (self.marginal_coverage, self.mean_set_size_per_level, self.full_fraction_per_level,
                  self.multi_fraction_per_level)
        return LevelSummary(level, *(v[i] if i < len(v) else None for v in values),
                            num_classes=self.num_classes or len(self.mean_ce_per_class) or None)

    @property
    def n_cal(self) -> int | None:
        return self.calibration.get("n_cal")

    @property
    def num_groups(self) -> int | None:
        return self.calibration.get("num_groups")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoverageSummary:
        base = {"method": "", "mean_ce": None, "mean_ce_per_class": [], "mean_set_size": None,
                "full_fraction": None, "empty_fraction": None, "trivial_fraction": None}
        return cls(**_known(cls, {**base, **d}))


@dataclass
class Spread:
    """Mean, standard deviation and the 10th / 50th / 90th percentiles of a per-image quantity (NaN skipped)."""

    mean: float | None
    std: float | None
    p10: float | None
    p50: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Any) -> Spread:
        import torch

        v = torch.as_tensor(values, dtype=torch.float64)
        v = v[~v.isnan()]
        if v.numel() == 0:
            return cls(None, None, None, None, None)
        q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        return cls(float(v.mean()), float(v.std()) if v.numel() > 1 else 0.0, *q)


@dataclass
class RiskSummary:
    """What a risk-control evaluation measured: the λ chosen on calibration images (``parameters``: the
    probability ``threshold``, or ``outer_margin`` / ``inner_margin`` in pixels; ``inf`` when infeasible), the
    realized test risk and the spread over test images of the loss and of what the guarantee costs
    (``per_image``: ``loss``, ``fnr``, ``fdr``, ``mask_area``, ``outer_area``, ``band_area``, ``set_size``, ...)."""

    method: str
    loss: str
    procedure: str
    alpha: float
    delta: float | None
    target_class: int | None
    n_cal: int
    feasible: bool
    parameters: dict[str, float]
    calibration_risk: float
    num_test_images: int
    test_risk: float
    images_over_alpha: float
    per_image: dict[str, Spread] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RiskSummary:
        spreads = {k: Spread(**_known(Spread, v)) for k, v in (d.get("per_image") or {}).items() if isinstance(v, dict)}
        return cls(**{**_known(cls, d), "per_image": spreads})


@dataclass
class Recalibration:
    """The recalibrator an evaluation applied and its fit diagnostics (``info_``)."""

    method: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FigureEntry:
    """A figure an evaluation wrote: ``path`` relative to the evaluation folder, ``group`` its report section."""

    key: str
    title: str
    path: str
    group: str


@dataclass
class EvaluationResult:
    """One evaluation: what was measured on which source; parts not measured are ``None`` / empty.

    ``calibration`` holds :class:`CalibrationSummary` by label (``"uncalibrated"``, or the recalibration
    method); ``baseline`` names the evaluation where the uncalibrated model was measured when this one
    measured only what its calibrator changes.
    """

    name: str
    source: dict[str, Any]
    segmentation: SegmentationQuality | None = None
    calibration: dict[str, CalibrationSummary] = field(default_factory=dict)
    recalibration: Recalibration | None = None
    conformal: CoverageSummary | None = None
    risk: RiskSummary | None = None
    baseline: str | None = None
    set_alpha: float | None = None
    figures: list[FigureEntry] = field(default_factory=list)
    seconds: float | None = None

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.source.get("classes") or []]

    def to_dict(self) -> dict[str, Any]:
        """The ``evaluation.json`` content (JSON values, NaN as ``null``)."""
        out = {"schema": SCHEMA, **{f.name: getattr(self, f.name) for f in fields(self)}}
        out["calibration"] = {label: {**r.details, **{k: v for k, v in asdict(r).items() if k != "details"}}
                              for label, r in self.calibration.items()}
        for key in ("segmentation", "recalibration", "conformal", "risk"):
            out[key] = None if out[key] is None else asdict(out[key])
        out["figures"] = [asdict(f) for f in self.figures]
        return plain(out)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationResult:
        """Typed results from :meth:`to_dict` output (or the first layout); ``ValueError`` if it is not one."""
        if not isinstance(d, dict) or not isinstance(d.get("source"), dict):
            raise ValueError("not a segcal evaluation (no 'source' object)")
        seg, recal, conf = d.get("segmentation"), d.get("recalibration"), d.get("conformal")
        return cls(
            name=str(d.get("name", "evaluation")), source=d["source"],
            segmentation=SegmentationQuality.from_dict(seg) if isinstance(seg, dict) else None,
            calibration={label: CalibrationSummary.from_dict(r) for label, r in (d.get("calibration") or {}).items()
                         if isinstance(r, dict)},
            recalibration=Recalibration(**_known(Recalibration, recal)) if isinstance(recal, dict) else None,
            conformal=CoverageSummary.from_dict(conf) if isinstance(conf, dict) else None,
            risk=RiskSummary.from_dict(d["risk"]) if isinstance(d.get("risk"), dict) else None,
            baseline=d.get("baseline"), set_alpha=d.get("set_alpha"),
            figures=[FigureEntry(**_known(FigureEntry, f)) for f in d.get("figures") or []
                     if isinstance(f, dict) and f.get("path")],
            seconds=d.get("seconds"))

    def write(self, folder: str | Path) -> Path:
        """Write ``<folder>/evaluation.json`` atomically."""
        return write_json(Path(folder) / EVALUATION_FILE, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> EvaluationResult:
        """Read an ``evaluation.json``; errors name the file."""
        try:
            return cls.from_dict(read_json(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
