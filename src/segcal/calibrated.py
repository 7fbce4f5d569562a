"""Calibrated checkpoints: a model checkpoint (or a standalone file) plus fitted calibration state.

A calibrated checkpoint is the Lightning checkpoint of the model with one more key, ``"segcal"``::

    {"recalibration": Calibrator.state_dict() | None,      # temperature / vector / selective / lts
     "conformal": ConformalCalibrator.state_dict() | None,   # scores, group map, per-group nc curves, ...
     "risk": RiskController / MarginController .state_dict() | None,   # per-image loss rows
     "history": [{"method", "n_cal", "seconds", "info"}, ...],
     "meta": {"classes", "head", "ignore_index", "image_size"}}

Lightning ignores the extra key, so the file still loads as a model. When the calibration was
fitted on saved predictions (no model) the file holds only ``{"segcal": ...}``. Conformal
and risk state are fitted on the *recalibrated* logits when a recalibrator is present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segcal.batch import Batch
from segcal.calibrators.base import Calibrator
from segcal.calibrators.registry import load_calibrator
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.io.checkpoint import read_checkpoint, write_checkpoint
from segcal.risk import risk_from_state_dict
from segcal.risk.base import RiskControllerBase

KEY = "segcal"


@dataclass
class CalibrationBundle:
    """What a calibrated checkpoint adds to a model: optional recalibrator, conformal calibrator and risk
    controller (mask-level guarantee)."""

    recalibration: Calibrator | None = None
    conformal: ConformalCalibrator | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    risk: RiskControllerBase | None = None

    @property
    def empty(self) -> bool:
        return self.recalibration is None and self.conformal is None and self.risk is None

    def transform(self, logits: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Recalibrated logits ``[N, C, H, W]`` (unchanged without a recalibrator)."""
        return logits if self.recalibration is None else self.recalibration(logits, images)

    def apply(self, batch: Batch) -> Batch:
        """``batch`` with recalibrated logits (the same batch without a recalibrator)."""
        return batch if self.recalibration is None else batch.with_logits(self.transform(batch.logits, batch.images))

    def describe(self) -> str:
        parts = []
        if self.recalibration is not None:
            parts.append(f"recalibration: {self.recalibration.method}")
        if self.conformal is not None:
            parts.append(f"conformal: {self.conformal.method} (n_cal {self.conformal.n_cal_})")
        if self.risk is not None:
            parts.append(f"risk: {self.risk.method} {self.risk.loss} at α = {self.risk.alpha:g} "
                         f"(n_cal {self.risk.n_cal_})")
        return ", ".join(parts) or "uncalibrated"

    def state(self) -> dict[str, Any]:
        return {"recalibration": None if self.recalibration is None else self.recalibration.state_dict(),
                "conformal": None if self.conformal is None else self.conformal.state_dict(),
                "risk": None if self.risk is None else self.risk.state_dict(),
                "history": list(self.history), "meta": dict(self.meta)}

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str | Path = "checkpoint") -> CalibrationBundle:
        try:
            recal = state.get("recalibration")
            conf, risk = state.get("conformal"), state.get("risk")
            return cls(None if recal is None else load_calibrator(recal),
                       None if conf is None else ConformalCalibrator.from_state_dict(conf),
                       list(state.get("history", [])), dict(state.get("meta", {})),
                       None if risk is None else risk_from_state_dict(risk))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: corrupt segcal calibration state ({exc})") from exc


def has_model(ckpt: dict[str, Any]) -> bool:
    return "state_dict" in ckpt


def load_bundle(path: str | Path) -> CalibrationBundle:
    """The calibration stored in ``path`` (an empty bundle for a plain model checkpoint)."""
    ckpt = read_checkpoint(path)
    if KEY not in ckpt and not has_model(ckpt):
        raise ValueError(f"{path}: neither a model checkpoint nor a segcal calibration file")
    return CalibrationBundle.from_state(ckpt.get(KEY) or {}, path)


def save_bundle(bundle: CalibrationBundle, out: str | Path, base: str | Path | None = None) -> Path:
    """Write ``bundle`` atomically to ``out``: into a copy of checkpoint ``base``, or standalone."""
    out = Path(out)
    ckpt = read_checkpoint(base) if base is not None else {}
    ckpt[KEY] = bundle.state()
    return write_checkpoint(ckpt, out)
