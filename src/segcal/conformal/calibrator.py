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

from segcal.batch import calibration_batches
from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES, MODES, Mode, ScoreAccumulator, ScoreBank
from segcal.conformal.diagnostics import TrivialThresholdWarning, trivial_message
from segcal.conformal.grid import check_grid, grid_shape, stats_shape, stats_storage, to_blocks, to_pixels, to_stats
from segcal.conformal.grouping import PixelStatistics, get_grouping, normalise_group_map, pixel_statistics
from segcal.conformal.parts import assign_parts
from segcal.conformal.quantile import (
    COVERAGE_LEVELS,
    SortedScores,
    fallback_pixels,
    levels_from_alpha,
    pixel_thresholds,
)
from segcal.conformal.scores import get_score, scores_at_labels
from segcal.conformal.selection import DEFAULT_GROUP_CANDIDATES, select_num_groups
from segcal.conformal.sets import prediction_sets
from segcal.conformal.state import NC_CURVE_LEVELS, conformal_state, split_state
from segcal.errors import no_labels
from segcal.estimator import Estimator
from segcal.outputs import Head, Kind, as_tensor, check_fitted_preds
from segcal.stats.score_histogram import ScoreBins

SCORE_CHUNK_BYTES = 64 * 2**20
"""Images scored together while fitting: at most this many bytes of one score tensor."""


