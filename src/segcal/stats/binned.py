"""Binned calibration sums: the mergeable sufficient statistics of the ECE family.

Every calibration error with hard bins (ECE, MCE, classwise ECE, per-pixel ECE maps,
reliability diagrams) is a function of three per-bin sums over samples: the count, the sum
of confidences and the sum of correctness indicators. :class:`BinnedStats` holds them for any
number of independent *cells* (one global histogram, one per class, one per pixel ...),
bins last: ``[*cells, B]``. Sums add, so statistics of disjoint data merge with ``a + b`` and
reduce across processes with one ``torch.distributed`` all-reduce (sum).

All three sums are float64 (counts are exact up to 2⁵³ samples per bin) and are filled by
one ``index_add_`` each per batch; three separate tables keep the per-pixel map's scatter
cache-friendly (see ``benchmarks/bench_metrics.py``).

Bin schemes (index functions returning ``int64`` bin indices):

* :func:`equal_width_bins` – ``B`` bins ``[k/B, (k+1)/B)`` with the last bin closed, i.e.
  ``b = min(floor(B·p), B − 1)`` computed in float32. torchmetrics gives ``p == 1`` an
  extra bin of its own; segcal counts it in the last bin.
* :func:`logit_bins` – fine bins uniform in ``logit(p)`` on ``[−LOGIT_RANGE, LOGIT_RANGE]``
  (the float32 range of ``p`` short of exactly 0 and 1, which land in the end bins): fine
  where segmentation confidences concentrate, near 1. Used for equal-mass (adaptive) bins.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOGIT_RANGE = 17.0
"""Half-width of the logit range covered by :func:`logit_bins` (float32 1 − p ≥ 6e-8 ⇒ |logit| ≤ 16.7)."""


def equal_width_bins(conf: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-width bin index ``min(floor(bins·p), bins − 1)`` of confidences ``p`` in [0, 1] (any shape)."""
    return (conf.float() * bins).to(torch.int64).clamp_(0, bins - 1)


