"""Streaming coverage evaluation of a fitted conformal calibrator on test images.

Over a grid of nominal levels ``1 − α`` (default 0.05, 0.10, …, 0.95), per pixel and class:
empirical coverage = fraction of test images labelled ``c`` at that pixel whose set contains
``c``. The per-pixel coverage error is ``CE = mean over the grid of |coverage − (1 − α)|``,
reported as a map ``[C, H, W]`` and as means over the (pixel, class) pairs with at least
``min_test_labels`` test labels (the others are NaN in the map and excluded). Because CE alone
rewards giving up (full sets), informativeness is always reported next to it: mean set size,
fractions of empty / full sets and of trivial thresholds (``q̂ = 1``), per level.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from segcal.batch import unpack_item
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.conformal.quantile import COVERAGE_LEVELS, levels_from_alpha
from segcal.conformal.scores import valid_labels
from segcal.conformal.sets import (
    LevelHistogram,
    add_small_counts,
    cumulate_levels,
    first_covering_level,
    labelled_levels,
    labelled_view,
)
from segcal.io.jsonio import plain
from segcal.outputs import Head, Kind
from segcal.stats.score_histogram import all_reduce_

MIN_TEST_LABELS = 10
SUMMARY_LEVEL = 0.9


def level_key(name: str, level: float = SUMMARY_LEVEL) -> str:
    """The column of ``name`` at one coverage level in flat records (sweep rows): ``coverage_at_0.9``."""
    return f"{name}_at_{level:g}"


def _floats(t: torch.Tensor) -> Any:
    """Tensor → float or nested lists of floats, NaN → None (JSON)."""
    return plain(t.double())


@dataclass
class CoverageResult:
    """Coverage of a calibrator on a test set (tensors; :meth:`to_dict` for JSON).

    Maps: ``coverage [A, C, H, W]`` (NaN where no test label), ``label_counts [C, H, W]``,
    ``ce_map [C, H, W]`` (NaN below ``min_test_labels``), ``set_size_map [A, H, W]``.
    Per level ``[A]``: ``marginal_coverage``, ``mean_set_size``, ``empty_fraction``,
    ``full_fraction``, ``multi_fraction`` (sets holding more than one class), ``trivial_fraction``;
    per level and class ``[A, C]``: ``class_coverage``, ``trivial_fraction_per_class``.
    """

    method: str
    levels: torch.Tensor
    coverage: torch.Tensor
    label_counts: torch.Tensor
    ce_map: torch.Tensor
    set_size_map: torch.Tensor
    marginal_coverage: torch.Tensor
    class_coverage: torch.Tensor
    mean_set_size: torch.Tensor
    empty_fraction: torch.Tensor
    full_fraction: torch.Tensor
    multi_fraction: torch.Tensor
    trivial_fraction: torch.Tensor
    trivial_fraction_per_class: torch.Tensor
    min_test_labels: int
    num_test_images: int
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.coverage.shape[1])

    @property
    def mean_ce_per_class(self) -> torch.Tensor:
        """Mean CE per class ``[C]`` over pixels with enough test labels (NaN if none)."""
        return torch.nanmean(self.ce_map.flatten(1).double(), dim=1)

    @property
    def mean_ce(self) -> float:
        """Mean CE over all (pixel, class) pairs with enough test labels."""
        return float(torch.nanmean(self.ce_map.double()))

    @property
    def ce_pixels(self) -> torch.Tensor:
        """(Pixel, class) pairs entering the mean CE, per class ``[C]``."""
        return (~torch.isnan(self.ce_map)).flatten(1).sum(1)

    def level_index(self, alpha: float) -> int:
        """Index of the grid level ``1 − alpha`` (``ValueError`` if it is not on the grid)."""
        level = float(levels_from_alpha(alpha)[0])
        hits = torch.nonzero((self.levels - level).abs() < 1e-9).flatten()
        if hits.numel() == 0:
            raise ValueError(f"alpha={alpha} is not on the evaluated grid 1 − α ∈ {self.levels.tolist()}")
        return int(hits[0])

    def summary(self) -> dict[str, Any]:
        """Headline numbers: CE next to informativeness (averages over the level grid)."""
        at90 = [i for i, lv in enumerate(self.levels.tolist()) if abs(lv - 0.9) < 1e-9]
        out = {"method": self.method, "mean_ce": _floats(torch.tensor(self.mean_ce)),
               "mean_ce_per_class": _floats(self.mean_ce_per_class),
               "mean_set_size": float(self.mean_set_size.mean()),
               "full_fraction": float(self.full_fraction.mean()),
               "empty_fraction": float(self.empty_fraction.mean()),
               "trivial_fraction": float(self.trivial_fraction.mean())}
        if at90:
            i = at90[0]
            out.update({level_key("coverage"): float(self.marginal_coverage[i]),
                        level_key("mean_set_size"): float(self.mean_set_size[i]),
                        level_key("full_fraction"): float(self.full_fraction[i]),
                        level_key("multi_fraction"): float(self.multi_fraction[i])})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary, per-level curves and CE settings (no per-pixel maps)."""
        return {**self.summary(), "num_classes": self.num_classes, "levels": self.levels.tolist(),
                "min_test_labels": self.min_test_labels, "num_test_images": self.num_test_images,
                "ce_pixels_per_class": [int(v) for v in self.ce_pixels],
                "marginal_coverage": _floats(self.marginal_coverage),
                "class_coverage": _floats(self.class_coverage),
                "mean_set_size_per_level": _floats(self.mean_set_size),
                "empty_fraction_per_level": _floats(self.empty_fraction),
                "full_fraction_per_level": _floats(self.full_fraction),
                "multi_fraction_per_level": _floats(self.multi_fraction),
                "trivial_fraction_per_level": _floats(self.trivial_fraction),
                "trivial_fraction_per_class": _floats(self.trivial_fraction_per_class),
                "calibration": self.calibration}


