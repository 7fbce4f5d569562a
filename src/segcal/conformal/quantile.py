"""Finite-sample conformal quantiles of grouped scores.

Scores are grouped by class ``c`` and group ``g`` (a pixel, a Kandinsky group or the whole
image). Two interchangeable stores answer "the k-th smallest score of group (c, g)":

* :class:`SortedScores` — exact: all scores sorted within their group (CSR layout);
* :class:`segcal.stats.score_histogram.ScoreHistogram` with shape ``(G,)`` — conservative
  (upper bin edge), memory independent of the number of scores.

The conformal quantile at level ``1 − α`` from ``n`` scores is the ``k``-th smallest with
``k = ⌈(n + 1)(1 − α)⌉``, and ``1.0`` (the trivial threshold: every class kept) when ``k > n``.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from segcal.stats.score_histogram import ScoreHistogram

# (n + 1)·level is computed in float64; this relative slack keeps e.g. 10 × 0.9 = 9.000000000000002
# from rounding up to 10.
_RANK_RTOL = 1e-12


class GroupedScores(Protocol):
    num_classes: int

    def group_counts(self) -> torch.Tensor: ...  # [C, G] int64

    def order_statistic(self, k: torch.Tensor) -> torch.Tensor: ...  # [A, C, G] → [A, C, G]

    def state_dict(self) -> dict[str, Any]: ...


def conformal_rank(n: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``k = ⌈(n + 1)·level⌉`` for counts ``n [...]`` and levels ``[A]`` → ``[A, ...]`` (int64)."""
    x = (n.double().unsqueeze(0) + 1) * levels.double().view(-1, *([1] * n.ndim))
    return torch.ceil(x * (1 - _RANK_RTOL)).long()


