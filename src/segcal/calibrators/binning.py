"""Histogram binning and isotonic regression, fitted from streamed binned sums (memory independent of pixels).

Both map a probability to the observed frequency of its bin: ``mode="classwise"`` learns one map per class from
``p_c`` against ``[y = c]`` (one-vs-rest) and renormalises the mapped probabilities; ``mode="top"`` learns one
map of the top-label confidence against correctness, sets the top class to the mapped confidence and scales the
others to the rest. The stream is reduced to ``fine_bins`` logit-spaced bins per class (count, Σp, Σ hits):
``[C, F]`` sums whatever the number of pixels, summed across ``torch.distributed`` ranks.

* ``histogram`` (Zadrozny & Elkan, 2001): ``bins`` equal-mass bins (merged fine bins; ``strategy="width"``:
  equal-width bins on [0, 1], as netcal), each mapped to its frequency of hits;
* ``isotonic`` (Zadrozny & Elkan, 2002): the non-decreasing step function closest in weighted squared error
  (pool-adjacent-violators over the fine bins) — what scikit-learn's ``IsotonicRegression`` gives for the bins'
  mean probabilities and frequencies weighted by their counts.

Neither keeps the arg-max in general (renormalising mapped probabilities can reorder classes; a top-label map
can fall below another class), so Dice and IoU may change: ``evaluate`` measures them after calibration.
Mapped probabilities are clipped to ``[1e-6, 1 − 1e-6]`` before becoming logits.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch

from segcal.calibrators.base import Calibrator
from segcal.calibrators.stream import CalibrationStream, Progress
from segcal.outputs import Head, num_output_classes, to_probs
from segcal.stats.binned import logit_bin_edges, logit_bins
from segcal.stats.score_histogram import all_reduce_

MODES = ("classwise", "top")
CLIP = 1e-6


class BinnedSums:
    """Per map (class, or the top label) and fine bin: count, Σ p and Σ hits, ``[M, F]`` float64."""

    def __init__(self, maps: int, fine_bins: int) -> None:
        self.fine_bins = fine_bins
        self.count, self.prob, self.hits = (torch.zeros(maps, fine_bins, dtype=torch.float64) for _ in range(3))

    def add(self, probs: torch.Tensor, hits: torch.Tensor) -> None:
        """``probs`` and ``hits`` ``[M, P]`` (valid pixels only)."""
        index = logit_bins(probs, self.fine_bins) + torch.arange(probs.shape[0]).view(-1, 1) * self.fine_bins
        for total, values in ((self.count, torch.ones_like(probs, dtype=torch.float64)),
                              (self.prob, probs.double()), (self.hits, hits.double())):
            total.view(-1).index_add_(0, index.reshape(-1).cpu(), values.reshape(-1).cpu())

    def gather(self) -> None:
        """Sum over ``torch.distributed`` ranks (every rank then fits the same maps)."""
        for total in (self.count, self.prob, self.hits):
            all_reduce_(total)


def isotonic_steps(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Pool-adjacent-violators: the non-decreasing fit of ``y`` (ordered by ``x``) with weights ``w`` ``[K]``."""
    values, weights, sizes = [], [], []
    for yi, wi in zip(y.tolist(), w.tolist()):
        values.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            total = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / total
            values[-2:], weights[-2:], sizes[-2:] = [merged], [total], [sizes[-2] + sizes[-1]]
    return torch.tensor([v for v, n in zip(values, sizes) for _ in range(n)], dtype=torch.float64)