COMPUTE_PIXELS = 1 << 16
"""Pixels per chunk when coverage maps are computed from the level histograms."""


class CoverageAccumulator:
    """Streaming coverage statistics of ``calibrator`` (sums: mergeable and all-reducible).

    ``update(preds, labels)`` with ``preds [N, C, H, W]`` (logits/probs), or ``update_scores``
    with class scores already computed (e.g. cached once for a sweep over many calibrators). The statistics
    move to the device of the first batch (a GPU's scores never travel to the CPU per batch) and back to
    the CPU in :meth:`compute`.
    """

    def __init__(self, calibrator: ConformalCalibrator, alphas: Iterable[float] | None = None,
                 min_test_labels: int = MIN_TEST_LABELS) -> None:
        if min_test_labels < 1:
            raise ValueError(f"min_test_labels must be at least 1, got {min_test_labels}")
        levels = (torch.tensor(COVERAGE_LEVELS, dtype=torch.float64) if alphas is None
                  else levels_from_alpha(list(alphas), "alphas"))
        self.calibrator, self.min_test_labels = calibrator, int(min_test_labels)
        self.levels = levels.sort().values  # ascending: thresholds are then nondecreasing along A
        self.thresholds = calibrator.thresholds_at(self.levels).float()  # [A, C, H, W], nondecreasing in A
        self._thresholds_acp = self.thresholds.flatten(2)  # [A, C, H·W]
        a, c, h, w = self.thresholds.shape
        # level histograms (column = first level whose set holds the class), pixel-major, cumulated
        # in compute(); the last column (a + 1) collects pixels without a label
        self.covered_hist = LevelHistogram(h * w * c, a + 2)  # rows p·C + label: the labelled class
        self.size_hist = LevelHistogram(h * w, a + 2)  # rows p: the other classes (set size adds both)
        self._pixels = torch.arange(h * w)
        self._others = (torch.arange(c).view(c, 1) + torch.arange(1, c)) % c  # [C, C − 1]: classes ≠ label
        self.min_hist = torch.zeros(a + 2, dtype=torch.long)  # empty set ⟺ level < min_c first_c
        self.max_hist = torch.zeros(a + 2, dtype=torch.long)  # full set ⟺ level ≥ max_c first_c
        self.second_hist = torch.zeros(a + 2, dtype=torch.long)  # > 1 class ⟺ level ≥ 2nd smallest first_c
        self.num_images = 0

    def update(self, preds: torch.Tensor, labels: torch.Tensor, kind: Kind | None = None,
               head: Head | None = None) -> None:
        self.update_scores(self.calibrator.class_scores(preds, kind, head), labels)

    def update_scores(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a test batch: class scores ``[N, C, H, W]`` and labels ``[N, H, W]``."""
        if tuple(scores.shape[1:]) != tuple(self.thresholds.shape[1:]) or labels.shape != scores[:, 0].shape:
            raise ValueError(f"test scores {tuple(scores.shape)} / labels {tuple(labels.shape)} do not match"
                             f" the calibration classes and image size {tuple(self.thresholds.shape[1:])}")
        if scores.device != self.min_hist.device:
            self.to(scores.device)  # once: the statistics follow the batches
        labels = labels.to(scores.device)
        n, c, h, w = scores.shape
        a, p = len(self.levels), h * w
        y = valid_labels(labels, c, self.calibrator.ignore_index).view(n, p)  # -1 = skip
        first = first_covering_level(self._thresholds_acp, scores.reshape(n, c, p))  # [N, C, P] uint8
        unlabelled = (y < 0).unsqueeze(1)
        if bool(unlabelled.any()):
            first = first.masked_fill(unlabelled, a + 1)  # pixels without a label go to the last column
        self.covered_hist.add(*labelled_levels(first, y))
        others = self._others[y.clamp_min(0)].permute(0, 2, 1)  # [N, C − 1, P]
        self.size_hist.add(first.gather(1, others).reshape(-1, p), self._pixels.expand(n * (c - 1), p))
        lo, hi, second = first[:, 0], first[:, 0], torch.full_like(first[:, 0], a + 1)
        for k in range(1, c):  # elementwise: faster than a reduction over the class axis
            second = torch.minimum(second, torch.maximum(lo, first[:, k]))
            lo, hi = torch.minimum(lo, first[:, k]), torch.maximum(hi, first[:, k])
        add_small_counts(self.min_hist, lo)  # unlabelled: a + 1 in every class, so in the last bin
        add_small_counts(self.max_hist, hi)
        add_small_counts(self.second_hist, second)
        self.num_images += n

    def to(self, device: torch.device | str) -> CoverageAccumulator:
        """In place: move the thresholds and statistics to ``device``; returns ``self``."""
        self.covered_hist.to(device)
        self.size_hist.to(device)
        for name in ("thresholds", "_thresholds_acp", "_pixels", "_others", "min_hist", "max_hist", "second_hist"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def counts(self) -> torch.Tensor:
        """Test labels per class and pixel ``[C, H·W]``."""
        c, p = self._thresholds_acp.shape[1:]
        return labelled_view(self.covered_hist.total(), c).sum(-1).T

    def _state(self) -> list[torch.Tensor]:
        return [self.covered_hist.total(), self.size_hist.total(), self.min_hist, self.max_hist, self.second_hist]

    def merge(self, other: CoverageAccumulator) -> CoverageAccumulator:
        for mine, theirs in zip(self._state(), other._state()):
            mine += theirs
        self.num_images += other.num_images
        return self

    def all_reduce(self, group: Any = None) -> CoverageAccumulator:
        """Sum the statistics of all ``torch.distributed`` ranks in place."""
        for t in self._state():
            all_reduce_(t, group=group)
        self.num_images = int(all_reduce_(torch.tensor([self.num_images]), group=group).item())
        return self

    def compute(self) -> CoverageResult:
        if self.num_images == 0:
            raise ValueError("no test images were evaluated")
        self.to("cpu")
        a, c, h, w = self.thresholds.shape
        labelled = labelled_view(self.covered_hist.total(), c)  # [P, C, A + 1]
        cnt = labelled.sum(-1).long()  # [P, C] (summed in int32: no int64 copy of the histogram)
        coverage = torch.empty(a, c, h * w, dtype=torch.float64)
        ce = torch.empty(h * w, c, dtype=torch.float64)
        covered_per_class = torch.zeros(a, c, dtype=torch.long)
        for start in range(0, h * w, COMPUTE_PIXELS):  # pixel chunks (slices: views): bounded temporaries
            rows = slice(start, start + COMPUTE_PIXELS)
            covered = labelled[rows, :, :-1].cumsum(-1, dtype=torch.long)  # [p, C, A]
            part = (covered / cnt[rows].clamp_min(1).double().unsqueeze(-1))
            part = part.masked_fill_(cnt[rows].unsqueeze(-1) == 0, float("nan"))
            ce[rows] = (part - self.levels).abs_().mean(-1)
            coverage[:, :, rows] = part.permute(2, 1, 0)
            covered_per_class += covered.sum(0).T
        ce_map = ce.masked_fill_(cnt < self.min_test_labels, float("nan")).T.reshape(c, h, w)
        coverage = coverage.view(a, c, h, w)
        sizes = self.size_hist.total()[:, :-1] + labelled.sum(1)  # [P, A + 1]: every class
        size_sum = sizes[:, :-1].cumsum(-1).T.view(a, h, w)
        pixels = sizes.sum(-1).view(h, w) // c  # labelled pixels
        total = float(pixels.sum().clamp_min(1))
        cnt_per_class = cnt.sum(0)  # [C]
        trivial = self.thresholds >= 1.0
        return CoverageResult(
            method=self.calibrator.method, levels=self.levels, coverage=coverage, label_counts=cnt.T.reshape(c, h, w),
            ce_map=ce_map, set_size_map=size_sum / pixels.clamp_min(1).double(),
            marginal_coverage=covered_per_class.sum(1).double() / float(cnt_per_class.sum().clamp_min(1)),
            class_coverage=covered_per_class.double() / cnt_per_class.clamp_min(1).double(),
            mean_set_size=size_sum.sum((1, 2)).double() / total,
            empty_fraction=1 - cumulate_levels(self.min_hist[:-1]).double() / total,
            full_fraction=cumulate_levels(self.max_hist[:-1]).double() / total,
            multi_fraction=cumulate_levels(self.second_hist[:-1]).double() / total,
            trivial_fraction=torch.count_nonzero(trivial.flatten(1), 1).double() / (c * h * w),  # no int64 copy
            trivial_fraction_per_class=torch.count_nonzero(trivial.flatten(2), 2).double() / (h * w),
            min_test_labels=self.min_test_labels, num_test_images=self.num_images,
            calibration=self.calibrator.info_)


def evaluate_coverage(calibrator: ConformalCalibrator, stream: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      alphas: Iterable[float] | None = None, min_test_labels: int = MIN_TEST_LABELS,
                      kind: Kind | None = None, head: Head | None = None,
                      sync_dist: bool | None = None) -> CoverageResult:
    """Coverage of ``calibrator`` on ``(preds, labels)`` test batches (see :class:`CoverageResult`)."""
    acc = CoverageAccumulator(calibrator, alphas, min_test_labels)
    for batch in stream:
        preds, labels, _ = unpack_item(batch)
        acc.update(preds, labels, kind, head)
    if sync_dist or (sync_dist is None and dist.is_available() and dist.is_initialized()):
        acc.all_reduce()
    return acc.compute()
