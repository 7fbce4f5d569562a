"""Conformal calibrators for segmentation: pixelwise, imagewise and Kandinsky.

Scores ``s = 1 − p_c`` are collected at pixels labelled ``c`` (class-conditional), pooled per
(class, group) of a grouping, and the threshold at level ``1 − α`` is the finite-sample
conformal quantile of the pooled scores; the prediction set of a pixel is
``{c : s_c ≤ q̂_c(pixel)}``. ::

    cp = KandinskyCalibrator(grouping="kmeans", num_classes=2).fit(stream)   # (logits, labels) batches
    sets = cp.predict_set(logits, alpha=0.1)                                # [N, C, H, W] bool

**Disjoint fit.** A learned grouping is fitted on a share ``split`` of the calibration images
(every ``1/split``-th image, a data-independent rule) and the thresholds on the others, so the
pooled quantiles keep their guarantee. ``split=None`` opts out (grouping and thresholds on the
same images, as in the paper): at small n this under-covers.

**Fallback.** A (class, group) that never saw its class uses the image-level quantile of that
class (counted in ``fallback_pixels``); a class never seen at all gets the trivial threshold 1.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES, MODES, Mode, ScoreAccumulator, ScoreBank
from segcal.conformal.diagnostics import TrivialThresholdWarning, trivial_message
from segcal.conformal.grouping import PixelStatistics, get_grouping, normalise_group_map, pixel_statistics
from segcal.conformal.quantile import (COVERAGE_LEVELS, SortedScores, fallback_pixels, grouped_from_state_dict,
                                       levels_from_alpha, pixel_thresholds)
from segcal.conformal.scores import class_scores, label_scores
from segcal.conformal.selection import DEFAULT_GROUP_CANDIDATES, select_num_groups
from segcal.conformal.sets import prediction_sets
from segcal.errors import no_labels
from segcal.stats.outputs import Head, Kind, as_tensor, check_batch, num_output_classes
from segcal.stats.score_histogram import ScoreBins

NC_CURVE_LEVELS = 100
STATE_FORMAT = "segcal.conformal/1"
_PART_CODES = {"cal": 0, "fit": 1, "val": 2}


def assign_parts(first: int, n: int, split: float | None, with_val: bool = False) -> torch.Tensor:
    """Part code per image (0 = thresholds, 1 = grouping fit, 2 = group-count selection).

    Image ``i`` goes to the grouping part when ``⌊(i+1)·split⌋ > ⌊i·split⌋`` (exactly
    ``⌊N·split⌋`` of the first N images, evenly interleaved); with ``with_val`` every other
    grouping image is held out for selecting the number of groups.
    """
    i = torch.arange(first, first + n, dtype=torch.float64)
    if split is None:
        return torch.zeros(n, dtype=torch.long)
    slack = 1 + 1e-12
    j = torch.floor((i + 1) * split * slack)
    is_fit = j > torch.floor(i * split * slack)
    codes = is_fit.long()
    if with_val:
        codes = torch.where(is_fit & (j.long() % 2 == 0), torch.full_like(codes, 2), codes)
    return codes


class ConformalCalibrator:
    """Class-conditional conformal calibration with a pluggable pixel grouping.

    ``grouping``: a registered name (``"pixel"``, ``"image"``, ``"kmeans"``, ``"annuli"``, …).
    ``num_groups``: for groupings with a configurable count, an int, ``None`` (the grouping's
    default) or ``"auto"`` (chosen on held-out grouping images, from ``group_candidates``).
    ``mode``: score storage, ``"exact"``, ``"histogram"`` or ``"auto"`` (exact up to
    ``max_exact_scores`` labelled pixels). ``kind``/``head``: how predictions are given.
    """

    def __init__(self, grouping: str = "pixel", num_classes: int | None = None, *,
                 num_groups: int | str | None = None, split: float | None = 0.5, kind: Kind = "logits",
                 head: Head = "softmax", ignore_index: int = 255, mode: Mode = "auto",
                 bins: ScoreBins | None = None, max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES,
                 group_candidates: tuple[int, ...] = DEFAULT_GROUP_CANDIDATES, seed: int = 0) -> None:
        self.spec = get_grouping(grouping)
        if split is not None and not 0 < split < 1:
            raise ValueError(f"split must be None or lie strictly between 0 and 1, got {split!r}")
        if num_groups is not None and self.spec.num_groups is not None:
            raise ValueError(f"grouping {grouping!r} has a fixed number of groups; do not pass num_groups")
        if not (num_groups is None or num_groups == "auto" or (isinstance(num_groups, int) and num_groups >= 1)):
            raise ValueError(f"num_groups must be a positive int, None or 'auto', got {num_groups!r}")
        if num_groups == "auto" and (split is None or not self.spec.learned):
            raise ValueError("num_groups='auto' needs a learned grouping and a split (held-out images)")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.num_groups_requested = num_groups
        self.split = split if self.spec.learned else None
        self.kind, self.head, self.ignore_index = kind, head, ignore_index
        self.mode, self.bins, self.max_exact_scores = mode, bins or ScoreBins(), max_exact_scores
        self.group_candidates = tuple(int(k) for k in group_candidates)
        self.seed = int(seed)
        self.shape: tuple[int, int] | None = None
        self.group_map: torch.Tensor | None = None  # [C, H, W] int64
        self.num_groups: int | None = None
        self.scores = None  # pooled per (class, group): SortedScores or ScoreHistogram
        self.image_scores = None  # pooled per class (G = 1), the fallback
        self.num_images: dict[str, int] = {}
        self.selection: dict[int, float] = {}
        self.fallback_pixels: torch.Tensor | None = None  # [C]
        self._cache: dict[float, torch.Tensor] = {}
        self._warned: set[float] = set()

    @property
    def grouping(self) -> str:
        return self.spec.name

    @property
    def method(self) -> str:
        """``pixelwise``, ``imagewise``, ``kandinsky-<grouping>``, or ``kandinsky-auto`` (k-means, count chosen)."""
        if self.grouping == "kmeans" and self.num_groups_requested == "auto":
            return "kandinsky-auto"
        return {"pixel": "pixelwise", "image": "imagewise"}.get(self.grouping, f"kandinsky-{self.grouping}")

    @property
    def n_cal(self) -> int:
        """Calibration images used (grouping + thresholds)."""
        return sum(self.num_images.values())

    def _parts(self) -> tuple[str, ...]:
        if self.split is None:
            return ("cal",)
        return ("cal", "fit", "val") if self.num_groups_requested == "auto" else ("cal", "fit")

    def _new_accumulator(self) -> ScoreAccumulator:
        return ScoreAccumulator(self.num_classes, self.shape, self.mode, self.bins, self.max_exact_scores)

    # ----------------------------------------------------------------------------------- fitting
    def fit(self, stream: Iterable[tuple[torch.Tensor, torch.Tensor]], *, kind: Kind | None = None,
            head: Head | None = None, n_cal: int | None = None, sync_dist: bool | None = None
            ) -> ConformalCalibrator:
        """Calibrate on ``(preds [N, C, H, W], labels [N, H, W])`` batches (logits or probs per ``kind``).

        ``n_cal``: use the first ``n_cal`` images (``ValueError`` if the stream has fewer).
        ``sync_dist``: combine the scores of all ``torch.distributed`` ranks (default: when
        initialised); the split rule then applies per rank.
        """
        self.kind, self.head, self.shape = kind or self.kind, head or self.head, None
        if n_cal is not None and n_cal < 1:
            raise ValueError(f"n_cal must be a positive int, got {n_cal!r}")
        parts: dict[str, ScoreAccumulator] = {}
        seen = 0
        for batch in stream:
            preds, labels = as_tensor(batch[0], "preds"), as_tensor(batch[1], "labels")
            if n_cal is not None:
                preds, labels = preds[: n_cal - seen], labels[: n_cal - seen]
            if preds.shape[0] == 0:
                break
            s, y = self._label_scores(preds, labels)
            if not parts:
                parts = {name: self._new_accumulator() for name in self._parts()}
            codes = assign_parts(seen, s.shape[0], self.split, "val" in parts)
            for name, acc in parts.items():
                keep = codes == _PART_CODES[name]
                acc.update(s[keep], y[keep])
            seen += s.shape[0]
            if n_cal is not None and seen >= n_cal:
                break  # do not pull (run the model on) another batch
        if n_cal is not None and seen < n_cal:
            raise ValueError(f"n_cal={n_cal} is larger than the {seen} calibration images available")
        if seen == 0:
            raise ValueError("the calibration stream is empty")
        if sync_dist or (sync_dist is None and dist.is_available() and dist.is_initialized()):
            for acc in parts.values():
                acc.all_reduce()
        return self.fit_parts(parts)

    def _label_scores(self, preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(preds, labels, self.num_classes, self.ignore_index, self.kind, self.head)
        shape = tuple(preds.shape[2:])
        if self.num_classes is None:
            self.num_classes = num_output_classes(preds.shape[1], self.head)
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise ValueError(f"image size {shape} differs from the first calibration batch's {self.shape}")
        s, y = label_scores(preds, labels, self.kind, self.head, self.ignore_index)
        return s.cpu(), y.cpu()  # calibration statistics live on the CPU

    def fit_bank(self, bank: ScoreBank) -> ConformalCalibrator:
        """Calibrate on exact per-image scores (e.g. a random subset of a pool, for the n_cal sweep)."""
        if self.num_classes is not None and bank.num_classes != self.num_classes:
            raise ValueError(f"bank has {bank.num_classes} classes but num_classes={self.num_classes}")
        if len(bank) == 0:
            raise ValueError("the calibration bank is empty")
        self.num_classes, self.shape = bank.num_classes, bank.shape
        codes = assign_parts(0, len(bank), self.split, "val" in self._parts())
        parts = {}
        for name in self._parts():
            acc = ScoreAccumulator.wrap(bank.subset(torch.nonzero(codes == _PART_CODES[name]).flatten()))
            parts[name] = acc.to_histogram() if self.mode == "histogram" else acc
        return self.fit_parts(parts)

    def fit_parts(self, parts: dict[str, ScoreAccumulator]) -> ConformalCalibrator:
        """Fit the grouping and the thresholds from accumulated scores (``"cal"``, ``"fit"``, ``"val"``)."""
        if any(acc.store is not None and not acc.exact for acc in parts.values()):
            for acc in parts.values():
                acc.to_histogram()
        cal = parts["cal"]
        need = {name: acc.num_images for name, acc in parts.items()}
        if min(need.values()) == 0:
            raise ValueError(f"too few calibration images for the split: images per part {need}"
                             " (need at least one image in each)")
        self.num_classes, self.shape = cal.num_classes, cal.shape
        c, (h, w) = self.num_classes, self.shape
        image_scores = cal.pool(torch.zeros(c, h * w, dtype=torch.long), 1)
        if int(image_scores.group_counts().sum()) == 0:
            raise no_labels(self.ignore_index, "the calibration images")
        stats = PixelStatistics(c, (h, w))
        k = self.spec.num_groups
        if self.spec.learned:
            fit = parts.get("fit", cal)
            k = self.num_groups_requested or self.spec.default_groups
            if k == "auto":
                k, self.selection = select_num_groups(self.spec, fit, parts["val"], self.group_candidates,
                                                      torch.tensor(COVERAGE_LEVELS, dtype=torch.float64), self.seed)
                fit = fit + parts["val"]
            stats = pixel_statistics(fit, self.spec.feature_levels)
        self.group_map, self.num_groups = normalise_group_map(self.spec.fn(stats, k, self.seed), c, (h, w))
        flat_map = self.group_map.view(c, -1)
        pixelwise = torch.equal(flat_map, torch.arange(h * w).expand(c, -1))
        self.scores = cal.per_pixel() if pixelwise else cal.pool(flat_map, self.num_groups)
        self.image_scores = image_scores
        self.num_images = need
        self.fallback_pixels = fallback_pixels(self.scores, self.group_map)
        self._cache, self._warned = {}, set()
        return self

    # -------------------------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        if self.group_map is None:
            raise ValueError("the calibrator is not fitted: call fit(...) or load a state_dict with nc_curves")

    def thresholds_at(self, levels: torch.Tensor) -> torch.Tensor:
        """Per-pixel thresholds ``[A, C, H, W]`` at coverage levels ``[A]`` (exact order statistics)."""
        self._check_fitted()
        return pixel_thresholds(self.scores, self.image_scores, self.group_map,
                                torch.as_tensor(levels, dtype=torch.float64).reshape(-1))

    def thresholds(self, alpha: float) -> torch.Tensor:
        """Per-pixel thresholds ``q̂ [C, H, W]`` for miscoverage ``alpha ∈ (0, 1)``."""
        level = float(levels_from_alpha(alpha)[0])
        if level not in self._cache:
            if len(self._cache) >= 8:
                self._cache.clear()
            self._cache[level] = self.thresholds_at(torch.tensor([level], dtype=torch.float64))[0]
        return self._cache[level]

    def nc_curves(self, num_levels: int = NC_CURVE_LEVELS) -> torch.Tensor:
        """Non-conformity curves ``[Q, C, H, W]``: thresholds at levels ``linspace(0, 1, Q)``."""
        return self.thresholds_at(torch.linspace(0, 1, num_levels, dtype=torch.float64))

    def check_preds(self, preds: torch.Tensor, head: Head | None = None) -> None:
        """``ValueError`` unless ``preds [N, C, H, W]`` match the calibrated classes and image size."""
        self._check_fitted()
        head = head or self.head
        if preds.ndim != 4:
            raise ValueError(f"preds must have shape [N, C, H, W], got {tuple(preds.shape)}")
        if not torch.isfinite(preds).all():
            raise ValueError("preds contain NaN or inf values (fit rejects them too): check the model outputs")
        classes = num_output_classes(preds.shape[1], head)
        if classes != self.num_classes:
            raise ValueError(f"preds have {preds.shape[1]} channels ({classes} classes with a {head} head)"
                             f" but the calibrator was fitted on {self.num_classes} classes")
        if tuple(preds.shape[2:]) != self.shape:
            raise ValueError(f"preds have image size {tuple(preds.shape[2:])} but the calibrator was fitted"
                             f" on {self.shape} images (resize to the calibration size)")

    def class_scores(self, preds: torch.Tensor, kind: Kind | None = None, head: Head | None = None) -> torch.Tensor:
        """Checked scores of every class ``[N, C, H, W]``."""
        preds = as_tensor(preds, "preds")
        self.check_preds(preds, head)
        return class_scores(preds, kind or self.kind, head or self.head)

    def predict_set(self, preds: torch.Tensor, alpha: float, kind: Kind | None = None,
                    head: Head | None = None) -> torch.Tensor:
        """Prediction sets ``[N, C, H, W]`` (bool) at miscoverage ``alpha`` for ``preds [N, C, H, W]``."""
        scores = self.class_scores(preds, kind, head)
        thresholds = self.thresholds(alpha)
        self.warn_if_trivial(alpha, thresholds)
        return prediction_sets(scores, thresholds.to(scores.device))

    def trivial_warning(self, alpha: float, thresholds: torch.Tensor | None = None) -> str | None:
        """A warning text when many thresholds at ``alpha`` are trivial (too few scores), else ``None``."""
        thresholds = self.thresholds(alpha) if thresholds is None else thresholds
        return trivial_message(thresholds, alpha, self.grouping == "pixel", self.num_images.get("cal", 0))

    def warn_if_trivial(self, alpha: float, thresholds: torch.Tensor | None = None) -> None:
        """:class:`TrivialThresholdWarning` once per level when many thresholds at ``alpha`` are trivial."""
        if alpha not in self._warned:
            self._warned.add(alpha)
            message = self.trivial_warning(alpha, thresholds)
            if message:
                warnings.warn(message, TrivialThresholdWarning, stacklevel=3)

    # --------------------------------------------------------------------------------- reporting
    def info(self) -> dict[str, Any]:
        """JSON-serialisable description of the fitted calibrator."""
        self._check_fitted()
        return {"method": self.method, "grouping": self.grouping, "num_groups": self.num_groups,
                "num_groups_requested": self.num_groups_requested, "split": self.split, "seed": self.seed,
                "n_cal": self.n_cal, "images_per_part": dict(self.num_images),
                "storage": "exact" if isinstance(self.scores, SortedScores) else "histogram",
                "fallback_pixels": [int(v) for v in self.fallback_pixels],
                "group_selection": {str(k): v for k, v in self.selection.items()}}

    def state_dict(self, include_curves: bool = True) -> dict[str, Any]:
        """Plain tensors + metadata: ``group_map [C, H, W]``, ``n_per_group [C, G]`` (calibration scores
        pooled per class and group), the stored scores, and the level grid ``nc_levels [Q]`` with
        ``nc_curves [Q, C, H, W]`` unless ``include_curves=False``."""
        state = {"format": STATE_FORMAT, **self.info(), "num_classes": self.num_classes,
                 "shape": list(self.shape), "kind": self.kind, "head": self.head,
                 "ignore_index": self.ignore_index, "mode": self.mode, "bins": self.bins.state_dict(),
                 "max_exact_scores": self.max_exact_scores, "group_candidates": list(self.group_candidates),
                 "group_map": self.group_map, "n_per_group": self.scores.group_counts(),  # [C, G] scores
                 "scores": self.scores.state_dict(),
                 "image_scores": self.image_scores.state_dict()}
        if include_curves:
            state["nc_levels"] = torch.linspace(0, 1, NC_CURVE_LEVELS, dtype=torch.float64)
            state["nc_curves"] = self.nc_curves()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ConformalCalibrator:
        """Rebuild a fitted calibrator from :meth:`state_dict` (``ValueError`` if it is not one)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "scores" not in state:
            raise ValueError(f"not a segcal conformal calibrator state (expected format {STATE_FORMAT!r}"
                             " with nc_curves and scores)")
        klass = {"pixel": PixelwiseCalibrator, "image": ImagewiseCalibrator}.get(state["grouping"],
                                                                                KandinskyCalibrator)
        obj = klass.__new__(klass)
        ConformalCalibrator.__init__(
            obj, state["grouping"], state["num_classes"], num_groups=state["num_groups_requested"],
            split=state["split"], kind=state["kind"], head=state["head"], ignore_index=state["ignore_index"],
            mode=state["mode"], bins=ScoreBins.from_state_dict(state["bins"]),
            max_exact_scores=state["max_exact_scores"], group_candidates=tuple(state["group_candidates"]),
            seed=state["seed"])
        obj.shape = tuple(state["shape"])
        obj.group_map = state["group_map"].long()
        obj.num_groups = int(state["num_groups"])
        obj.scores = grouped_from_state_dict(state["scores"])
        obj.image_scores = grouped_from_state_dict(state["image_scores"])
        obj.num_images = dict(state["images_per_part"])
        obj.selection = {int(k): float(v) for k, v in state["group_selection"].items()}
        obj.fallback_pixels = torch.tensor(state["fallback_pixels"])
        return obj


class PixelwiseCalibrator(ConformalCalibrator):
    """Every pixel is its own group (no pooling)."""

    def __init__(self, num_classes: int | None = None, **kwargs: Any) -> None:
        super().__init__("pixel", num_classes, **kwargs)


class ImagewiseCalibrator(ConformalCalibrator):
    """All pixels pooled per class (one threshold per class)."""

    def __init__(self, num_classes: int | None = None, **kwargs: Any) -> None:
        super().__init__("image", num_classes, **kwargs)


class KandinskyCalibrator(ConformalCalibrator):
    """Pixels grouped by a learned grouping (``"kmeans"`` default, ``"annuli"``, or any registered one)."""

    def __init__(self, grouping: str = "kmeans", num_classes: int | None = None, **kwargs: Any) -> None:
        super().__init__(grouping, num_classes, **kwargs)
        if not self.spec.learned:
            raise ValueError(f"Kandinsky calibration needs a learned grouping, got {grouping!r}")

