"""Mergeable per-group histograms of conformal non-conformity scores over :class:`ScoreBins`
(:mod:`segcal.stats.score_bins`: right-closed bins uniform in logit space; a quantile read from a histogram
is the upper edge of the bin holding the exact order statistic, never below it).

Counts are ``[C, *shape, B]``: int32 per pixel (``shape = (H, W)``; at most one score per image
and pixel), int64 once pooled into groups (``shape = (G,)``);
histograms add (``a + b``) and :meth:`ScoreHistogram.all_reduce` sums them across
``torch.distributed`` ranks.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from segcal.stats import compact_counts
from segcal.stats.compact_counts import SPILL_AT, CompactCounts
from segcal.stats.score_bins import ScoreBins

_CHUNK = 8192  # locations per chunk when pooling or cumulating (bounds temporary memory)
COMPACT_STEP = SPILL_AT - 1
"""Images per add into compact counts (one score per image and location: a cell gains at most this)."""
DENSE_AT = 2
"""Compact counts turn into dense int32 once they take this many bytes per cell (their spill table, 16 bytes per
spilled cell, has eaten most of the saving: few classes and many images per location); bounded memory either way."""


def all_reduce_(tensor: torch.Tensor, op: Any = None, group: Any = None) -> torch.Tensor:
    """In-place ``torch.distributed`` all-reduce (sum by default) of a tensor on any device.

    NCCL only reduces CUDA tensors: CPU statistics travel to the current GPU and back.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    op = dist.ReduceOp.SUM if op is None else op
    if dist.get_backend(group) == "nccl" and tensor.device.type != "cuda":
        moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved, op=op, group=group)
        tensor.copy_(moved.to(tensor.device))
    else:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