class ConformalCalibrator(Estimator):
    """Class-conditional conformal calibration with a pluggable pixel grouping and conformity score.

    Parameters (stored as given): ``grouping``, a registered name (``"pixel"``, ``"image"``,
    ``"kmeans"``, ``"annuli"``, …); ``num_classes`` (``None``: from the data); ``marginal`` (pool the true-class
    scores of every class into one threshold per group, as MAPIE and TorchCP do by default, instead of one per
    class: coverage holds over all pixels, not per class); ``num_groups`` for groupings
    with a configurable count, an int, ``None`` (the grouping's default) or ``"auto"`` (chosen on held-out
    grouping images, from ``group_candidates``); ``split``, the share of images that fit a learned grouping;
    ``score``, a registered conformity score (``"lac"``: ``1 − p``); ``kind``/``head``, how predictions are
    given; ``mode``, score storage (``"exact"``, ``"histogram"`` or ``"auto"``: exact up to
    ``max_exact_scores`` labelled pixels, imagewise up to 2²⁴ and then 65,536 pooled bins, see
    :func:`~segcal.conformal.grid.stats_storage`); ``bins`` (histogram bins, default :class:`ScoreBins`); ``grid``, the
    side of the pixel blocks a learned grouping is fitted on (:mod:`segcal.conformal.grid`; 1: every pixel);
    ``seed``.

    Fitted attributes: ``num_classes_``, ``shape_`` ``(H, W)``, ``group_map_ [C, H, W]``, ``num_groups_``,
    ``scores_`` (pooled per class and group), ``image_scores_`` (per class, the fallback),
    ``images_per_part_``, ``group_selection_``, ``fallback_pixels_ [C]``.
    """

    def __init__(self, grouping: str = "pixel", num_classes: int | None = None, *,
                 num_groups: int | str | None = None, split: float | None = 0.5, score: str = "lac",
                 marginal: bool = False,
                 kind: Kind = "logits", head: Head = "softmax", ignore_index: int = 255, mode: Mode = "auto",
                 bins: ScoreBins | None = None, max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES,
                 group_candidates: tuple[int, ...] = DEFAULT_GROUP_CANDIDATES, grid: int = 1, seed: int = 0) -> None:
        self.grouping, self.num_classes, self.num_groups, self.split = grouping, num_classes, num_groups, split
        self.marginal, self.grid = marginal, grid
        self.score, self.kind, self.head, self.ignore_index = score, kind, head, ignore_index
        self.mode, self.bins, self.max_exact_scores = mode, bins, max_exact_scores
        self.group_candidates, self.seed = group_candidates, seed
        self._validate_params()
        self._cache: dict[float, torch.Tensor] = {}
        self._warned: set[float] = set()

    def _validate_params(self) -> None:
        spec, num_groups, split = self.spec, self.num_groups, self.split
        if split is not None and not 0 < split < 1:
            raise ValueError(f"split must be None or lie strictly between 0 and 1, got {split!r}")
        if num_groups is not None and spec.num_groups is not None:
            raise ValueError(f"grouping {self.grouping!r} has a fixed number of groups; do not pass num_groups")
        if not (num_groups is None or num_groups == "auto" or (isinstance(num_groups, int) and num_groups >= 1)):
            raise ValueError(f"num_groups must be a positive int, None or 'auto', got {num_groups!r}")
        if num_groups == "auto" and (split is None or not spec.learned):
            raise ValueError("num_groups='auto' needs a learned grouping and a split (held-out images)")
        if check_grid(self.grid) > 1 and not spec.learned:
            raise ValueError(f"grid applies to learned groupings (kandinsky-*) and the local method; {self.grouping}"
                             f" calibration keeps {'every pixel its own' if self.grouping == 'pixel' else 'no'}"
                             " per-pixel statistics: use grid=1")
        self._check_common_params()

    def _check_common_params(self) -> None:
        """Checks shared by every conformal method: ``mode``, ``num_classes``, ``score``, ``marginal``."""
        if not isinstance(self.marginal, bool):
            raise ValueError(f"marginal must be True or False, got {self.marginal!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        get_score(self.score)

    @property
    def spec(self):
        """The registered grouping (:class:`~segcal.conformal.grouping.GroupingSpec`)."""
        return get_grouping(self.grouping)

    @property
    def split_(self) -> float | None:
        """The split used: ``split`` for a learned grouping, else ``None`` (nothing to fit)."""
        return self.split if self.spec.learned else None

    @property
    def method(self) -> str:
        """The method's one name (the same in the CLI, results and files): ``pixel``, ``image``,
        ``kandinsky-<grouping>``, or ``kandinsky-auto`` (k-means, number of groups chosen)."""
        if self.grouping == "kmeans" and self.num_groups == "auto":
            return "kandinsky-auto"
        return self.grouping if self.grouping in ("pixel", "image") else f"kandinsky-{self.grouping}"

    @property
    def n_cal_(self) -> int:
        """Calibration images used (grouping + thresholds)."""
        self.check_is_fitted()
        return sum(self.images_per_part_.values())

    def _parts(self) -> tuple[str, ...]:
        if self.split_ is None:
            return ("cal",)
        return ("cal", "fit", "val") if self.num_groups == "auto" else ("cal", "fit")

    def _part_codes(self, first: int, n: int) -> torch.Tensor:
        """The part (index into :meth:`_parts`: cal, fit, val) of images ``first … first + n − 1``."""
        return assign_parts(first, n, self.split_, "val" in self._parts())

    # ----------------------------------------------------------------------------------- fitting
    def fit(self, stream: Iterable[tuple[torch.Tensor, torch.Tensor]], *, n_cal: int | None = None,
            sync_dist: bool | None = None) -> ConformalCalibrator:
        """Calibrate on ``(preds [N, C, H, W], labels [N, H, W])`` batches (logits or probs per ``kind``).

        ``n_cal``: use the first ``n_cal`` images (``ValueError`` if the stream has fewer).
        ``sync_dist``: combine the scores of all ``torch.distributed`` ranks (default: when
        initialised); the split rule then applies per rank. The statistics accumulate on the device of the
        batches (a GPU's logits never travel to the CPU per batch) and move to the CPU once, for the fit.
        """
        self._validate_params()
        parts: dict[str, ScoreAccumulator] = {}
        seen, shape = 0, None
        for preds, labels, num_classes in calibration_batches(stream, n_cal, self.num_classes, self.ignore_index,
                                                              self.kind, self.head):
            if shape is not None and tuple(preds.shape[2:]) != shape:
                raise ValueError(f"image size {tuple(preds.shape[2:])} differs from the first calibration "
                                 f"batch's {shape}")
            shape, pooled = tuple(preds.shape[2:]), self.grouping == "image"
            s, y = self._true_class_scores(preds, labels.to(preds.device))
            y = self._pooled(y)
            if not parts:
                bins, max_exact = stats_storage(pooled, self.bins, self.max_exact_scores)
                parts = {name: ScoreAccumulator(1 if self.marginal else num_classes,
                                                stats_shape(pooled, self.grid, shape), self.mode, bins, max_exact)
                         for name in self._parts()}
            codes = self._part_codes(seen, s.shape[0]).to(s.device)
            for index, acc in enumerate(parts.values()):
                keep = codes == index
                acc.update(*to_stats(pooled, self.grid, s[keep], y[keep]))
            seen += s.shape[0]
        if sync_dist or (sync_dist is None and dist.is_available() and dist.is_initialized()):
            for acc in parts.values():
                acc.all_reduce()
        return self.fit_parts({name: acc.to("cpu") for name, acc in parts.items()}, num_classes, shape)

    def _true_class_scores(self, preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``scores_at_labels`` of a batch, a few images at a time (every class's scores of a whole batch of
        large images would be several copies of the batch)."""
        step = max(1, SCORE_CHUNK_BYTES // (4 * preds[0].numel()))
        parts = [scores_at_labels(self._class_scores(p), y, self.ignore_index)
                 for p, y in zip(preds.split(step), labels.split(step))]
        return torch.cat([s for s, _ in parts]), torch.cat([y for _, y in parts])

    def _pooled(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as the statistics see them: one class for every labelled pixel when ``marginal``."""
        return torch.where(labels >= 0, torch.zeros_like(labels), labels) if self.marginal else labels

    def fit_bank(self, bank: ScoreBank) -> ConformalCalibrator:
        """Calibrate on exact per-image scores (e.g. a random subset of a pool, for the n_cal sweep)."""
        if self.num_classes is not None and bank.num_classes != self.num_classes:
            raise ValueError(f"bank has {bank.num_classes} classes but num_classes={self.num_classes}")
        if len(bank) == 0:
            raise ValueError("the calibration bank is empty")
        codes = self._part_codes(0, len(bank))
        classes, bank = bank.num_classes, (ScoreBank(1, bank.shape, bank.scores, self._pooled(bank.labels))
                                           if self.marginal else bank)
        parts = {}
        for index, name in enumerate(self._parts()):
            part = bank.subset(torch.nonzero(codes == index).flatten())
            acc = ScoreAccumulator.wrap(ScoreBank(part.num_classes, grid_shape(bank.shape, self.grid),
                                                  *to_blocks(part.scores, part.labels, self.grid)))
            parts[name] = acc.to_histogram() if self.mode == "histogram" else acc
        return self.fit_parts(parts, classes, bank.shape)

    def fit_parts(self, parts: dict[str, ScoreAccumulator], num_classes: int | None = None,
                  shape: tuple[int, int] | None = None) -> ConformalCalibrator:
        """Fit the grouping and the thresholds from accumulated scores (``"cal"``, ``"fit"``, ``"val"``; on the
        calibration grid, see :mod:`segcal.conformal.grid`); ``num_classes``: the model's (the parts hold one
        pooled class when ``marginal``); ``shape``: the images' (default: the parts'))."""
        if any(acc.store is not None and not acc.exact for acc in parts.values()):
            for acc in parts.values():
                acc.to_histogram()
        cal = parts["cal"]
        c, (h, w) = cal.num_classes, cal.shape
        shape = tuple(shape or (h, w))
        cells = shape[0] * shape[1] if (h, w) == (1, 1) else self.grid**2  # location-images per image
        need = {name: acc.num_images // cells for name, acc in parts.items()}
        if min(need.values()) == 0:
            raise ValueError(f"too few calibration images for the split: images per part {need}"
                             " (need at least one image in each)")
        image_scores = cal.pool(torch.zeros(c, h * w, dtype=torch.long), 1)
        if int(image_scores.group_counts().sum()) == 0:
            raise no_labels(self.ignore_index, "the calibration images")
        spec, stats, selection = self.spec, PixelStatistics(c, (h, w)), {}
        k = spec.num_groups
        if spec.learned:
            fit = parts.get("fit", cal)
            k = self.num_groups or spec.default_groups
            if k == "auto":
                k, selection = select_num_groups(spec, fit, parts["val"], tuple(self.group_candidates),
                                                 torch.tensor(COVERAGE_LEVELS, dtype=torch.float64), self.seed)
                fit = fit + parts["val"]
            stats = pixel_statistics(fit, spec.feature_levels)
        group_map, num_groups = normalise_group_map(spec.fn(stats, k, self.seed), c, (h, w))
        flat_map = group_map.view(c, -1)
        pixelwise = num_groups > 1 and torch.equal(flat_map, torch.arange(h * w).expand(c, -1))
        self.num_classes_, self.shape_ = num_classes or c, shape
        self.group_map_, self.num_groups_ = to_pixels(group_map, self.grid, shape), num_groups
        if pixelwise:
            self.scores_ = cal.per_pixel()
        else:  # one group (imagewise): the image-level pool already is the answer
            self.scores_ = image_scores if num_groups == 1 else cal.pool(flat_map, num_groups)
        self.image_scores_ = image_scores
        self.images_per_part_, self.group_selection_ = need, selection
        self.fallback_pixels_ = fallback_pixels(self.scores_, self.group_map_)
        self._cache, self._warned, self._fitted = {}, set(), True
        return self

    # -------------------------------------------------------------------------------- prediction
    def thresholds_at(self, levels: torch.Tensor) -> torch.Tensor:
        """Per-pixel thresholds ``[A, C, H, W]`` at coverage levels ``[A]`` (one shared by every class when
        ``marginal``)."""
        self.check_is_fitted()
        out = self._thresholds_at(torch.as_tensor(levels, dtype=torch.float64).reshape(-1))
        return out.expand(-1, self.num_classes_, -1, -1) if self.marginal else out

    def _thresholds_at(self, levels: torch.Tensor) -> torch.Tensor:
        """Thresholds of the statistics' classes ``[A, C or 1, H, W]`` (exact order statistics)."""
        return pixel_thresholds(self.scores_, self.image_scores_, self.group_map_, levels)

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
        self.check_is_fitted()
        check_fitted_preds(preds, head or self.head, self.num_classes_, "calibrator", self.shape_)

    def _class_scores(self, preds: torch.Tensor, kind: Kind | None = None, head: Head | None = None
                      ) -> torch.Tensor:
        return get_score(self.score)(preds, kind or self.kind, head or self.head)

    def class_scores(self, preds: torch.Tensor, kind: Kind | None = None, head: Head | None = None) -> torch.Tensor:
        """Checked conformity scores of every class ``[N, C, H, W]``."""
        preds = as_tensor(preds, "preds")
        self.check_preds(preds, head)
        return self._class_scores(preds, kind, head)

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
        return trivial_message(thresholds, alpha, self.grouping == "pixel", self.images_per_part_.get("cal", 0))

    def warn_if_trivial(self, alpha: float, thresholds: torch.Tensor | None = None) -> None:
        """:class:`TrivialThresholdWarning` once per level when many thresholds at ``alpha`` are trivial."""
        if alpha not in self._warned:
            self._warned.add(alpha)
            message = self.trivial_warning(alpha, thresholds)
            if message:
                warnings.warn(message, TrivialThresholdWarning, stacklevel=3)

    # --------------------------------------------------------------------------------- reporting
    @property
    def info_(self) -> dict[str, Any]:
        """JSON-serialisable description of the fitted calibrator (like a recalibrator's ``info_``)."""
        self.check_is_fitted()
        return {"method": self.method, "grouping": self.grouping, "score": self.score, "marginal": self.marginal,
                "num_groups": self.num_groups_, "num_groups_requested": self.num_groups, "split": self.split_,
                "grid": self.grid, "seed": self.seed, "n_cal": self.n_cal_,
                "images_per_part": dict(self.images_per_part_),
                "storage": "exact" if isinstance(self.scores_, SortedScores) else "histogram",
                "fallback_pixels": [int(v) for v in self.fallback_pixels_],
                "group_selection": {str(k): v for k, v in self.group_selection_.items()}}

    def state_dict(self, include_curves: bool | str = True) -> dict[str, Any]:
        """Plain tensors + metadata (see :mod:`segcal.conformal.state`): per-group curves, and per-pixel
        ``nc_curves [Q, C, H, W]`` too with ``include_curves="dense"``."""
        self.check_is_fitted()
        return conformal_state(self, include_curves)

    def load_state_dict(self, state: dict[str, Any]) -> ConformalCalibrator:
        """Restore parameters and fitted state from :meth:`state_dict`; returns ``self``."""
        params, fitted = split_state(state)
        if params["grouping"] != self.grouping:
            raise ValueError(f"state is for grouping {params['grouping']!r}, not {self.grouping!r}")
        self.set_params(**{k: v for k, v in params.items() if k in self.param_names()})
        vars(self).update(fitted)
        self._cache, self._warned, self._fitted = {}, set(), True
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ConformalCalibrator:
        """Rebuild a fitted calibrator from :meth:`state_dict` (``ValueError`` if it is not one)."""
        if isinstance(state, dict) and (state.get("params") or {}).get("grouping") == "local":
            from segcal.conformal.local_calibrator import LocalCalibrator

            return LocalCalibrator.from_state_dict(state)
        params, _ = split_state(state)
        klass = {"pixel": PixelwiseCalibrator, "image": ImagewiseCalibrator}.get(params["grouping"],
                                                                                KandinskyCalibrator)
        obj = ConformalCalibrator.__new__(klass)
        ConformalCalibrator.__init__(obj, **params)
        return obj.load_state_dict(state)


class _FixedGrouping(ConformalCalibrator):
    """A calibrator whose class fixes ``grouping``: it is not one of its parameters."""

    @classmethod
    def param_names(cls) -> list[str]:
        return [name for name in ConformalCalibrator.param_names() if name != "grouping"]


class PixelwiseCalibrator(_FixedGrouping):
    """Every pixel is its own group (no pooling). Parameters as :class:`ConformalCalibrator`."""

    def __init__(self, num_classes: int | None = None, **params: Any) -> None:
        super().__init__("pixel", num_classes, **params)


class ImagewiseCalibrator(_FixedGrouping):
    """All pixels pooled per class (one threshold per class). Parameters as :class:`ConformalCalibrator`."""

    def __init__(self, num_classes: int | None = None, **params: Any) -> None:
        super().__init__("image", num_classes, **params)


class KandinskyCalibrator(ConformalCalibrator):
    """Pixels grouped by a learned grouping (``"kmeans"`` default, ``"annuli"``, or any registered one)."""

    def __init__(self, grouping: str = "kmeans", num_classes: int | None = None, **params: Any) -> None:
        super().__init__(grouping, num_classes, **params)

    @classmethod
    def param_names(cls) -> list[str]:
        return ConformalCalibrator.param_names()

    def _validate_params(self) -> None:
        super()._validate_params()
        if not self.spec.learned:
            raise ValueError(f"Kandinsky calibration needs a learned grouping, got {self.grouping!r}")
