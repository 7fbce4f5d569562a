"""Score bins of the conformal histograms: right-closed, uniform in logit space.

Scores ``s = 1 − p`` live in ``[0, 1]`` and concentrate near 0 (confident, correct pixels)
with a tail towards 1, so the bins are uniform in **logit space** of the score:

    edges = [0, σ(t_1), …, σ(t_{B−1}), 1],   t_i = linspace(logit_min, logit_max, B − 1)

Bins are right-closed: bin ``b`` holds ``e_b < s ≤ e_{b+1}`` (bin 0 holds ``[0, e_1]``).
A quantile read from a histogram is the **upper edge** of the bin that holds the exact
order statistic, so it is never below the exact value (conformal coverage is kept).

Worst-case gap (tested): with ``q`` the exact order statistic and ``q̃`` the histogram one,

* ``q ≤ e_1``               → ``q̃ = e_1 = σ(logit_min)`` (absolute gap ≤ ``e_1``);
* ``e_1 < q ≤ e_{B−1}``     → ``logit(q̃) − logit(q) < δ = max_b logit(e_{b+1}) − logit(e_b)``
  (:meth:`ScoreBins.max_logit_gap`; ≈ ``(logit_max − logit_min)/(B − 2)``, i.e. a relative
  gap ``q̃/q < e^δ`` near 0 and ``(1 − q̃)/(1 − q) > e^{−δ}`` near 1);
* ``q > e_{B−1}``           → ``q̃ = 1`` (the trivial threshold).

Defaults (256 bins, logits −40…14): ``e_1 ≈ 4e-18``, ``e_{B−1} ≈ 1 − 8e-7``; nominal logit step
54/254 ≈ 0.213 (relative gap ≤ 24 % near 0), ``δ ≈ 0.24`` over the float32 edges (float32
rounding widens a few bins next to 1).
"""
from __future__ import annotations

from typing import Any

import torch


class ScoreBins:
    """Right-closed bins on ``[0, 1]``, uniform in logit space between ``logit_min`` and ``logit_max``."""

    def __init__(self, num_bins: int = 256, logit_min: float = -40.0, logit_max: float = 14.0) -> None:
        if num_bins < 3:
            raise ValueError(f"num_bins must be at least 3, got {num_bins}")
        if not logit_min < logit_max:
            raise ValueError(f"logit_min must be < logit_max, got {logit_min} and {logit_max}")
        self.num_bins = int(num_bins)
        self.logit_min = float(logit_min)
        self.logit_max = float(logit_max)
        t = torch.linspace(self.logit_min, self.logit_max, self.num_bins - 1, dtype=torch.float64)
        inner = torch.sigmoid(t).float()
        self.inner_edges = inner  # [B − 1] float32
        self.edges = torch.cat([torch.zeros(1), inner, torch.ones(1)])  # [B + 1] float32
        self._step = (self.logit_max - self.logit_min) / (self.num_bins - 2)

    def index(self, scores: torch.Tensor) -> torch.Tensor:
        """Bin index (int64, same shape) of float32 scores in ``[0, 1]``.

        Computed from the score's logit, then corrected by one bin against the float32 edges,
        so it equals ``torch.bucketize(scores, inner_edges)`` (right-closed) at a third of the cost.
        """
        s = scores.float()
        return self._corrected(s, torch.log(s / (1 - s)))  # ±inf at 0 and 1, clamped; float error corrected

    def locate(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin index (int64, as :meth:`index`) and place ``t ∈ [0, 1]`` (float64) of float32 ``scores`` inside
        their bins, linear in the logit between the bin's float32 edges; ``t = 1`` in the first and last bins
        (whose outer edges 0 and 1 have no finite logit). One float64 logarithm per score serves both."""
        s = scores.float()
        wide = s.double()
        logit = torch.log(wide / (1 - wide))  # ±inf at 0 and 1 (outer bins, masked)
        k = self._corrected(s, logit)
        table = self.edge_logits.to(s.device)
        lo, hi = table.index_select(0, k.view(-1)).view(k.shape), table.index_select(0, k.view(-1) + 1).view(k.shape)
        t = logit.sub_(lo).div_(hi.sub_(lo)).clamp_(0, 1)
        return k, t.masked_fill_((k == 0) | (k == self.num_bins - 1), 1.0)

    def _corrected(self, s: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """Bin index of float32 scores ``s`` from their (approximate) ``logit``: the nominal bin, corrected by
        one bin against the float32 edges."""
        edges = self.edges.to(s.device)
        k = torch.ceil((logit - self.logit_min) / self._step).clamp_(0, self.num_bins - 1).long()
        k -= ((s <= edges.index_select(0, k.view(-1)).view(k.shape)) & (k > 0)).long()
        k += (s > edges.index_select(0, k.view(-1) + 1).view(k.shape)).long()
        return k

    @property
    def edge_logits(self) -> torch.Tensor:
        """Logits of the float32 edges ``[B + 1]`` float64 (``−inf`` and ``+inf`` at the outer edges 0 and 1)."""
        e = self.edges.double()
        return torch.log(e) - torch.log1p(-e)

    def upper_edge(self, index: torch.Tensor) -> torch.Tensor:
        """Upper edge (float32) of bins ``index``."""
        return self.edges.to(index.device)[index + 1]

    def max_logit_gap(self) -> float:
        """``δ``: the largest logit width of an inner bin (``e_1 < s ≤ e_{B−1}``), from the float32 edges."""
        e = self.inner_edges.double()
        logit = torch.log(e) - torch.log1p(-e)
        return float((logit[1:] - logit[:-1]).max())

    def state_dict(self) -> dict[str, Any]:
        return {"num_bins": self.num_bins, "logit_min": self.logit_min, "logit_max": self.logit_max}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ScoreBins:
        return cls(int(state["num_bins"]), float(state["logit_min"]), float(state["logit_max"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoreBins) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"ScoreBins(num_bins={self.num_bins}, logit_min={self.logit_min}, logit_max={self.logit_max})"
