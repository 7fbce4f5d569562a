"""Streaming stores of class-conditional calibration scores, per pixel.

* :class:`ScoreBank` — exact: keeps every image's true-class score map ``[N, H, W]`` (float32)
  and label map (int16). Memory grows with N (≈ 6 bytes per pixel); images can be
  sub-sampled (:meth:`ScoreBank.subset`), which is what the low-data sweep needs: score the
  calibration pool once, then calibrate any n_cal / repeat without re-running the model.
* :class:`segcal.stats.score_histogram.ScoreHistogram` — per-pixel histograms ``[C, H, W, B]``:
  memory independent of N, conservative quantiles.
* :class:`ScoreAccumulator` — one of the two; ``mode="auto"`` keeps exact scores until they
  exceed ``max_exact_scores`` and then bins them (and continues binned).

All of them merge (``a + b`` / ``merge``) and reduce over ``torch.distributed`` ranks:
histograms by an all-reduce sum, banks by an all-gather (every rank must have seen ≥ 1 image).
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.distributed as dist

from segcal.conformal.quantile import SortedScores
from segcal.conformal.sets import coverage_counts
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram, all_reduce_

Mode = Literal["auto", "exact", "histogram"]
MODES = ("auto", "exact", "histogram")
DEFAULT_MAX_EXACT_SCORES = 2**26  # ≈ 400 MB of scores + labels before "auto" switches to histograms


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def location_histogram(num_classes: int, shape: tuple[int, ...], bins: ScoreBins | None) -> ScoreHistogram:
    """An empty histogram for accumulating: compact counts per pixel, int64 for one pooled location."""
    if math.prod(shape) == 1:
        bins = bins or ScoreBins()
        return ScoreHistogram(num_classes, shape, bins, torch.zeros(num_classes, *shape, bins.num_bins,
                                                                    dtype=torch.long))
    return ScoreHistogram(num_classes, shape, bins, compact=True)


class ScoreBank:
    """Exact per-image scores: ``scores [N, H, W]`` float32 and ``labels [N, H, W]`` (``-1`` = no label)."""

    def __init__(self, num_classes: int, shape: tuple[int, int],
                 scores: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> None:
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.num_scores = 0  # labelled pixels stored
        if scores is not None:
            self.update(scores, labels)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Append ``scores [N, H, W]`` and ``labels [N, H, W]`` (``< 0`` = skip)."""
        if tuple(scores.shape[1:]) != self.shape or scores.shape != labels.shape:
            raise ValueError(f"scores and labels must both have shape [N, {self.shape[0]}, {self.shape[1]}],"
                             f" got {tuple(scores.shape)} and {tuple(labels.shape)}")
        y = labels.long()
        y = torch.where((y >= 0) & (y < self.num_classes), y, torch.full_like(y, -1))
        self._scores.append(scores.detach().float())
        self._labels.append(y.to(torch.int16))
        self.num_scores += int((y >= 0).sum())

    def _consolidate(self) -> None:
        if len(self._scores) != 1:
            empty = torch.zeros(0, *self.shape)
            self._scores = [torch.cat(self._scores) if self._scores else empty]
            self._labels = [torch.cat(self._labels) if self._labels else empty.to(torch.int16)]

    @property
    def scores(self) -> torch.Tensor:
        self._consolidate()
        return self._scores[0]

    @property
    def raw_labels(self) -> torch.Tensor:
        """Labels ``[N, H, W]`` as stored (int16, ``-1`` = no label)."""
        self._consolidate()
        return self._labels[0]

    @property
    def labels(self) -> torch.Tensor:
        """Labels ``[N, H, W]`` int64 (``-1`` = no label)."""
        self._consolidate()
        return self._labels[0].long()

    @property
    def num_images(self) -> int:
        return sum(s.shape[0] for s in self._scores)

    def __len__(self) -> int:
        return self.num_images

    def to(self, device: torch.device | str) -> ScoreBank:
        """In place: move the stored scores and labels to ``device`` (one tensor each); returns ``self``."""
        self._consolidate()
        self._scores, self._labels = [self._scores[0].to(device)], [self._labels[0].to(device)]
        return self

    def subset(self, indices: torch.Tensor | list[int]) -> ScoreBank:
        """The images ``indices`` (a new bank)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ScoreBank(self.num_classes, self.shape, self.scores[idx], self.labels[idx])

    def sample(self, n: int, generator: torch.Generator | None = None) -> ScoreBank:
        """``n`` images drawn without replacement (``ValueError`` if ``n`` exceeds the bank)."""
        if not 1 <= n <= self.num_images:
            raise ValueError(f"n_cal={n} must lie in [1, {self.num_images}] (images available in the bank)")
        return self.subset(torch.randperm(self.num_images, generator=generator)[:n])

    def _check_compatible(self, other: ScoreBank) -> None:
        if (self.num_classes, self.shape) != (other.num_classes, other.shape):
            raise ValueError(f"cannot merge banks of classes/shape {(self.num_classes, self.shape)}"
                             f" and {(other.num_classes, other.shape)}")

    def __add__(self, other: ScoreBank) -> ScoreBank:
        out = ScoreBank(self.num_classes, self.shape)
        return out.merge(self).merge(other)

    def merge(self, other: ScoreBank) -> ScoreBank:
        """In place: append the images of ``other``; returns ``self``."""
        self._check_compatible(other)
        self._scores += other._scores
        self._labels += other._labels
        self.num_scores += other.num_scores
        return self

    def all_gather(self, group: Any = None) -> ScoreBank:
        """Concatenate the banks of all ranks (rank order) in place."""
        if not _dist_ready():
            return self
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, (self.scores.cpu(), self._labels[0].cpu()), group=group)
        self._scores = [torch.cat([g[0] for g in gathered])]
        self._labels = [torch.cat([g[1] for g in gathered])]
        self.num_scores = int((self._labels[0] >= 0).sum())
        return self

    def group_counts(self) -> torch.Tensor:
        """Scores per class and pixel, ``[C, H·W]`` int64."""
        y = self.labels.reshape(self.num_images, -1)
        return torch.stack([(y == c).sum(0) for c in range(self.num_classes)])

    def pool(self, group_index: torch.Tensor, num_groups: int) -> SortedScores:
        """Exact scores grouped by ``group_index [C, H·W]`` (pixel → group per class).

        Keys ``c·G + group`` come from one look-up of ``c·P + pixel`` (int32 while ``C·P < 2³¹``; the pixel itself
        when every pixel is its own group), over the labelled scores only."""
        y = self.raw_labels.reshape(self.num_images, -1)  # int16: no int64 copy of every label
        valid = (y >= 0).view(-1)
        scores = self.scores.reshape(-1)[valid]
        if num_groups == 1:  # one group per class (imagewise): the class is the key
            return SortedScores.from_keys(y.view(-1)[valid].long(), scores, self.num_classes, 1)
        c, p = self.num_classes, y.shape[1]
        dtype = torch.int32 if c * max(p, num_groups) < 2**31 else torch.long
        cell = (y.to(dtype) * p + torch.arange(p, dtype=dtype)).view(-1)[valid]  # c·P + pixel
        if not (num_groups == p and torch.equal(group_index, torch.arange(p).expand(c, p))):
            table = (torch.arange(c).view(c, 1) * num_groups + group_index.long()).to(dtype).view(-1)
            cell = table.index_select(0, cell)  # c·G + group
        return SortedScores.from_keys(cell.long(), scores, c, num_groups)

    def count_leq(self, thresholds: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Scores ``≤ thresholds`` per class and pixel: ``[A, C, H·W]`` → ``[A, C, H·W]`` int64."""
        out = torch.zeros(thresholds.shape, dtype=torch.long)
        scores, labels = self.scores, self.labels
        for i in range(0, self.num_images, chunk):
            s = scores[i:i + chunk].reshape(-1, thresholds.shape[-1])
            out += coverage_counts(s, labels[i:i + chunk].reshape(s.shape), thresholds)[0]
        return out

    def to_histogram(self, bins: ScoreBins | None = None) -> ScoreHistogram:
        hist = location_histogram(self.num_classes, self.shape, bins)
        for s, y in zip(self._scores, self._labels):
            hist.update(s, y.long())
        return hist

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "bank", "num_classes": self.num_classes, "shape": list(self.shape),
                "scores": self.scores, "labels": self._labels[0]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ScoreBank:
        return cls(state["num_classes"], tuple(state["shape"]), state["scores"], state["labels"].long())


