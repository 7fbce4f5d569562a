"""Morphological prediction sets: how far to grow (or shrink) the predicted mask so it holds the truth.

Following Mossina & Friedrich (MICCAI 2025, "ConSeMa"), the outer mask is the predicted mask of the target class
dilated λ times, with λ the smallest margin such that ``P(truth ⊄ dilate^λ(pred)) ≤ α`` (``loss="cover"``) or
``E[FNR] ≤ α`` (``loss="fnr"``); with ``inner=True`` the inner mask is the prediction eroded until
``P(erode^λ(pred) ⊄ truth) ≤ α``. Between the two lies an uncertainty band: the true outline is inside it with
probability at least ``1 − 2α`` (each side at ``α``; pass ``α/2`` for ``1 − α``). ::

    mc = MarginController(structure="disk", inner=True, alpha=0.1).fit(stream)
    m = mc.predict(logits)            # m.outer, m.inner [N, H, W] bool; m.band = outer & ~inner
    mc.margins()                      # {"outer": 3.0, "inner": 2.0} pixels

The margins are read off one distance map per image (:mod:`segcal.risk.morphology`), so every λ costs nothing
more. When no margin up to ``max_margin`` reaches α, the outer mask is the whole image and the inner mask empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from segcal.outputs import Head, Kind, as_tensor, hard_labels
from segcal.risk.base import RiskControllerBase
from segcal.risk.losses import MARGIN_LOSSES, margin_fnr_losses, margin_needs, step_losses
from segcal.risk.morphology import check_structure, dilate, erode
from segcal.risk.procedures import Selection


@dataclass(frozen=True)
class Margins:
    """Masks ``[N, H, W]`` (bool): the prediction, its dilation ``outer`` and erosion ``inner`` (or ``None``)."""

    pred: torch.Tensor
    outer: torch.Tensor
    inner: torch.Tensor | None

    @property
    def band(self) -> torch.Tensor:
        """Where the outline may lie: ``outer`` minus ``inner`` (``outer`` without an inner mask)."""
        return self.outer if self.inner is None else self.outer & ~self.inner


class MarginController(RiskControllerBase):
    """Calibrate dilation (and erosion) margins of the predicted mask of ``target_class``.

    Parameters: ``structure`` (``square``: 8-neighbour dilations, ``cross``: 4-neighbour, ``disk``: Euclidean
    radius); ``loss`` of the outer mask (``cover`` or ``fnr``); ``inner`` (also calibrate the eroded mask);
    ``alpha``, ``procedure`` (``crc`` default, ``rcps``, ``ltt``), ``delta``, ``target_class`` as for
    :class:`~segcal.risk.threshold.RiskController`; ``max_margin``, the largest margin tried (``None``: H + W,
    enough to reach every pixel); ``kind``/``head``, ``ignore_index``.

    Fitted: ``outer_needed_ [n]`` and ``inner_needed_ [n]`` (the margin each calibration image needs, ``inf``
    if none does), ``fnr_losses_ [n, Λ]`` for ``loss="fnr"``, ``radii_ [Λ]``, and the common attributes.
    """

    def __init__(self, structure: str = "square", loss: str = "cover", inner: bool = False, alpha: float = 0.1,
                 procedure: str | None = None, delta: float = 0.1, target_class: int | None = None,
                 max_margin: int | None = None, kind: Kind = "logits", head: Head = "softmax",
                 ignore_index: int = 255) -> None:
        self.structure, self.loss, self.inner, self.alpha = structure, loss, inner, alpha
        self.procedure, self.delta, self.target_class, self.max_margin = procedure, delta, target_class, max_margin
        self.kind, self.head, self.ignore_index = kind, head, ignore_index
        self._validate_params()

    def _validate_params(self) -> None:
        check_structure(self.structure)
        if self.loss not in MARGIN_LOSSES:
            raise ValueError(f"margin loss must be one of {', '.join(MARGIN_LOSSES)}; got {self.loss!r}")
        if not isinstance(self.inner, bool):
            raise ValueError(f"inner must be True or False, got {self.inner!r}")
        if self.max_margin is not None and (isinstance(self.max_margin, bool) or not isinstance(self.max_margin, int)
                                            or self.max_margin < 1):
            raise ValueError(f"max_margin must be a positive int or None, got {self.max_margin!r}")
        self._check_common()

    method = "margin"
    _binary_loss = True
    _monotone = True

    # ---------------------------------------------------------------------------- fitting, state
    def _begin(self, shape: tuple[int, ...]) -> None:
        self._cap = self.max_margin or sum(shape)

    def _rows(self, preds: torch.Tensor, labels: torch.Tensor, target: int | None) -> dict[str, torch.Tensor]:
        pred = hard_labels(preds, self.head) == target
        needs = margin_needs(pred, labels, target, self.structure, self.ignore_index, self.inner, self._cap)
        rows = {"outer": needs["outer"]}
        if self.inner:
            rows["inner"] = needs["inner"]
        if self.loss == "fnr":
            rows["fnr"] = margin_fnr_losses(needs["truth_distance"], self._radii(self._cap)).float()
        return rows

    @staticmethod
    def _radii(cap: int) -> torch.Tensor:
        return torch.arange(cap + 1, dtype=torch.float64)

    def _store(self, rows: dict[str, torch.Tensor]) -> None:
        self.outer_needed_ = rows["outer"].double()
        self.inner_needed_ = rows["inner"].double() if "inner" in rows else None
        self.fnr_losses_ = rows["fnr"].float() if "fnr" in rows else None
        self.radii_ = self._radii(self._cap)  # set by _begin (fit) or load_state_dict

    def _stored(self) -> dict[str, torch.Tensor]:
        rows = {"outer": self.outer_needed_}
        if self.inner_needed_ is not None:
            rows["inner"] = self.inner_needed_
        if self.fnr_losses_ is not None:
            rows["fnr"] = self.fnr_losses_
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "max_margin_used": int(self.radii_[-1])}

    def load_state_dict(self, state: dict[str, Any]) -> MarginController:
        self._cap = int(state["max_margin_used"])
        return super().load_state_dict(state)

    # --------------------------------------------------------------------------------- selection
    def selection(self, alpha: float | None = None, side: str = "outer") -> Selection:
        """The procedure's choice for the ``outer`` (or ``inner``) margin at ``alpha``."""
        self.check_is_fitted()
        alpha = self._alpha(alpha)
        if side == "inner":
            if self.inner_needed_ is None:
                raise ValueError("this controller has no inner margin: fit it with inner=True (--inner)")
            return self._select("inner", step_losses(self.inner_needed_, self.radii_), alpha)
        if side != "outer":
            raise ValueError(f"side must be 'outer' or 'inner', got {side!r}")
        losses = self.fnr_losses_.double() if self.fnr_losses_ is not None else step_losses(self.outer_needed_,
                                                                                            self.radii_)
        return self._select("outer", losses, alpha)

    def margins(self, alpha: float | None = None) -> dict[str, float]:
        """The chosen margins in pixels, ``{"outer": λ, "inner": λ}`` (``inf`` when infeasible)."""
        out = {}
        for side in ("outer", "inner") if self.inner_needed_ is not None else ("outer",):
            chosen = self.selection(alpha, side)
            out[side] = float(self.radii_[chosen.index]) if chosen.feasible else float("inf")
        return out

    def predict(self, preds: Any, alpha: float | None = None) -> Margins:
        """The predicted, outer and inner masks of the target class for ``preds [N, C, H, W]`` at ``alpha``."""
        preds = as_tensor(preds, "preds")
        self.check_preds(preds)
        pred = hard_labels(preds, self.head) == self.target_class_
        margins = self.margins(alpha)
        outer = dilate(pred, margins["outer"], self.structure) if margins["outer"] < float("inf") else \
            torch.ones_like(pred)
        inner = None
        if "inner" in margins:
            inner = erode(pred, margins["inner"], self.structure) if margins["inner"] < float("inf") else \
                torch.zeros_like(pred)
        return Margins(pred, outer, inner)

    def image_losses(self, preds: Any, labels: Any, alpha: float | None = None, masks: Margins | None = None
                     ) -> dict[str, torch.Tensor]:
        """Each image's loss ``[N]`` at the chosen margins: ``outer`` (cover or FNR) and ``inner`` (``masks``:
        :meth:`predict`'s output for these ``preds`` when already computed)."""
        labels = as_tensor(labels, "labels")
        masks = self.predict(preds, alpha) if masks is None else masks
        valid = labels != self.ignore_index
        truth = valid & (labels == self.target_class_)
        missed = (truth & ~masks.outer).flatten(1).sum(1).double()
        if self.loss == "fnr":
            outer = missed / truth.flatten(1).sum(1).clamp(min=1)
        else:
            outer = (missed > 0).double()
        out = {"outer": outer}
        if masks.inner is not None:
            out["inner"] = (masks.inner & valid & ~truth).flatten(1).any(1).double()
        return out

    @property
    def info_(self) -> dict[str, Any]:
        """JSON-serialisable summary: the margins at ``alpha`` and what they rest on."""
        margins = self.margins()
        sides = {side: self.selection(side=side) for side in margins}
        return {"method": self.method, "loss": self.loss, "structure": self.structure, "inner": self.inner,
                "procedure": self.procedure_, "alpha": self.alpha,
                "delta": self.delta if self.procedure_ != "crc" else None, "target_class": self.target_class_,
                "n_cal": self.n_cal_, "images_with_target": self.images_with_target_,
                "max_margin": int(self.radii_[-1]), "margins": margins,
                "feasible": {side: s.feasible for side, s in sides.items()},
                "calibration_risk": {side: s.risk for side, s in sides.items()}}