def empirical_rank(n: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``k = ⌈n·level⌉`` clamped to ``[1, n]``: the plain empirical quantile (features, not guarantees)."""
    x = n.double().unsqueeze(0) * levels.double().view(-1, *([1] * n.ndim))
    k = torch.ceil(x * (1 - _RANK_RTOL)).long()
    return torch.minimum(k.clamp_min(1), n.unsqueeze(0).clamp_min(1))


def group_quantiles(scores: GroupedScores, levels: torch.Tensor, conformal: bool = True) -> torch.Tensor:
    """Quantiles ``[A, C, G]`` of every group at ``levels [A]`` (values in ``[0, 1]``, never NaN).

    ``conformal=True``: finite-sample conformal quantile (``0`` for ``k = 0``, ``1`` for ``k > n``,
    including empty groups). ``conformal=False``: empirical quantile (empty groups → NaN-free ``1``;
    callers fill them).
    """
    n = scores.group_counts()
    k = conformal_rank(n, levels) if conformal else empirical_rank(n, levels)
    inside = (k >= 1) & (k <= n.unsqueeze(0))
    values = scores.order_statistic(torch.where(inside, k, torch.ones_like(k)))
    q = torch.where(inside, values, torch.ones_like(values))
    return torch.where(k <= 0, torch.zeros_like(q), q)


def sorted_values(values: torch.Tensor) -> torch.Tensor:
    """``values [M]`` sorted (NumPy's vectorised sort on the CPU: about 15× faster than ``torch.sort`` there)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.detach().numpy()))
    return torch.sort(values).values


def grouped_sorted_values(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values [M]`` sorted by ``keys [M]``, then by value within a key.

    On the CPU, for keys below 2³² and values ≥ 0, one NumPy sort of ``key · 2³² + float bits`` (the bits of a
    non-negative float32 order like its value): about 9× faster than a sort by value and a stable sort by key."""
    if values.device.type == "cpu" and (keys.numel() == 0 or (int(keys.max()) < 2**32 and float(values.min()) >= 0)):
        bits = (values.detach().float() + 0.0).numpy().view(np.uint32)  # + 0.0: −0.0 becomes +0.0
        combined = keys.numpy().astype(np.uint64)
        combined <<= np.uint64(32)
        combined |= bits  # in place: one 8-byte array in all
        combined.sort()
        return torch.from_numpy(combined.astype(np.uint32).view(np.float32))  # the low 32 bits: the value
    order = torch.argsort(values)
    return values[order[torch.sort(keys[order], stable=True).indices]]


SMALL_GROUPS = 64
"""Up to this many (class, group) cells, exact scores are sorted cell by cell (faster than two global sorts)."""


class SortedScores:
    """Exact grouped scores: ``values [M]`` sorted within each of the ``C·G`` groups, ``offsets [C·G + 1]``."""

    def __init__(self, num_classes: int, num_groups: int, values: torch.Tensor, offsets: torch.Tensor) -> None:
        self.num_classes = int(num_classes)
        self.num_groups = int(num_groups)
        self.values = values.float()
        self.offsets = offsets.long()
        if self.offsets.numel() != self.num_classes * self.num_groups + 1:
            raise ValueError(f"offsets must have {self.num_classes * self.num_groups + 1} entries")

    @classmethod
    def from_keys(cls, keys: torch.Tensor, values: torch.Tensor, num_classes: int, num_groups: int
                  ) -> SortedScores:
        """Group ``values [M]`` by ``keys [M] = c·G + g`` and sort each group (few groups: one sort per group;
        many: a sort by value, then a stable sort by key)."""
        counts = torch.bincount(keys, minlength=num_classes * num_groups)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(0)])
        if num_classes * num_groups <= SMALL_GROUPS:
            parts = [sorted_values(values[keys == k]) for k in range(num_classes * num_groups)]
            return cls(num_classes, num_groups, torch.cat(parts) if parts else values[:0], offsets)
        return cls(num_classes, num_groups, grouped_sorted_values(keys, values), offsets)

    def group_counts(self) -> torch.Tensor:
        return (self.offsets[1:] - self.offsets[:-1]).view(self.num_classes, self.num_groups)

    def order_statistic(self, k: torch.Tensor) -> torch.Tensor:
        """Exact ``k``-th smallest, ``k [A, C, G]`` (1 ≤ k ≤ n) → ``[A, C, G]`` float32."""
        if self.values.numel() == 0:
            return torch.ones(k.shape)
        start = self.offsets[:-1].view(1, self.num_classes, self.num_groups)
        return self.values[(start + k - 1).clamp(0, self.values.numel() - 1)]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "exact", "num_classes": self.num_classes, "num_groups": self.num_groups,
                "values": self.values, "offsets": self.offsets}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SortedScores:
        return cls(state["num_classes"], state["num_groups"], state["values"], state["offsets"])


def grouped_from_state_dict(state: dict[str, Any]) -> GroupedScores:
    """Rebuild a :class:`SortedScores` or grouped :class:`ScoreHistogram` from its ``state_dict``."""
    if state.get("kind") == "exact":
        return SortedScores.from_state_dict(state)
    return ScoreHistogram.from_state_dict(state)


def group_thresholds(scores: GroupedScores, image_scores: GroupedScores, levels: torch.Tensor) -> torch.Tensor:
    """Conformal thresholds of every group ``[A, C, G]`` at ``levels [A]``.

    ``scores`` are pooled per group ``[C, G]``; groups that never saw class ``c`` fall back to the
    image-level quantile (``image_scores``, ``G = 1``), which is itself ``1`` (trivial) when class ``c``
    was never seen at all.
    """
    q = group_quantiles(scores, levels)  # [A, C, G]
    empty = scores.group_counts() == 0
    return torch.where(empty.unsqueeze(0), group_quantiles(image_scores, levels), q)


def expand_groups(curves: torch.Tensor, group_map: torch.Tensor) -> torch.Tensor:
    """Per-group values ``[A, C, G]`` → per-pixel ``[A, C, H, W]`` through ``group_map [C, H, W]``."""
    a, (c, h, w) = curves.shape[0], group_map.shape
    return curves.gather(2, group_map.reshape(1, c, h * w).long().expand(a, -1, -1)).view(a, c, h, w)


def pixel_thresholds(scores: GroupedScores, image_scores: GroupedScores, group_map: torch.Tensor,
                     levels: torch.Tensor) -> torch.Tensor:
    """Per-pixel conformal thresholds ``[A, C, H, W]`` at ``levels [A]`` (:func:`group_thresholds` of each
    pixel's group, ``group_map [C, H, W]``)."""
    return expand_groups(group_thresholds(scores, image_scores, levels), group_map)


def fallback_pixels(scores: GroupedScores, group_map: torch.Tensor) -> torch.Tensor:
    """Pixels per class whose group never saw that class (they use the image-level curve), ``[C]``."""
    empty = scores.group_counts() == 0  # [C, G]
    c = group_map.shape[0]
    return empty.gather(1, group_map.reshape(c, -1)).sum(1)


# Default nominal coverage grid 1 − α ∈ {0.05, 0.10, …, 0.95} for evaluation and selection.
COVERAGE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def levels_from_alpha(alpha: float | list[float] | tuple[float, ...] | torch.Tensor, name: str = "alpha"
                      ) -> torch.Tensor:
    """Coverage levels ``1 − α`` (float64 ``[A]``) after checking every ``α ∈ (0, 1)``."""
    a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1)
    if a.numel() == 0 or not bool(((a > 0) & (a < 1)).all()):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {alpha!r}")
    return 1.0 - a