class ScoreAccumulator:
    """Per-pixel calibration scores in a :class:`ScoreBank` (exact) or a :class:`ScoreHistogram`.

    ``mode``: ``"exact"``, ``"histogram"`` or ``"auto"`` (exact until more than
    ``max_exact_scores`` labelled pixels, then histogram). The image shape is taken from
    the first update when not given.
    """

    def __init__(self, num_classes: int, shape: tuple[int, int] | None = None, mode: Mode = "auto",
                 bins: ScoreBins | None = None, max_exact_scores: int = DEFAULT_MAX_EXACT_SCORES) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.num_classes = int(num_classes)
        self.mode = mode
        self.bins = bins or ScoreBins()
        self.max_exact_scores = int(max_exact_scores)
        self.store: ScoreBank | ScoreHistogram | None = None
        if shape is not None:
            self._init_store(tuple(shape))

    def _init_store(self, shape: tuple[int, ...]) -> None:
        if self.mode == "histogram":
            self.store = location_histogram(self.num_classes, shape, self.bins)
        else:
            self.store = ScoreBank(self.num_classes, shape)

    @classmethod
    def wrap(cls, store: ScoreBank | ScoreHistogram) -> ScoreAccumulator:
        """An accumulator around an existing bank or histogram."""
        exact = isinstance(store, ScoreBank)
        acc = cls(store.num_classes, mode="exact" if exact else "histogram",
                  bins=None if exact else store.bins)
        acc.store = store
        return acc

    @property
    def exact(self) -> bool:
        return isinstance(self.store, ScoreBank)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.store is None else self.store.shape

    @property
    def num_images(self) -> int:
        return 0 if self.store is None else self.store.num_images

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add true-class ``scores [N, H, W]`` with ``labels [N, H, W]`` (``< 0`` = skip)."""
        if scores.shape[0] == 0:
            return
        if self.store is None:
            self._init_store(tuple(scores.shape[1:]))
        self.store.update(scores, labels)
        self._maybe_bin()

    def _maybe_bin(self) -> None:
        if self.mode == "auto" and self.exact and self.store.num_scores > self.max_exact_scores:
            self.to_histogram()

    def to(self, device: torch.device | str) -> ScoreAccumulator:
        """In place: move the store to ``device`` (e.g. to the CPU once a device-resident pass is over)."""
        if self.store is not None:
            self.store.to(device)
        return self

    def to_histogram(self) -> ScoreAccumulator:
        """Switch to (binned) histogram storage in place."""
        if self.exact:
            self.store = self.store.to_histogram(self.bins)
        return self

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """In place ``self += other`` (binning both if either is binned); returns ``self``."""
        if other.store is None:
            return self
        if self.store is None:
            self._init_store(other.shape)
        if self.exact != other.exact:
            self.to_histogram()
            other_store = other.store.to_histogram(self.bins) if other.exact else other.store
        else:
            other_store = other.store
        self.store.merge(other_store)
        self._maybe_bin()
        return self

    def __add__(self, other: ScoreAccumulator) -> ScoreAccumulator:
        out = ScoreAccumulator(self.num_classes, mode=self.mode, bins=self.bins,
                               max_exact_scores=self.max_exact_scores)
        return out.merge(self).merge(other)

    def all_reduce(self, group: Any = None) -> ScoreAccumulator:
        """Combine the accumulators of all ranks in place (all ranks end with the same data)."""
        if not _dist_ready():
            return self
        if self.store is None:
            raise ValueError("every rank must see at least one calibration image before all_reduce")
        binned = all_reduce_(torch.tensor([0 if self.exact else 1]), dist.ReduceOp.MAX, group)
        if binned.item():
            self.to_histogram()
            self.store.all_reduce(group)
        else:
            self.store.all_gather(group)
            self._maybe_bin()
        return self

    def pixel_counts(self) -> torch.Tensor:
        """Scores per class and pixel ``[C, H·W]`` (int64)."""
        return self.store.group_counts()

    def pool(self, group_index: torch.Tensor, num_groups: int) -> SortedScores | ScoreHistogram:
        """Scores pooled by ``group_index [C, H·W]`` → grouped store with ``num_groups`` groups."""
        return self.store.pool(group_index, num_groups)

    def per_pixel(self) -> SortedScores | ScoreHistogram:
        """Scores grouped per pixel (``G = H·W``)."""
        if not self.exact:
            return self.store.reshaped((math.prod(self.shape),))
        p = math.prod(self.shape)
        return self.pool(torch.arange(p).expand(self.num_classes, p), p)

    def count_leq(self, thresholds: torch.Tensor) -> torch.Tensor:
        """Scores ``≤ thresholds`` per class and pixel: ``[A, C, H·W]`` → ``[A, C, H·W]``."""
        if self.exact:
            return self.store.count_leq(thresholds)
        return self.store.reshaped((thresholds.shape[-1],)).count_leq(thresholds)
