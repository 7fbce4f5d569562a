"""`segcal calibrate`: fit a recalibrator, a conformal calibrator or a risk controller on the calibration split.

Recalibration methods (``temperature``, ``vector``, ``selective``, ``lts``, ...) map logits to
calibrated logits; conformal methods (``pixel``, ``image``, ``kandinsky-*``, ``local``) store what
their per-pixel prediction sets need; risk methods (``risk``, ``margin``) one row of losses per image for
a mask-level guarantee. All go into a :class:`~segcal.calibrated.CalibrationBundle`; conformal calibrators
and risk controllers are fitted on the logits *after* the bundle's recalibrator, so they compose.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import replace
from typing import Any

from segcal.calibrated import CalibrationBundle
from segcal.calibrators.registry import CALIBRATORS, make_calibrator
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.errors import NoLabelsError
from segcal.methods import CONFORMAL_METHODS, RECALIBRATION_METHODS, RISK_METHODS, check_method
from segcal.pipeline.memory import check_memory
from segcal.pipeline.progress import track
from segcal.pipeline.sources import ModelSource, Stream, source_name
from segcal.risk import MarginController, RiskController
from segcal.stats.score_histogram import ScoreBins

NOT_PARAMS = ("grouping", "num_classes", "kind", "head", "ignore_index", "seed")
"""Parameters segcal sets itself (from the method name, the data source and ``--seed``); the others are
``--param NAME=VALUE`` (a conformal method's ``bins`` as a number of score-histogram bins)."""
GROUPING_PARAMS = ("num_groups", "split", "group_candidates", "grid")
"""Parameters only learned groupings (kandinsky-*) have (``grid`` is the local method's too)."""


def method_params(method: str) -> dict[str, Any]:
    """The tunable parameters of ``method`` and their defaults (what ``--param`` accepts)."""
    check_method(method)
    skip = set(NOT_PARAMS)
    defaults: dict[str, Any] = {}
    if method in RECALIBRATION_METHODS:
        cls = CALIBRATORS[method]
    elif method in RISK_METHODS:
        cls = risk_class(method)
    else:
        cls, defaults = conformal_class(method), {**CONFORMAL_METHODS[method][1], "bins": ScoreBins().num_bins}
        if method in ("pixel", "image"):
            skip |= set(GROUPING_PARAMS)
    signature = inspect.signature(cls.__init__).parameters
    return {name: defaults.get(name, signature[name].default) for name in cls.param_names() if name not in skip}


def check_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` if every name is a parameter of ``method``, else one error naming the valid ones."""
    valid = method_params(method)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"invalid --param {', '.join(unknown)} for {method}; valid: {', '.join(valid)} "
                         "(see `segcal calibrate --list-params`)")
    return params


def make_conformal(method: str, num_classes: int, head: str = "softmax", ignore_index: int = 255,
                   seed: int = 0, **params: Any) -> ConformalCalibrator:
    """An unfitted conformal calibrator for a CLI method name (``params``: e.g. ``num_groups``, ``split``)."""
    if check_method(method) not in CONFORMAL_METHODS:
        raise ValueError(f"{method!r} is a recalibration method, not a conformal one")
    grouping, defaults = CONFORMAL_METHODS[method]
    options = {"kind": "logits", "head": head, "ignore_index": ignore_index, "seed": seed,
               **defaults, **check_params(method, params)}
    if "bins" in options and not isinstance(options["bins"], ScoreBins):  # --param bins=N: N logit-spaced bins
        bins = options["bins"]
        if not (isinstance(bins, int) and not isinstance(bins, bool) and bins >= 3):
            raise ValueError(f"--param bins must be an int >= 3 (score-histogram bins), got {bins!r}")
        options["bins"] = ScoreBins(bins)
    if grouping == "local":
        return LocalCalibrator(num_classes, **options)
    return ConformalCalibrator(grouping, num_classes, **options)


def conformal_class(method: str) -> type[ConformalCalibrator]:
    """The calibrator class of a conformal method name."""
    return LocalCalibrator if CONFORMAL_METHODS[method][0] == "local" else ConformalCalibrator


def risk_class(method: str) -> type[RiskController] | type[MarginController]:
    """The controller class of a risk method name."""
    return RiskController if method == "risk" else MarginController


def make_risk(method: str, class_names: list[str], head: str = "softmax", ignore_index: int = 255,
              **params: Any) -> RiskController | MarginController:
    """An unfitted risk controller; ``target_class`` may be a class name of ``class_names`` or an index."""
    params = dict(check_params(method, params))
    target = params.get("target_class")
    if isinstance(target, str):
        if target not in class_names:
            raise ValueError(f"--target-class {target!r} is not a class of this model; classes: "
                             f"{', '.join(class_names)}")
        params["target_class"] = class_names.index(target)
    return risk_class(method)(kind="logits", head=head, ignore_index=ignore_index, **params)


def _progress(enabled: bool):
    return lambda items, description: track(items, description, enabled=enabled)


def calibrate(source, method: str, *, bundle: CalibrationBundle | None = None, n_cal: int | None = None,
              params: dict[str, Any] | None = None, seed: int = 0, progress: bool = True,
              memory_check: bool = True, max_memory: float | None = None) -> tuple[CalibrationBundle, dict[str, Any]]:
    """Fit ``method`` on ``source`` (its first ``n_cal`` images) and add it to ``bundle``.

    Returns the bundle and a history record ``{"method", "n_cal", "seconds", "info"}``.
    Recalibrating a bundle that already holds a conformal calibrator (or a recalibrator) is
    refused: the stored thresholds / probabilities would no longer match. ``memory_check``: refuse, before the
    pass, a conformal method estimated to need more memory than ``max_memory`` GiB (default: 90% of what is
    available; :mod:`segcal.pipeline.memory`).
    """
    check_method(method)
    params = dict(params or {})
    if memory_check:
        check_memory(source, method, n_cal, params, None if max_memory is None else int(max_memory * 2**30))
    bundle = bundle if bundle is not None else CalibrationBundle()
    if n_cal is not None:
        source = source.subset(n_cal)
    start = time.time()
    try:
        info = _fit(source, method, bundle, params, seed, progress)
    except NoLabelsError as exc:
        raise NoLabelsError(f"{source_name(source)}: {exc}") from None
    record = {"method": method, "n_cal": len(source), "seconds": time.time() - start, "params": params,
              "seed": seed, "info": info}
    bundle.history.append(record)
    bundle.meta = {"classes": list(source.class_names), "head": source.head, "ignore_index": source.ignore_index,
                   "image_size": list(source.image_size)}
    return bundle, record


def _fit(source, method: str, bundle: CalibrationBundle, params: dict[str, Any], seed: int,
         progress: bool) -> dict[str, Any]:
    """Fit ``method`` on ``source`` into ``bundle``; returns the fitted calibrator's info."""
    if method in RECALIBRATION_METHODS:
        if not bundle.empty:
            raise ValueError(f"the checkpoint is already calibrated ({bundle.describe()}); fit {method} "
                             "on the uncalibrated checkpoint instead")
        calibrator = make_calibrator(method, head=source.head, ignore_index=source.ignore_index, seed=seed,
                                     **check_params(method, params))
        calibrator.fit(Stream(source), progress=_progress(progress))
        bundle.recalibration, info = calibrator, dict(calibrator.info_)
    elif method in RISK_METHODS:
        if bundle.risk is not None:
            raise ValueError(f"the checkpoint already has a risk controller ({bundle.describe()}); fit {method} "
                             "on the checkpoint without it")
        controller = make_risk(method, list(source.class_names), source.head, source.ignore_index, **params)
        controller.fit(track(Stream(source, bundle.apply), f"calibrate {method}", enabled=progress))
        bundle.risk, info = controller, controller.info_
    else:
        conformal = make_conformal(method, source.num_classes, source.head, source.ignore_index, seed, **params)
        if isinstance(source, ModelSource) and bundle.recalibration is None:
            source = replace(source, keep_device=True)  # statistics on the model's device: no per-batch copy
        conformal.fit(track(Stream(source, bundle.apply), f"calibrate {method}", enabled=progress))
        bundle.conformal, info = conformal, conformal.info_
    return info