def logit_bins(conf: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of ``p`` among ``bins`` bins uniform in ``logit(p)`` over ``[−LOGIT_RANGE, LOGIT_RANGE]``."""
    p = conf.float()
    z = torch.log(p) - torch.log1p(-p)
    z = z.clamp_(-LOGIT_RANGE, LOGIT_RANGE).add_(LOGIT_RANGE).mul_(bins / (2 * LOGIT_RANGE))
    return z.to(torch.int64).clamp_(0, bins - 1)


def logit_bin_edges(bins: int) -> torch.Tensor:
    """Edges ``[bins + 1]`` in probability space of :func:`logit_bins` (0 and 1 at the ends)."""
    edges = torch.sigmoid(torch.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1, dtype=torch.float64))
    edges[0], edges[-1] = 0.0, 1.0
    return edges


def _nan_where_empty(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with NaN where ``den == 0``."""
    empty = den == 0
    return (num / den.masked_fill(empty, 1)).masked_fill_(empty, float("nan"))


@dataclass
class BinnedStats:
    """Per-bin sums for ``cells`` independent histograms of ``B`` bins, all ``float64 [*cells, B]``.

    Attributes:
        count: number of samples per bin.
        conf_sum: sum of their confidences.
        correct_sum: sum of their correctness indicators (0/1).
    """

    count: torch.Tensor
    conf_sum: torch.Tensor
    correct_sum: torch.Tensor

    def __post_init__(self) -> None:
        if not self.count.shape == self.conf_sum.shape == self.correct_sum.shape or self.count.ndim == 0:
            raise ValueError(
                "count, conf_sum and correct_sum must share one shape [*cells, B]; got "
                f"{tuple(self.count.shape)}, {tuple(self.conf_sum.shape)}, {tuple(self.correct_sum.shape)}"
            )

    @classmethod
    def zeros(cls, cells: tuple[int, ...], bins: int, device: torch.device | str | None = None) -> BinnedStats:
        """Empty statistics of shape ``[*cells, bins]``."""
        return cls(*(torch.zeros(*cells, bins, dtype=torch.float64, device=device) for _ in range(3)))

    @classmethod
    def from_samples(
        cls, bin_index: torch.Tensor, conf: torch.Tensor, correct: torch.Tensor, bins: int,
        cell: torch.Tensor | None = None, cells: tuple[int, ...] = (),
    ) -> BinnedStats:
        """Statistics ``[*cells, bins]`` of samples (all arguments of one shape); see :meth:`add_samples_`."""
        stats = cls.zeros(cells, bins, device=conf.device)
        return stats.add_samples_(bin_index, conf, correct, cell)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(count, conf_sum, correct_sum)``."""
        return self.count, self.conf_sum, self.correct_sum

    # -- shape ---------------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return self.count.shape[-1]

    @property
    def cells(self) -> tuple[int, ...]:
        return tuple(self.count.shape[:-1])

    # -- accumulation --------------------------------------------------------------------
    def add_samples_(
        self, bin_index: torch.Tensor, conf: torch.Tensor, correct: torch.Tensor,
        cell: torch.Tensor | None = None, weight: torch.Tensor | None = None,
    ) -> BinnedStats:
        """Add (weighted) samples in place and return ``self``.

        Args:
            bin_index: ``int64`` bin of each sample in ``[0, B)``.
            conf: confidence of each sample (float).
            correct: bool/number correctness of each sample.
            cell: ``int64`` flat index of each sample's cell into ``cells`` (row-major);
                ``None`` when there is a single cell (``cells == ()``).
            weight: per-sample weight (e.g. 0 for ignored pixels, which then leave no trace);
                ``None`` for 1.
            All have the shape of ``bin_index`` (any) or broadcast to it.
        """
        shape = bin_index.shape
        flat = (bin_index if cell is None else cell * self.num_bins + bin_index).reshape(-1)
        conf = conf.to(torch.float64).expand(shape).reshape(-1)
        correct = correct.to(torch.float64).expand(shape).reshape(-1)
        if weight is None:
            weight = torch.ones((), dtype=torch.float64, device=flat.device).expand(flat.numel())
        else:
            weight = weight.to(torch.float64).expand(shape).reshape(-1)
            conf, correct = conf * weight, correct * weight
        self.count.view(-1).index_add_(0, flat, weight)
        self.conf_sum.view(-1).index_add_(0, flat, conf)
        self.correct_sum.view(-1).index_add_(0, flat, correct)
        return self

    def __add__(self, other: BinnedStats) -> BinnedStats:
        if not isinstance(other, BinnedStats):
            return NotImplemented
        if other.count.shape != self.count.shape:
            raise ValueError(
                f"cannot merge BinnedStats of shapes {tuple(self.count.shape)} and {tuple(other.count.shape)}")
        return BinnedStats(*(a + b for a, b in zip(self.tensors(), other.tensors())))

    def merge(self, other: BinnedStats) -> BinnedStats:
        """``self + other`` (statistics of the union of both data sets)."""
        return self + other

    def all_reduce(self, group=None) -> BinnedStats:
        """Sum the statistics over all processes of ``torch.distributed`` in place; returns ``self``."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for t in self.tensors():
                dist.all_reduce(t, group=group)
        return self

    def sum(self, dim: int | tuple[int, ...]) -> BinnedStats:
        """Pool cells over cell dimension(s) ``dim`` (never the bin dimension)."""
        nd = len(self.cells)
        dims = tuple(d % nd for d in ((dim,) if isinstance(dim, int) else dim))
        return BinnedStats(*(t.sum(dims) for t in self.tensors()))

    # -- per-bin views -------------------------------------------------------------------
    def total(self) -> torch.Tensor:
        """Samples per cell, ``[*cells]``."""
        return self.count.sum(-1)

    def accuracy(self) -> torch.Tensor:
        """Mean correctness per bin ``[*cells, B]`` (NaN for empty bins)."""
        return _nan_where_empty(self.correct_sum, self.count)

    def confidence(self) -> torch.Tensor:
        """Mean confidence per bin ``[*cells, B]`` (NaN for empty bins)."""
        return _nan_where_empty(self.conf_sum, self.count)

    # -- calibration errors --------------------------------------------------------------
    def ece(self) -> torch.Tensor:
        """Expected calibration error ``Σ_b (n_b/n)·|acc_b − conf_b|`` per cell, ``float64 [*cells]``.

        NaN for cells without samples.
        """
        gap = (self.conf_sum - self.correct_sum).abs().sum(-1)
        return _nan_where_empty(gap, self.total())

    def signed_gap(self) -> torch.Tensor:
        """Confidence minus accuracy over all bins per cell, ``float64 [*cells]`` (positive: over-confident);
        NaN for cells without samples."""
        return _nan_where_empty((self.conf_sum - self.correct_sum).sum(-1), self.total())

    def overall_accuracy(self) -> torch.Tensor:
        """Accuracy over all bins per cell, ``float64 [*cells]`` (NaN for cells without samples)."""
        return _nan_where_empty(self.correct_sum.sum(-1), self.total())

    def mce(self) -> torch.Tensor:
        """Maximum calibration error ``max_b |acc_b − conf_b|`` over non-empty bins, ``[*cells]`` (NaN if none)."""
        gap = (self.accuracy() - self.confidence()).abs()
        worst = torch.nan_to_num(gap, nan=-1.0).amax(-1)
        return torch.where(worst >= 0, worst, torch.full_like(worst, float("nan")))

    def rmsce(self) -> torch.Tensor:
        """Root-mean-square calibration error ``sqrt(Σ_b (n_b/n)·(acc_b − conf_b)²)``, ``[*cells]``."""
        sq = torch.nan_to_num((self.accuracy() - self.confidence()) ** 2) * self.count
        return _nan_where_empty(sq.sum(-1), self.total()).sqrt()

