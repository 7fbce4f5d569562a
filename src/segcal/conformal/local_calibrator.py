"""``--method local``: per-pixel prediction sets from locally pooled, globally conformalized scores.

A share ``split`` of the calibration images (every ``1/split``-th, as for Kandinsky groupings) fits a
local score CDF per class and pixel over the smallest window holding ``min_scores`` scores (the whole image
where the class is rare at the pixel, :data:`DEFAULT_MIN_FREQUENCY`); the other images conformalize the levels
``u = F_{c,x}(s)`` (see :mod:`segcal.conformal.local`). ::

    cp = LocalCalibrator(num_classes=2).fit(stream)        # (logits, labels) batches
    sets = cp.predict_set(logits, alpha=0.1)                # [N, C, H, W] bool
    cp.radius_                                              # [C, H, W] window radius per class and pixel
"""
from __future__ import annotations

import math
from typing import Any

import torch

from segcal.conformal.accumulate import DEFAULT_MAX_EXACT_SCORES, Mode, ScoreAccumulator
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.conformal.diagnostics import trivial_message
from segcal.conformal.grid import check_grid, upsample
from segcal.conformal.local import (
    level_counts,
    level_quantiles,
    local_cdfs,
    local_thresholds,
    rare_pixels,
)
from segcal.conformal.local_crossfit import ExactFold, cross_fit
from segcal.conformal.parts import fold_parts
from segcal.conformal.state import NC_CURVE_LEVELS, STATE_FORMAT
from segcal.errors import no_labels
from segcal.outputs import Head, Kind
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

AUTO_MIN_SCORES = (50, 2000)
"""``min_scores="auto"``: ``max(50, ⌈2000 / n⌉)`` for ``n`` calibration images (measured on CCP, see
docs/conformal.md): windows of at least 50 scores, larger when few images give few scores per pixel."""
DEFAULT_MIN_FREQUENCY = 0.02
"""A class seen at a pixel in fewer than ``⌊0.02·n⌋`` of ``n`` calibration images pools the whole image there
(from 50 images on; measured on CCP, see docs/conformal.md): per-pixel coverage of a class that rare cannot be
measured, and its local windows would put it in most sets (3–14% full sets → ≤ 7%, CE unchanged)."""
DEFAULT_LOCAL_SPLIT = 0.5
DEFAULT_FOLDS = 5
FITTINGS = ("cross", "split")
"""``split``: local CDFs from one part, levels from the other (exact guarantee). ``cross``: both parts give
levels through the other part's CDF (two-fold cross-fitting) and test images use the CDF of both."""


