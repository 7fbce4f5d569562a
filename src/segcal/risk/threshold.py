"""Risk control of thresholded masks and sets: FNR, FDR and multiclass miscoverage, guaranteed on average.

The mask of the target class is ``{p_c ≥ t}`` and the set of a pixel ``{c : p_c ≥ t}``, with the threshold
``t = 1 − λ`` chosen on calibration images so that the per-image risk is controlled (:mod:`segcal.risk.losses`
defines the losses, :mod:`segcal.risk.procedures` the procedures)::

    rc = RiskController(loss="fnr", alpha=0.1).fit(stream)      # (logits, labels) batches, binary model
    mask = rc.predict(logits)                                   # [N, H, W] bool: E[FNR] ≤ 0.1
    rc.threshold()                                              # the probability threshold chosen

CRC bounds the expected test loss by α; RCPS and LTT bound the risk by α with probability ``1 − δ`` over the
calibration draw. When no threshold of the grid reaches α (too few images for CRC, or the bound), the answer is
trivial — every pixel in the mask / every class in the set for FNR and miscoverage, an empty mask for FDR — and
:attr:`Selection.feasible` is false.
"""
from __future__ import annotations

from typing import Any

import torch

from segcal.outputs import Head, Kind, as_tensor
from segcal.risk.base import RiskControllerBase
from segcal.risk.losses import MONOTONE, THRESHOLD_LOSSES, threshold_grid, threshold_losses
from segcal.risk.procedures import Selection


class RiskController(RiskControllerBase):
    """Choose the probability threshold that controls ``loss`` (``fnr``, ``fdr``, ``miscoverage``) at ``alpha``.

    Parameters: ``loss``; ``alpha``, the default risk level (any other can be asked for after the fit);
    ``procedure`` (``crc``, ``rcps``, ``ltt``; ``None``: CRC for FNR and miscoverage, LTT for the FDR, which is
    not monotone); ``delta``, the failure probability of RCPS/LTT; ``target_class`` of the FNR/FDR (``None``:
    class 1 of a two-class model); ``grid``, the number of thresholds (:func:`threshold_grid`); ``kind``/``head``
    and ``ignore_index`` as for every calibrator.

    Fitted: ``losses_ [n, Λ]`` (float32, one row per calibration image), ``thresholds_ [Λ]`` (decreasing),
    ``num_classes_``, ``target_class_``, ``n_cal_``, ``images_with_target_``.
    """

    def __init__(self, loss: str = "fnr", alpha: float = 0.1, procedure: str | None = None, delta: float = 0.1,
                 target_class: int | None = None, grid: int = 1001, kind: Kind = "logits",
                 head: Head = "softmax", ignore_index: int = 255) -> None:
        self.loss, self.alpha, self.procedure, self.delta = loss, alpha, procedure, delta
        self.target_class, self.grid = target_class, grid
        self.kind, self.head, self.ignore_index = kind, head, ignore_index
        self._validate_params()

    def _validate_params(self) -> None:
        if self.loss not in THRESHOLD_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(THRESHOLD_LOSSES)}; got {self.loss!r}")
        self._check_common()
        threshold_grid(self.grid)
        if self.procedure in ("crc", "rcps") and not MONOTONE[self.loss]:
            raise ValueError(f"the {self.loss} is not monotone in the threshold, so {self.procedure.upper()} does "
                             "not control it: use procedure='ltt' (--procedure ltt)")

    @property
    def method(self) -> str:
        return "risk"

    @property
    def _binary_loss(self) -> bool:
        return self.loss != "miscoverage"

    @property
    def _monotone(self) -> bool:
        return MONOTONE[self.loss]

    # ---------------------------------------------------------------------------- fitting, state
    def _begin(self, shape: tuple[int, ...]) -> None:
        self.thresholds_ = threshold_grid(self.grid)

    def _rows(self, preds: torch.Tensor, labels: torch.Tensor, target: int | None) -> dict[str, torch.Tensor]:
        table = threshold_losses(self._probs(preds), labels, self.loss, self.thresholds_, target, self.ignore_index)
        return {"losses": table.float()}

    def _store(self, rows: dict[str, torch.Tensor]) -> None:
        self.losses_ = rows["losses"].float()
        self.thresholds_ = threshold_grid(self.grid)  # also after load_state_dict

    def _stored(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses_}

    # --------------------------------------------------------------------------------- selection
    def selection(self, alpha: float | None = None) -> Selection:
        """The procedure's choice at ``alpha`` (default: the ``alpha`` parameter)."""
        self.check_is_fitted()
        start = "top" if self._monotone else "bottom"
        return self._select("losses", self.losses_.double(), self._alpha(alpha), start)

    def threshold(self, alpha: float | None = None) -> float:
        """The probability threshold ``t̂`` at ``alpha``: ``0`` (everything) or ``inf`` (nothing, for the FDR)
        when infeasible."""
        chosen = self.selection(alpha)
        if chosen.feasible:
            return float(self.thresholds_[chosen.index])
        return float("inf") if self.loss == "fdr" else 0.0

    def _checked_probs(self, preds: Any) -> torch.Tensor:
        preds = as_tensor(preds, "preds")
        self.check_preds(preds)
        return self._probs(preds)

    def predict(self, preds: Any, alpha: float | None = None) -> torch.Tensor:
        """The mask ``[N, H, W]`` (FNR, FDR) or the sets ``[N, C, H, W]`` (miscoverage), bool, at ``alpha``."""
        probs = self._checked_probs(preds).double()
        t = self.threshold(alpha)
        return probs >= t if self.loss == "miscoverage" else probs[:, self.target_class_] >= t

    def image_losses(self, preds: Any, labels: Any, alpha: float | None = None) -> torch.Tensor:
        """The loss of each image ``[N]`` at the chosen threshold (the trivial answer's loss when infeasible)."""
        probs = self._checked_probs(preds)
        t = torch.tensor([self.threshold(alpha)], dtype=torch.float64)
        return threshold_losses(probs, as_tensor(labels, "labels"), self.loss, t.clamp(max=2.0),
                                self.target_class_, self.ignore_index)[:, 0]

    @property
    def info_(self) -> dict[str, Any]:
        """JSON-serialisable summary: the choice at ``alpha`` and what it rests on."""
        chosen = self.selection()
        return {"method": self.method, "loss": self.loss, "procedure": self.procedure_, "alpha": self.alpha,
                "delta": self.delta if self.procedure_ != "crc" else None, "target_class": self.target_class_,
                "n_cal": self.n_cal_, "images_with_target": self.images_with_target_,
                "feasible": chosen.feasible, "threshold": self.threshold(), "calibration_risk": chosen.risk,
                "statistic": chosen.statistic}