class _BinningCalibrator(Calibrator):
    """Shared streaming, mapping and state of :class:`HistogramBinning` and :class:`IsotonicCalibration`."""

    preserves_argmax: ClassVar[bool] = False

    def __init__(self, head: Head = "softmax", ignore_index: int = 255, seed: int = 0, mode: str = "classwise",
                 fine_bins: int = 4096) -> None:
        super().__init__(head, ignore_index, seed)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(fine_bins, int) or fine_bins < 16:
            raise ValueError(f"fine_bins must be an int >= 16, got {fine_bins!r}")
        self.mode, self.fine_bins = mode, fine_bins

    def _collect(self, batches: CalibrationStream) -> BinnedSums:
        sums = None
        for batch in batches:
            probs = to_probs(batch.logits, "logits", self.head)  # [N, C', H, W]
            labels = batch.labels
            valid = (labels != self.ignore_index) & (labels >= 0) & (labels < probs.shape[1])
            p = probs.permute(1, 0, 2, 3)[:, valid]  # [C', P]
            y = labels[valid]
            if self.mode == "top":
                conf, pred = p.max(0)
                p, hits = conf.unsqueeze(0), (pred == y).unsqueeze(0)
            else:
                hits = y.unsqueeze(0) == torch.arange(p.shape[0], device=y.device).unsqueeze(1)
            if sums is None:
                sums = BinnedSums(p.shape[0], self.fine_bins)
            sums.add(p, hits)
        return sums if sums is not None else BinnedSums(1, self.fine_bins)

    def _fit_sample(self, sample: BinnedSums, progress: Progress | None) -> None:
        edges, values = [], []
        for count, prob, hits in zip(sample.count, sample.prob, sample.hits):
            used = count > 0
            upper = logit_bin_edges(self.fine_bins)[1:][used]
            mean_p, freq, weight = prob[used] / count[used], hits[used] / count[used], count[used]
            e, v = self._fit_map(upper, mean_p, freq, weight) if bool(used.any()) else (
                torch.ones(1, dtype=torch.float64), torch.full((1,), 0.5, dtype=torch.float64))
            e[-1] = 1.0  # the last step reaches every probability
            edges.append(e)
            values.append(v.clamp(CLIP, 1 - CLIP))
        self.edges_, self.values_ = edges, values
        self.info_["steps"] = [len(v) for v in values]

    @abstractmethod
    def _fit_map(self, upper: torch.Tensor, mean_p: torch.Tensor, freq: torch.Tensor, weight: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(upper edges [K], values [K])`` of the step map from the non-empty fine bins (increasing ``p``):
        their upper edges, mean probabilities, frequencies of hits and counts."""

    def _map(self, k: int, p: torch.Tensor) -> torch.Tensor:
        edges, values = self.edges_[k].to(p.device), self.values_[k].to(p.device)
        return values[torch.searchsorted(edges, p.double().contiguous()).clamp_max(len(values) - 1)]

    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        probs = to_probs(logits, "logits", self.head).double()  # [N, C', H, W]
        if self.mode == "top":
            conf, pred = probs.max(1, keepdim=True)
            mapped = self._map(0, conf)
            rest = (1 - mapped) / (1 - conf).clamp_min(1e-12)
            q = (probs * rest).scatter(1, pred, mapped)
        else:
            q = torch.stack([self._map(k, probs[:, k]) for k in range(probs.shape[1])], 1)
        q = q.clamp(CLIP, 1 - CLIP)
        exclusive = self.head == "softmax" or logits.shape[1] == 1
        if exclusive:
            q = q / q.sum(1, keepdim=True)
        if self.head == "sigmoid":
            q = q[:, 1:] if logits.shape[1] == 1 else q
            return (torch.log(q) - torch.log1p(-q)).float()
        return torch.log(q).float()

    def _params(self) -> dict[str, Any]:
        return {"edges": {str(k): e for k, e in enumerate(self.edges_)},
                "values": {str(k): v for k, v in enumerate(self.values_)}}

    def _load_params(self, params: dict[str, Any], num_channels: int) -> None:
        maps = 1 if self.mode == "top" else num_output_classes(num_channels, self.head)
        self.edges_ = [params["edges"][str(k)].double() for k in range(maps)]
        self.values_ = [params["values"][str(k)].double() for k in range(maps)]


STRATEGIES = ("mass", "width")


class HistogramBinning(_BinningCalibrator):
    """Histogram binning: ``bins`` bins per map — equal-mass (``strategy="mass"``) or equal-width on [0, 1]
    (``"width"``; a fine bin goes to the coarse bin of its mean probability) — each mapped to its frequency of
    hits."""

    method: ClassVar[str] = "histogram"

    def __init__(self, head: Head = "softmax", ignore_index: int = 255, seed: int = 0, mode: str = "classwise",
                 bins: int = 15, strategy: str = "mass", fine_bins: int = 4096) -> None:
        super().__init__(head, ignore_index, seed, mode, fine_bins)
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.bins, self.strategy = bins, strategy

    def _fit_map(self, upper, mean_p, freq, weight):
        if self.strategy == "width":
            group = (mean_p * self.bins).floor().long().clamp(0, self.bins - 1)
        else:
            share = weight.cumsum(0) / weight.sum()
            group = torch.clamp((share * self.bins - 1e-9).ceil().long() - 1, 0, self.bins - 1)
        _, group = torch.unique_consecutive(group, return_inverse=True)
        k = int(group.max()) + 1
        hits = torch.zeros(k, dtype=torch.float64).index_add_(0, group, freq * weight)
        mass = torch.zeros(k, dtype=torch.float64).index_add_(0, group, weight)
        last = torch.zeros(k, dtype=torch.long).scatter_reduce_(0, group, torch.arange(len(group)), "amax")
        return upper[last].clone(), hits / mass


class IsotonicCalibration(_BinningCalibrator):
    """Isotonic regression: the best non-decreasing step map (pool-adjacent-violators over the fine bins)."""

    method: ClassVar[str] = "isotonic"

    def _fit_map(self, upper, mean_p, freq, weight):
        fitted = isotonic_steps(mean_p, freq, weight)
        change = torch.ones(len(fitted), dtype=torch.bool)
        change[:-1] = fitted[1:] != fitted[:-1]  # keep the last fine bin of every step
        return upper[change].clone(), fitted[change]