class LocalCalibrator(ConformalCalibrator):
    """Locally pooled, globally conformalized class-conditional sets (user-facing name ``local``).

    Parameters (stored as given): ``num_classes`` (``None``: from the data); ``min_scores``, the scores of a
    class a window must hold (the window around a pixel grows until it does; ``"auto"``: see
    :data:`AUTO_MIN_SCORES`); ``min_frequency``, below which share of the calibration images a class seen
    at a pixel counts as rare there and pools the whole image (``0``: never); ``fitting`` (:data:`FITTINGS`)
    and ``folds``; ``split``, the share of images that fit the local CDFs (the others set the conformal
    level); ``score``, ``kind``, ``head``,
    ``ignore_index``, ``mode``, ``bins``, ``max_exact_scores``, ``seed``, ``marginal`` as
    :class:`ConformalCalibrator`; ``grid``, the side of the pixel blocks the local CDFs are kept for
    (:mod:`segcal.conformal.grid`; 1: every pixel, the default; windows are then counted in blocks).

    Fitted attributes: ``min_scores_`` (the number used), ``num_classes_``, ``shape_``,
    ``cdf_ [C, H, W, B]`` (uint16 local CDFs),
    ``radius_ [C, H, W]`` and ``window_counts_ [C, H, W]`` (window radius and scores in it),
    ``level_counts_ [C, L]`` (calibration levels), ``interpolated_`` (levels placed inside score bins: every
    part held exact scores), ``images_per_part_``, ``fallback_pixels_ [C]`` (pixels
    whose whole image held fewer than ``min_scores`` scores of the class), ``min_own_`` (own scores below
    which a pixel is rare: ``⌊min_frequency · n⌋``) and ``rare_pixels_ [C]`` (pixels that pooled the
    whole image because the class is rare there).
    """

    def __init__(self, num_classes: int | None = None, *, min_scores: int | str = "auto",
                 min_frequency: float = DEFAULT_MIN_FREQUENCY, fitting: str = "cross", folds: int = DEFAULT_FOLDS,
                 split: float = DEFAULT_LOCAL_SPLIT,
                 score: str = "lac", marginal: bool = False, kind: Kind = "logits",
                 head: Head = "softmax", ignore_index: int = 255, mode: Mode = "auto", bins: ScoreBins | None = None,
                 max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES, grid: int = 1, seed: int = 0) -> None:
        self.num_classes, self.marginal, self.min_scores, self.fitting = num_classes, marginal, min_scores, fitting
        self.grid, self.min_frequency = grid, min_frequency
        self.folds, self.split = folds, split
        self.score, self.kind, self.head, self.ignore_index = score, kind, head, ignore_index
        self.mode, self.bins, self.max_exact_scores, self.seed = mode, bins, max_exact_scores, seed
        self._validate_params()
        self._cache: dict[float, torch.Tensor] = {}
        self._warned: set[float] = set()

    grouping = "local"  # not a parameter: what states and results call the method

    def _validate_params(self) -> None:
        if self.min_scores != "auto" and not (isinstance(self.min_scores, int) and not isinstance(
                self.min_scores, bool) and self.min_scores >= 1):
            raise ValueError(f"min_scores must be a positive int or 'auto', got {self.min_scores!r}")
        if isinstance(self.min_frequency, bool) or not isinstance(self.min_frequency, (int, float)) \
                or not 0 <= self.min_frequency < 1:
            raise ValueError(f"min_frequency must lie in [0, 1) (the share of calibration images below which a "
                             f"class is rare at a pixel), got {self.min_frequency!r}")
        if self.fitting not in FITTINGS:
            raise ValueError(f"fitting must be one of {FITTINGS}, got {self.fitting!r}")
        if not (isinstance(self.folds, int) and not isinstance(self.folds, bool) and self.folds >= 2):
            raise ValueError(f"folds must be an int >= 2, got {self.folds!r}")
        if self.split is None or not 0 < self.split < 1:
            raise ValueError(f"split must lie strictly between 0 and 1 (the share of images fitting the local "
                             f"CDFs), got {self.split!r}")
        check_grid(self.grid)
        self._check_common_params()

    @property
    def spec(self):
        raise AttributeError("the local method has no grouping")

    @property
    def split_(self) -> float:
        return self.split

    @property
    def method(self) -> str:
        return "local"

    @property
    def num_groups_(self) -> int:
        """Every pixel (or block of the calibration grid) has its own neighbourhood."""
        self.check_is_fitted()
        return self.radius_[0].numel()

    def _parts(self) -> tuple[str, ...]:
        if self.fitting == "cross":
            return tuple(f"fold{j}" for j in range(self.folds))
        return ("cal", "fit")

    def _part_codes(self, first: int, n: int) -> torch.Tensor:
        if self.fitting == "cross":
            return fold_parts(first, n, self.folds)
        return super()._part_codes(first, n)

    def fit_parts(self, parts: dict[str, ScoreAccumulator], num_classes: int | None = None,
                  shape: tuple[int, int] | None = None) -> LocalCalibrator:
        """Cross-fit the folds (``fitting="cross"``), or fit local CDFs on ``parts["fit"]`` and the conformal
        levels on ``parts["cal"]`` (``"split"``); the parts are on the calibration grid of images ``shape``."""
        need = {name: acc.num_images // self.grid**2 for name, acc in parts.items()}
        used = sum(n > 0 for n in need.values())
        if (self.fitting == "cross" and used < 2) or min(need.values()) == 0 and self.fitting == "split":
            raise ValueError(f"too few calibration images for the local method: images per part {need} "
                             "(it needs at least 2 images: local CDFs come from other images than the levels)")
        bins = self.bins or ScoreBins()
        self.interpolated_ = self.fitting == "cross" and all(acc.exact for acc in parts.values())
        hists = {name: _fold(acc, bins, self.interpolated_) for name, acc in parts.items() if acc.num_images}
        n = sum(need.values())
        floor, budget = AUTO_MIN_SCORES
        self.min_scores_ = max(floor, -(-budget // n)) if self.min_scores == "auto" else self.min_scores
        fitted = list(hists.values()) if self.fitting == "cross" else [hists["fit"]]
        self.min_own_ = math.floor(self.min_frequency * sum(h.num_images for h in fitted))  # per location
        if self.fitting == "cross":
            self.cdf_, self.radius_, self.window_counts_, self.level_counts_ = cross_fit(
                fitted, self.min_scores_, self.min_own_)
        else:
            self.cdf_, self.radius_, self.window_counts_ = local_cdfs(hists["fit"], self.min_scores_, self.min_own_)
            self.level_counts_ = level_counts(self.cdf_, hists["cal"])
        if int(self.window_counts_.max()) == 0:
            raise no_labels(self.ignore_index, "the calibration images")
        first = next(iter(hists.values()))
        self.num_classes_, self.shape_ = num_classes or first.num_classes, tuple(shape or first.shape)
        self.images_per_part_ = need
        self.fallback_pixels_ = (self.window_counts_ < self.min_scores_).flatten(1).sum(1)
        self.rare_pixels_ = rare_pixels(self.radius_)
        self._cache, self._warned, self._fitted = {}, set(), True
        return self

    def _thresholds_at(self, levels: torch.Tensor) -> torch.Tensor:
        """Per-pixel score thresholds ``[A, C or 1, H, W]`` at coverage levels ``[A]``."""
        out = local_thresholds(self.cdf_, level_quantiles(self.level_counts_, levels), self.bins or ScoreBins(),
                               self.interpolated_)
        return upsample(out, self.grid, self.shape_)

    def trivial_warning(self, alpha: float, thresholds: torch.Tensor | None = None) -> str | None:
        thresholds = self.thresholds(alpha) if thresholds is None else thresholds
        return trivial_message(thresholds, alpha, False, self.n_cal_)

    def window_sides(self) -> torch.Tensor:
        """Side of each pixel's window in pixels ``[C, H, W]`` (``(2r + 1)·grid``, clipped to the image)."""
        self.check_is_fitted()
        side = torch.minimum((2 * self.radius_ + 1) * self.grid, torch.tensor(max(self.shape_)))
        return upsample(side, self.grid, self.shape_)

    @property
    def info_(self) -> dict[str, Any]:
        self.check_is_fitted()
        sides = self.window_sides().double().flatten(1)
        return {"method": "local", "grouping": "local", "score": self.score, "marginal": self.marginal,
                "min_scores": self.min_scores_, "min_frequency": self.min_frequency, "min_own": self.min_own_,
                "fitting": self.fitting, "folds": self.folds, "split": self.split, "grid": self.grid, "seed": self.seed,
                "n_cal": self.n_cal_,
                "images_per_part": dict(self.images_per_part_), "storage": "histogram",
                "num_groups": self.num_groups_, "window_side_median": [float(v) for v in sides.median(1).values],
                "fallback_pixels": [int(v) for v in self.fallback_pixels_],
                "rare_pixels": [int(v) for v in self.rare_pixels_]}

    def state_dict(self, include_curves: bool | str = True) -> dict[str, Any]:
        """Parameters, local CDFs (uint16), windows and calibration levels; per-pixel ``nc_curves`` only with
        ``include_curves="dense"`` (every threshold follows from the CDFs; see ``state.nc_curves_of``)."""
        self.check_is_fitted()
        params = {**self.get_params(), "bins": None if self.bins is None else self.bins.state_dict()}
        state = {"format": STATE_FORMAT, "params": {**params, "grouping": "local"}, **self.info_,
                 "num_classes": self.num_classes_, "shape": list(self.shape_), "cdf": self.cdf_,
                 "radius": self.radius_.to(torch.int32), "window_counts": self.window_counts_.to(torch.int32),
                 "level_counts": self.level_counts_, "interpolated": self.interpolated_}
        if include_curves == "dense":
            state["nc_levels"] = torch.linspace(0, 1, NC_CURVE_LEVELS, dtype=torch.float64)
            state["nc_curves"] = self.nc_curves(NC_CURVE_LEVELS)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> LocalCalibrator:
        params = local_params(state)
        self.set_params(**params)
        self.cdf_, self.level_counts_ = state["cdf"], state["level_counts"].long()
        self.radius_, self.window_counts_ = state["radius"].long(), state["window_counts"].long()
        self.num_classes_, self.shape_ = int(state["num_classes"]), tuple(state["shape"])
        self.images_per_part_ = dict(state["images_per_part"])
        self.interpolated_ = bool(state["interpolated"])
        self.min_scores_ = int(state["min_scores"])
        self.fallback_pixels_ = torch.tensor(state["fallback_pixels"])
        self.min_own_ = int(state.get("min_own", 0))  # states written before min_frequency: no rare pixels
        self.rare_pixels_ = rare_pixels(self.radius_)
        self._cache, self._warned, self._fitted = {}, set(), True
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LocalCalibrator:
        return cls(**local_params(state)).load_state_dict(state)


def local_params(state: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters of a local calibrator's state (``ValueError`` if it is not one)."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "cdf" not in state:
        raise ValueError(f"not a segcal local conformal state (expected format {STATE_FORMAT!r} with cdf)")
    params = {k: v for k, v in state["params"].items() if k != "grouping"}
    params["bins"] = None if params.get("bins") is None else ScoreBins.from_state_dict(params["bins"])
    params.setdefault("min_frequency", 0.0)  # states from before min_frequency pooled no rare pixels
    return params


def _fold(acc: ScoreAccumulator, bins: ScoreBins, exact: bool) -> ScoreHistogram | ExactFold:
    """The accumulator's scores as an :class:`ExactFold` (``exact``) or per-pixel histograms ``[C, H, W, B]``."""
    store = acc.store
    if exact:
        return ExactFold(store.scores, store.raw_labels, store.num_classes, bins)
    if acc.exact:
        return store.to_histogram(bins)
    if store.bins != bins:
        raise ValueError(f"histogram bins {store.bins} differ from the calibrator's {bins}")
    return store
