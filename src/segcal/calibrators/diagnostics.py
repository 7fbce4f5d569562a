"""Warnings when a recalibration fit changes nothing, hits a bound, or makes calibration worse.

Fits that silently do nothing cost users hours (a selective-scaling fit on an under-confident model returns
``T2 = 1`` after minutes of training), so every recalibrator checks its result and warns with
:class:`FitWarning`, naming what to use instead where there is a better choice.
"""
from __future__ import annotations

import warnings

import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from segcal.outputs import Head, log_probs

NO_OP_TOLERANCE = 1e-2
"""A temperature within this relative distance of 1 changes (almost) nothing."""


class FitWarning(UserWarning):
    """A recalibration fit was a no-op, hit a parameter bound, or worsened its objective."""


def warn_fit(message: str) -> None:
    warnings.warn(message, FitWarning, stacklevel=3)


def top_label_ece(logits: torch.Tensor, labels: torch.Tensor, head: Head, bins: int = 15) -> float:
    """Top-label ECE (``bins`` equal-width bins) of pixel logits ``[P, C]`` against ``labels [P]``."""
    probs = log_probs(logits, head).exp()
    return float(multiclass_calibration_error(probs.double(), labels, probs.shape[1], n_bins=bins, norm="l1"))


def check_temperatures(method: str, temperature: torch.Tensor, bound: float) -> None:
    """Warn when every temperature is ~1 (no-op) or one sits at its bound ``bound`` (or ``1 / bound``)."""
    t = temperature.flatten().double()
    if bool(((t - 1).abs() < NO_OP_TOLERANCE).all()):
        warn_fit(f"{method}: fitted T = {', '.join(f'{v:.3f}' for v in t.tolist())}: the calibration pixels are "
                 "already calibrated for its objective, so it changes (almost) nothing")
    at_bound = [i for i, v in enumerate(t.tolist()) if v >= bound * 0.999 or v <= 1.001 / bound]
    if at_bound:
        warn_fit(f"{method}: the temperature of channel(s) {at_bound} hit its bound ({bound:g} or 1/{bound:g}); "
                 "the fit is degenerate (separable classes, or temperatures that are not identifiable); check the "
                 "calibration logits or use temperature scaling")


def check_objective(method: str, name: str, before: float, after: float, tolerance: float = 1e-6) -> None:
    """Warn when the objective ``name`` got worse on the calibration pixels (``after > before``)."""
    if after > before + tolerance:
        warn_fit(f"{method}: the {name} of the calibration pixels got worse ({before:.4g} → {after:.4g}); the "
                 "calibrated probabilities are less calibrated than the model's; prefer temperature scaling here")
