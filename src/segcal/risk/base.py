"""What the risk controllers share: streaming per-image statistics, the target class, λ selection, state.

A controller's ``fit`` streams ``(preds [N, C, H, W], labels [N, H, W])`` batches and keeps one small row per
calibration image (never a pixel); rows from ``torch.distributed`` ranks are gathered. ``selection(alpha)`` runs
the procedure on the stored rows, so any ``alpha`` can be asked for after the fit.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from segcal.batch import calibration_batches
from segcal.calibrators.sampling import distributed, gather_rows
from segcal.errors import no_labels
from segcal.estimator import Estimator
from segcal.outputs import check_fitted_preds, to_probs
from segcal.risk.procedures import PROCEDURES, Selection, check_level, check_monotone, select

STATE_FORMAT = "segcal.risk/1"


class RiskControllerBase(Estimator):
    """Parameters and fitting loop common to :class:`~segcal.risk.threshold.RiskController` and
    :class:`~segcal.risk.margin.MarginController`. Subclasses define :meth:`_rows` (per-batch statistics),
    :meth:`_tables` (loss tables from them) and what they predict."""

    kind: str
    head: str
    ignore_index: int
    alpha: float
    delta: float
    procedure: str | None
    target_class: int | None

    def _check_common(self) -> None:
        check_level(self.alpha, "alpha")
        check_level(self.delta, "delta")
        if self.procedure is not None and self.procedure not in PROCEDURES:
            raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}; got {self.procedure!r}")
        if self.target_class is not None and (isinstance(self.target_class, bool)
                                              or not isinstance(self.target_class, int) or self.target_class < 0):
            raise ValueError(f"target_class must be a class index >= 0 or None, got {self.target_class!r}")

    # ----------------------------------------------------------------------------------- fitting
    def _target(self, num_classes: int, binary_loss: bool) -> int | None:
        """The class a binary loss is about: ``target_class``, or class 1 of a two-class model."""
        if not binary_loss:
            return None
        if self.target_class is None:
            if num_classes != 2:
                raise ValueError(f"loss {self.loss!r} is about one class but the model has {num_classes} "
                                 "classes: pass target_class (--target-class NAME)")
            return 1
        if self.target_class >= num_classes:
            raise ValueError(f"target_class={self.target_class} is not a class of this {num_classes}-class model")
        return self.target_class

    def fit(self, stream: Iterable, *, n_cal: int | None = None, sync_dist: bool | None = None):
        """Calibrate on ``(preds [N, C, H, W], labels [N, H, W])`` batches; ``n_cal``: the first ``n_cal``
        images; ``sync_dist``: gather the rows of every ``torch.distributed`` rank (default: when running)."""
        self._validate_params()
        rows: dict[str, list[torch.Tensor]] = {}
        present = 0
        for preds, labels, num_classes in calibration_batches(stream, n_cal, None, self.ignore_index, self.kind,
                                                              self.head):
            target = self._target(num_classes, self._binary_loss)
            if not rows:
                self._begin(tuple(preds.shape[2:]))
            judged = labels != self.ignore_index
            present += int((judged if target is None else judged & (labels == target)).flatten(1).any(1).sum())
            for name, value in self._rows(preds, labels, target).items():
                rows.setdefault(name, []).append(value.cpu())
        stacked = {name: torch.cat(parts) for name, parts in rows.items()}
        if sync_dist or (sync_dist is None and distributed()):
            stacked = dict(zip(stacked, gather_rows(list(stacked.values()))))
            count = torch.tensor([present])
            dist.all_reduce(count)
            present = int(count)
        if present == 0:
            what = "labelled pixels" if target is None else f"pixels of target class {target}"
            raise no_labels(self.ignore_index, "the calibration images") if target is None else ValueError(
                f"no calibration image has {what}: the risk of that class cannot be calibrated")
        self.num_classes_, self.target_class_ = num_classes, target
        self.n_cal_ = next(iter(stacked.values())).shape[0]
        self.images_with_target_ = present
        self._store(stacked)
        self._cache: dict[tuple, Selection] = {}
        self._fitted = True
        return self

    def _begin(self, shape: tuple[int, ...]) -> None:
        """Called with the image size of the first calibration batch."""

    # --------------------------------------------------------------------------------- selection
    @property
    def procedure_(self) -> str:
        """The procedure used: ``procedure``, or CRC for monotone losses and LTT otherwise."""
        return self.procedure or ("crc" if self._monotone else "ltt")

    def _select(self, name: str, losses: torch.Tensor, alpha: float, start: str = "top") -> Selection:
        """The procedure's choice on the table ``name`` (``losses [n, Λ]``) at ``alpha``, cached."""
        key = (name, alpha)
        if key in self._cache:
            return self._cache[key]
        procedure = self.procedure_
        if procedure != "ltt" and not check_monotone(losses):
            raise ValueError(f"the {self.loss!r} losses are not non-increasing in λ for every image, which "
                             f"{procedure.upper()} needs: use procedure='ltt' (--procedure ltt)")
        self._cache[key] = select(losses, procedure, alpha, self.delta, start=start)
        return self._cache[key]

    def _alpha(self, alpha: float | None) -> float:
        return self.alpha if alpha is None else check_level(alpha, "alpha")

    def _probs(self, preds: torch.Tensor) -> torch.Tensor:
        return to_probs(preds, self.kind, self.head)

    def check_preds(self, preds: torch.Tensor) -> None:
        """``ValueError`` unless ``preds [N, C, H, W]`` have the calibrated number of classes."""
        self.check_is_fitted()
        check_fitted_preds(preds, self.head, self.num_classes_, "controller")

    # --------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Parameters and fitted rows as plain tensors and containers (format ``segcal.risk/1``)."""
        self.check_is_fitted()
        return {"format": STATE_FORMAT, "class": type(self).__name__, "params": self.get_params(),
                "num_classes": self.num_classes_, "target_class": self.target_class_, "n_cal": self.n_cal_,
                "images_with_target": self.images_with_target_, "rows": self._stored()}

    def load_state_dict(self, state: dict[str, Any]):
        """Restore a :meth:`state_dict`; returns ``self``."""
        self.set_params(**state["params"])
        self.num_classes_, self.target_class_ = int(state["num_classes"]), state["target_class"]
        self.n_cal_, self.images_with_target_ = int(state["n_cal"]), int(state["images_with_target"])
        self._store(dict(state["rows"]))
        self._cache, self._fitted = {}, True
        return self


def risk_from_state_dict(state: dict[str, Any]) -> RiskControllerBase:
    """A fitted controller from its :meth:`~RiskControllerBase.state_dict` (``ValueError`` if it is not one)."""
    from segcal.risk.margin import MarginController
    from segcal.risk.threshold import RiskController

    classes = {"RiskController": RiskController, "MarginController": MarginController}
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("class") not in classes:
        raise ValueError(f"not a segcal risk controller state (expected format {STATE_FORMAT!r})")
    return classes[state["class"]](**state["params"]).load_state_dict(state)
