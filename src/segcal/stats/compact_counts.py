"""Compact non-negative integer counts: a uint8 table with a sparse int64 overflow table.

Per-pixel score histograms ``[C, H, W, B]`` are mostly small numbers: a pixel's ``N`` scores spread over tens of
bins. :class:`CompactCounts` stores each cell as ``low (uint8) + spill (int64, sparse)``: adds go to ``low``;
before they could pass 255, every cell holding at least :data:`SPILL_AT` moves its value to the spill table
(sorted flat indices and their counts). Memory is a quarter of int32 plus 16 bytes per spilled cell, and every
count is exact. ::

    counts = CompactCounts(1_000)
    counts.scatter_add_(index, most=1)            # each call adds at most ``most`` to any one cell
    counts.dense(0, 100)                          # int32 [100], low + spill
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

LOW_MAX = 255
SPILL_AT = 128
"""Cells holding at least this many move to the spill table when the uint8 table could overflow."""
_CHUNK = 1 << 22  # cells per step of a pass over the table (bounds temporary memory: 32 MiB of int64)


class CompactCounts:
    """``numel`` exact counts as ``low [numel] uint8`` plus ``spill_index`` (sorted int64) → ``spill_count``.

    ``headroom`` is what any one cell can still receive before ``low`` could overflow; :meth:`scatter_add_`
    spills when an add could pass it.
    """

    def __init__(self, numel: int, device: torch.device | str | None = None) -> None:
        self.low = torch.zeros(int(numel), dtype=torch.uint8, device=device)
        self.spill_index = torch.zeros(0, dtype=torch.long, device=device)
        self.spill_count = torch.zeros(0, dtype=torch.long, device=device)
        self.headroom = LOW_MAX

    @property
    def numel(self) -> int:
        return self.low.numel()

    @property
    def device(self) -> torch.device:
        return self.low.device

    @property
    def nbytes(self) -> int:
        return self.low.numel() + 16 * self.spill_index.numel()

    def to(self, device: torch.device | str) -> CompactCounts:
        """In place: move every table to ``device``; returns ``self``."""
        self.low, self.spill_index, self.spill_count = (t.to(device) for t in
                                                         (self.low, self.spill_index, self.spill_count))
        return self

    def scatter_add_(self, index: torch.Tensor, values: torch.Tensor | None = None, most: int = 1) -> None:
        """Add ``values`` (uint8-representable, default 1) at flat ``index``; no cell may receive more than
        ``most`` (≤ :data:`SPILL_AT` − 1) in this call."""
        if most > LOW_MAX - SPILL_AT:
            raise ValueError(f"one add may give a cell at most {LOW_MAX - SPILL_AT}, got {most}")
        if most > self.headroom:
            self.spill_()
        ones = torch.ones(index.numel(), dtype=torch.uint8, device=self.device) if values is None else values
        self.low.scatter_add_(0, index.reshape(-1), ones.reshape(-1).to(torch.uint8))
        self.headroom -= most

    def spill_(self) -> None:
        """Move every cell holding ≥ :data:`SPILL_AT` to the spill table (one pass over ``low``)."""
        self._rewrite(lambda start, low: low.long())

    def dense(self, start: int, stop: int, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        """Counts of cells ``[start, stop)`` as a dense tensor of ``dtype``."""
        low, offsets, counts = self.parts(start, stop)
        out = low.to(dtype)
        if offsets.numel():
            out.index_add_(0, offsets, counts.to(dtype))
        return out

    def parts(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cells ``[start, stop)`` as stored: the uint8 table (a view) and the spill entries (offsets from
        ``start``, int64 counts); a cell's count is its low value plus its spill count."""
        lo, hi = torch.searchsorted(self.spill_index, torch.tensor([start, stop], device=self.device)).tolist()
        return self.low[start:stop], self.spill_index[lo:hi] - start, self.spill_count[lo:hi]

    def columns_used(self, start: int, stop: int, width: int) -> torch.Tensor:
        """Cells ``[start, stop)`` seen as rows of ``width``: whether each column holds a nonzero count (bool
        ``[width]``), without a dense copy."""
        low, offsets, _ = self.parts(start, stop)
        out = low.view(-1, width).amax(0) > 0
        out[offsets % width] = True
        return out

    def merge_(self, other: CompactCounts) -> CompactCounts:
        """In place ``self += other``; returns ``self``."""
        if other.numel != self.numel:
            raise ValueError(f"cannot merge compact counts of {self.numel} and {other.numel} cells")
        moved = other.low.to(self.device)
        self._rewrite(lambda start, low: low.long() + moved[start:start + low.numel()].long())
        self._add_spill(other.spill_index.to(self.device), other.spill_count.to(self.device))
        return self

    def map_dense_(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> CompactCounts:
        """In place: replace every chunk of dense int64 counts by ``fn(chunk)`` (e.g. an all-reduce)."""
        index, count = self.spill_index, self.spill_count
        self.spill_index, self.spill_count = index[:0], count[:0]

        def chunk(start: int, low: torch.Tensor) -> torch.Tensor:
            dense = low.long()
            lo, hi = torch.searchsorted(index, torch.tensor([start, start + low.numel()], device=self.device))
            dense.index_add_(0, index[lo:hi] - start, count[lo:hi])
            return fn(dense)
        self._rewrite(chunk)
        return self

    def _rewrite(self, values: Callable[[int, torch.Tensor], torch.Tensor]) -> None:
        """Chunk by chunk: ``v = values(start, low chunk)`` (int64) is added back, cells ≥ :data:`SPILL_AT`
        going to the spill table; then ``headroom`` is what the fullest cell has left."""
        fullest, new_index, new_count = 0, [], []
        for start in range(0, self.numel, _CHUNK):
            low = self.low[start:start + _CHUNK]
            v = values(start, low)
            big = torch.nonzero(v >= SPILL_AT).flatten()
            if big.numel():
                new_index.append(big + start)
                new_count.append(v[big])
                v[big] = 0
            low.copy_(v)
            if v.numel():
                fullest = max(fullest, int(v.max()))
        if new_index:
            self._add_spill(torch.cat(new_index), torch.cat(new_count))
        self.headroom = LOW_MAX - fullest

    def _add_spill(self, index: torch.Tensor, count: torch.Tensor) -> None:
        if index.numel() == 0:
            return
        keys, inverse = torch.unique(torch.cat([self.spill_index, index]), return_inverse=True)
        total = torch.zeros(keys.numel(), dtype=torch.long, device=self.device)
        total.index_add_(0, inverse, torch.cat([self.spill_count, count]))
        self.spill_index, self.spill_count = keys, total

    @classmethod
    def from_dense(cls, counts: torch.Tensor) -> CompactCounts:
        """The compact form of non-negative integer ``counts`` (any shape, read flat)."""
        out, flat = cls(counts.numel(), counts.device), counts.reshape(-1)
        out._rewrite(lambda start, low: flat[start:start + low.numel()].long())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"low": self.low, "spill_index": self.spill_index, "spill_count": self.spill_count}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], numel: int) -> CompactCounts:
        """Checked: ``ValueError`` unless the tables are a valid compact form of ``numel`` counts."""
        low, index, count = state.get("low"), state.get("spill_index"), state.get("spill_count")
        ok = (isinstance(low, torch.Tensor) and low.dtype == torch.uint8 and low.numel() == numel
              and isinstance(index, torch.Tensor) and index.dtype == torch.long and index.ndim == 1
              and isinstance(count, torch.Tensor) and count.dtype == torch.long and count.shape == index.shape)
        if ok and index.numel():
            ok = bool((index[1:] > index[:-1]).all()) and 0 <= int(index[0]) and int(index[-1]) < numel \
                and bool((count >= 0).all())
        if not ok:
            raise ValueError(f"not a compact count table of {numel} cells (uint8 low, sorted int64 spill_index "
                             "in range, int64 spill_count of the same length)")
        out = cls(0, low.device)
        out.low, out.spill_index, out.spill_count = low.reshape(-1), index, count
        out.headroom = LOW_MAX - int(low.max()) if low.numel() else LOW_MAX
        return out