class ScoreHistogram:
    """Per-class, per-location histograms of scores: ``counts [C, *shape, B]`` (int32, or int64).

    ``update(scores, labels)`` adds, for every pixel of every image, its score to the
    histogram of its label class (class-conditional). ``labels < 0`` are skipped.
    ``num_images`` counts the images seen. With ``compact=True`` (per-pixel histograms of the accumulators) the
    counts live in a :class:`~segcal.stats.compact_counts.CompactCounts` (uint8 plus a sparse overflow table,
    a quarter of the memory, exact): read them by rows (:meth:`rows`, :meth:`class_counts`); ``counts``
    materialises a dense int32 copy.
    """

    def __init__(self, num_classes: int, shape: tuple[int, ...], bins: ScoreBins | None = None,
                 counts: torch.Tensor | CompactCounts | None = None, num_images: int = 0,
                 compact: bool = False) -> None:
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.bins = bins or ScoreBins()
        full = (self.num_classes, *self.shape, self.bins.num_bins)
        if counts is None:
            counts = CompactCounts(math.prod(full)) if compact else torch.zeros(full, dtype=torch.int32)
        elif isinstance(counts, CompactCounts):
            if counts.numel != math.prod(full):
                raise ValueError(f"compact counts hold {counts.numel} cells, expected {full}")
        elif tuple(counts.shape) != full or counts.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"counts must be int32/int64 of shape {full}, got {counts.dtype} {tuple(counts.shape)}")
        self._store = counts
        self.num_images = int(num_images)

    @property
    def compact(self) -> bool:
        return isinstance(self._store, CompactCounts)

    @property
    def counts(self) -> torch.Tensor:
        """Dense counts ``[C, *shape, B]`` (the stored tensor, or an int32 copy of compact counts)."""
        if not self.compact:
            return self._store
        full = (self.num_classes, *self.shape, self.bins.num_bins)
        return self._store.dense(0, self._store.numel).view(full)

    @property
    def count_dtype(self) -> torch.dtype:
        """Dtype of dense reads (:meth:`rows`, :meth:`class_counts`)."""
        return torch.int32 if self.compact else self._store.dtype

    @property
    def num_locations(self) -> int:
        return math.prod(self.shape)

    def flat(self) -> torch.Tensor:
        """Counts viewed as ``[C, G, B]`` with ``G = prod(shape)`` (dense; see :meth:`rows` for compact ones)."""
        return self.counts.view(self.num_classes, self.num_locations, self.bins.num_bins)

    def rows(self, rows: slice) -> torch.Tensor:
        """Dense counts of the locations ``rows`` (a slice of ``range(G)``): ``[C, g, B]``."""
        if not self.compact:
            return self.flat()[:, rows]
        g, b = self.num_locations, self.bins.num_bins
        start, stop, _ = rows.indices(g)
        return torch.stack([self._store.dense((c * g + start) * b, (c * g + stop) * b).view(-1, b)
                            for c in range(self.num_classes)])

    def class_counts(self, c: int) -> torch.Tensor:
        """Dense counts of class ``c``: ``[G, B]``."""
        if not self.compact:
            return self.flat()[c]
        size = self.num_locations * self.bins.num_bins
        return self._store.dense(c * size, (c + 1) * size).view(self.num_locations, self.bins.num_bins)

    def bins_used(self, c: int) -> torch.Tensor:
        """Whether any location holds a class-``c`` score in each bin: bool ``[B]`` (no dense copy)."""
        if not self.compact:
            return self.flat()[c].amax(0) > 0
        size = self.num_locations * self.bins.num_bins
        return self._store.columns_used(c * size, (c + 1) * size, self.bins.num_bins)

    def cells_used(self, c: int) -> int:
        """How many (location, bin) cells hold a class-``c`` score (at most: a spilled compact cell counts twice)."""
        if not self.compact:
            return int(torch.count_nonzero(self.flat()[c]))
        size = self.num_locations * self.bins.num_bins
        low, offsets, _ = self._store.parts(c * size, (c + 1) * size)
        return int(torch.count_nonzero(low)) + offsets.numel()

    def class_cells(self, c: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nonzero class-``c`` counts of the locations ``rows`` as cells ``(location, bin, count int64)``, without a
        dense copy of compact counts (a spilled cell may come twice: its parts add up)."""
        g, b = self.num_locations, self.bins.num_bins
        start, stop, _ = rows.indices(g)
        if not self.compact:
            part = self.flat()[c, start:stop]
            loc, bins = torch.nonzero(part, as_tuple=True)
            return loc + start, bins, part[loc, bins].long()
        low, offsets, counts = self._store.parts((c * g + start) * b, (c * g + stop) * b)
        low = low.view(-1, b)
        loc, bins = torch.nonzero(low, as_tuple=True)
        return (torch.cat([loc, offsets // b]) + start, torch.cat([bins, offsets % b]),
                torch.cat([low[loc, bins].long(), counts]))

    def write_class_columns(self, c: int, columns: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Class-``c`` counts at the bins ``columns`` (bool ``[B]``) written into ``out [*shape, B']`` (any integer
        dtype; a view is fine), without a dense copy of compact counts; returns ``out``."""
        shape, b = (*self.shape, self.bins.num_bins), self.bins.num_bins
        if not self.compact:
            return out.copy_(self.flat()[c].view(shape)[..., columns])
        size = self.num_locations * b
        low, offsets, counts = self._store.parts(c * size, (c + 1) * size)
        out.copy_(low.view(shape)[..., columns])
        kept = columns[offsets % b]
        if bool(kept.any()):
            cols = columns.long().cumsum(0) - 1
            where = torch.unravel_index(offsets[kept] // b, self.shape)
            out.index_put_((*where, cols[offsets[kept] % b]), counts[kept].to(out.dtype), accumulate=True)
        return out

    def class_histogram(self, c: int) -> ScoreHistogram:
        """Class ``c`` alone, as a dense one-class histogram ``[1, *shape, B]``."""
        counts = self.class_counts(c).view(1, *self.shape, self.bins.num_bins)
        return ScoreHistogram(1, self.shape, self.bins, counts, self.num_images)

    def reshaped(self, shape: tuple[int, ...]) -> ScoreHistogram:
        """The same counts (shared storage) seen with locations ``shape`` of the same size."""
        if math.prod(shape) != self.num_locations:
            raise ValueError(f"cannot view {self.shape} locations as {tuple(shape)}")
        store = self._store if self.compact else self._store.view(self.num_classes, *shape, self.bins.num_bins)
        return ScoreHistogram(self.num_classes, shape, self.bins, store, self.num_images)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add scores ``[N, *shape]`` (float) with labels ``[N, *shape]`` (int, ``< 0`` = skip)."""
        if tuple(scores.shape[1:]) != self.shape or scores.shape != labels.shape:
            raise ValueError(
                f"scores and labels must both have shape [N, {', '.join(map(str, self.shape))}],"
                f" got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        step = COMPACT_STEP if self.compact else max(1, scores.shape[0])
        for s, y in zip(scores.split(step), labels.split(step)):  # a compact add gives a cell ≤ COMPACT_STEP
            self._add(s, y)
            self._maybe_dense()
        self.num_images += scores.shape[0]

    def _maybe_dense(self) -> None:
        """Compact counts that take :data:`DENSE_AT` bytes per cell become dense int32 (every read handles both)."""
        if self.compact and self._store.nbytes >= DENSE_AT * self._store.numel:
            self._store = self.counts

    def _add(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        n, g, b = scores.shape[0], self.num_locations, self.bins.num_bins
        y = labels.reshape(n, g).long()
        valid = (y >= 0) & (y < self.num_classes)
        idx = self.bins.index(scores.reshape(n, g))  # flat index (class·G + location)·B + bin
        idx += torch.arange(0, g * b, b, device=idx.device)
        idx += y.clamp(0, self.num_classes - 1) * (g * b)
        self._store = self._store.to(scores.device)
        if self.compact:
            self._store.scatter_add_(idx.view(-1), valid.view(-1).to(torch.uint8), most=n)
        else:
            self._store.view(-1).scatter_add_(0, idx.view(-1), valid.view(-1).to(self._store.dtype))

    def _check_compatible(self, other: ScoreHistogram) -> None:
        if (self.num_classes, self.shape, self.bins) != (other.num_classes, other.shape, other.bins):
            raise ValueError(
                "cannot merge histograms with different classes/shape/bins:"
                f" {(self.num_classes, self.shape, self.bins)} vs {(other.num_classes, other.shape, other.bins)}"
            )

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        self._check_compatible(other)
        if self.compact or other.compact:
            out = ScoreHistogram(self.num_classes, self.shape, self.bins, compact=True)
            return out.merge(self).merge(other)
        return ScoreHistogram(self.num_classes, self.shape, self.bins,
                              self.counts + other.counts.to(self.counts.device),
                              self.num_images + other.num_images)

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """In-place ``self += other``; returns ``self``."""
        self._check_compatible(other)
        if self.compact:
            self._store.merge_(other._store if other.compact else CompactCounts.from_dense(other.counts))
            self._maybe_dense()
        else:
            self._store += other.counts.to(self._store.device)
        self.num_images += other.num_images
        return self

    def all_reduce(self, group: Any = None) -> ScoreHistogram:
        """Sum counts and image counts over all ranks of ``torch.distributed`` (in place). Compact counts travel
        as dense int64 chunks, and so do int32 counts (what compact counts become, :data:`DENSE_AT`): ranks whose
        histograms took different forms make the same collective calls."""
        if self.compact:
            self._store.map_dense_(lambda chunk: all_reduce_(chunk, group=group))
            self._maybe_dense()
        elif self._store.dtype == torch.int32:
            flat, step = self._store.view(-1), compact_counts._CHUNK
            for start in range(0, flat.numel(), step):
                part = flat[start:start + step]
                part.copy_(all_reduce_(part.long(), group=group))
        else:
            all_reduce_(self._store, group=group)
        self.num_images = int(all_reduce_(torch.tensor([self.num_images]), group=group).item())
        return self

    def group_counts(self) -> torch.Tensor:
        """Number of scores per class and location, ``[C, G]`` (int64)."""
        out = torch.empty(self.num_classes, self.num_locations, dtype=torch.long, device=self.device)
        for start in range(0, self.num_locations, _CHUNK):
            rows = slice(start, start + _CHUNK)
            out[:, rows] = self.rows(rows).sum(-1, dtype=self.count_dtype)  # in the count dtype: no int64 copy
        return out

    @property
    def device(self) -> torch.device:
        return self._store.device

    def to(self, device: torch.device | str) -> ScoreHistogram:
        """In place: move the counts to ``device``; returns ``self``."""
        self._store = self._store.to(device)
        return self

    def _cumulative(self):
        """``(locations, cumulative counts [C, g, B])`` chunk by chunk (bounded temporary memory)."""
        for start in range(0, self.num_locations, _CHUNK):
            rows = slice(start, start + _CHUNK)
            yield rows, self.rows(rows).cumsum(-1, dtype=self.count_dtype)

    def order_statistic(self, k: torch.Tensor) -> torch.Tensor:
        """Conservative ``k``-th smallest score, ``k [A, C, G]`` (1 ≤ k ≤ n) → ``[A, C, G]`` float32.

        The upper edge of the bin holding the exact ``k``-th smallest score.
        """
        kk = k.to(self.count_dtype).permute(1, 2, 0).contiguous()  # [C, G, A]
        idx = torch.empty(kk.shape, dtype=torch.long, device=kk.device)
        for rows, cum in self._cumulative():
            idx[:, rows] = torch.searchsorted(cum, kk[:, rows].contiguous())
        return self.bins.upper_edge(idx.clamp_max(self.bins.num_bins - 1)).permute(2, 0, 1)

    def count_leq(self, thresholds: torch.Tensor) -> torch.Tensor:
        """Scores ``≤ thresholds`` per class and location: ``[A, C, G]`` → ``[A, C, G]`` (int64).

        Exact when each threshold is a bin edge (as histogram quantiles are); otherwise the
        whole bin holding the threshold is counted.
        """
        idx = self.bins.index(thresholds).permute(1, 2, 0)  # [C, G, A]
        out = torch.empty(idx.shape, dtype=torch.long, device=idx.device)
        for rows, cum in self._cumulative():
            out[:, rows] = cum.gather(-1, idx[:, rows])
        return out.permute(2, 0, 1)

    def pool(self, group_index: torch.Tensor, num_groups: int) -> ScoreHistogram:
        """Sum location histograms into groups: ``group_index [C, G]`` in ``[0, num_groups)`` → ``[C, num_groups, B]``.

        Pooled counts are int64 (a group can hold more than 2³¹ scores).
        """
        out = torch.zeros(self.num_classes, num_groups, self.bins.num_bins, dtype=torch.int64, device=self.device)
        index = group_index.to(self.device)
        for start in range(0, self.num_locations, _CHUNK):  # chunks: no int64 copy of all counts
            rows = slice(start, start + _CHUNK)
            block = self.rows(rows)
            for c in range(self.num_classes):
                out[c].index_add_(0, index[c, rows], block[c].long())
        return ScoreHistogram(self.num_classes, (num_groups,), self.bins, out, self.num_images)

    def state_dict(self) -> dict[str, Any]:
        """Counts compact, or int32 when they fit (pooled int64 histograms stored at half the size)."""
        counts = self._store.state_dict() if self.compact else self._store
        if not self.compact and counts.dtype == torch.int64 and (counts.numel() == 0 or int(counts.max()) < 2**31):
            counts = counts.to(torch.int32)
        return {"counts": counts, "num_images": self.num_images, "num_classes": self.num_classes,
                "shape": list(self.shape), "bins": self.bins.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ScoreHistogram:
        bins, shape = ScoreBins.from_state_dict(state["bins"]), tuple(state["shape"])
        counts = state["counts"]
        if isinstance(counts, dict):
            counts = CompactCounts.from_state_dict(counts, int(state["num_classes"]) * math.prod(shape)
                                                   * bins.num_bins)
        return cls(int(state["num_classes"]), shape, bins, counts, int(state["num_images"]))

