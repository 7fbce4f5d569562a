"""Per-image losses on a grid of λ: the statistics risk control needs, one row per image.

Every function maps a batch to a table ``[N, Λ]`` (float64, values in [0, 1]); index ``k`` of the grid grows
with λ, so masks and sets grow with ``k`` (they are nested). Pixels labelled ``ignore_index`` are not judged.

Threshold losses, for the masks ``{p_c ≥ t_k}`` with thresholds ``t = 1 − λ`` (:func:`threshold_grid`):

- ``fnr``: false-negative rate of the target class, ``#(truth \\ mask) / #truth``; 0 for an image without the
  class (nothing to miss). Non-increasing in λ.
- ``fdr``: false-discovery rate, ``#(mask \\ truth) / #mask``; 0 for an empty mask (nothing flagged). Not monotone.
- ``miscoverage``: share of judged pixels whose true class is outside the set ``{c : p_c ≥ t_k}``; 0 for an image
  without judged pixels. Non-increasing in λ.

Margin losses, for the predicted mask dilated (outer) or eroded (inner) λ = 0, 1, … times
(:mod:`segcal.risk.morphology`):

- ``cover``: ``1[truth ⊄ dilate^λ(pred)]``; 0 for an image without the class; 1 at every λ for an empty
  prediction of a present class.
- ``fnr`` (margin): share of the truth outside ``dilate^λ(pred)``.
- ``inner``: ``1[erode^λ(pred) ⊄ truth]``; 0 for an empty prediction.

All three are computed from one distance map per image, never from one mask per λ.
"""
from __future__ import annotations

import torch

from segcal.risk.morphology import distance_to

THRESHOLD_LOSSES = ("fnr", "fdr", "miscoverage")
MARGIN_LOSSES = ("cover", "fnr")
MONOTONE = {"fnr": True, "fdr": False, "miscoverage": True, "cover": True, "inner": True}
"""Whether each loss is non-increasing in λ for every image (risk control by CRC/RCPS needs it)."""


def threshold_grid(num: int = 1001, span: float = 10.0) -> torch.Tensor:
    """Probability thresholds ``t [num]`` (float64), decreasing from 1 to 0: ``1``, then ``sigmoid(z)`` for
    ``num − 2`` logits ``z`` spaced evenly from ``span`` to ``−span``, then ``0`` (every pixel). Even spacing
    in the logit keeps the grid fine near 0 and 1, where confident models put their errors."""
    if not isinstance(num, int) or num < 3:
        raise ValueError(f"grid must be an int >= 3 (number of thresholds), got {num!r}")
    inner = torch.sigmoid(torch.linspace(span, -span, num - 2, dtype=torch.float64))
    return torch.cat([torch.ones(1, dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])


def _cumulative_counts(first: torch.Tensor, rows: torch.Tensor, n: int, num: int) -> torch.Tensor:
    """``out[i, k] = #{pixels j of image rows[j] = i with first[j] ≤ k}``: ``[n, num]`` float64 (``first``: the
    first grid index at which a pixel counts, ``num`` for never)."""
    counts = torch.bincount(rows * (num + 1) + first, minlength=n * (num + 1)).view(n, num + 1)
    return counts[:, :num].cumsum(1).double()


def _counts_above(p: torch.Tensor, rows: torch.Tensor, n: int, thresholds: torch.Tensor) -> torch.Tensor:
    """``out[i, k] = #{pixels j of image rows[j] = i with p_j ≥ t_k}`` for decreasing ``t``: ``[n, Λ]``."""
    num = thresholds.numel()
    below = torch.bucketize(p.double(), thresholds.flip(0).to(p.device), right=True)  # #{t ≤ p}
    return _cumulative_counts(num - below, rows, n, num)  # p ≥ t_k from index num − below on


def _rows(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.arange(shape[0], device=device).view(-1, *([1] * (len(shape) - 1))).expand(shape)


def threshold_losses(probs: torch.Tensor, labels: torch.Tensor, loss: str, thresholds: torch.Tensor,
                     target: int | None = None, ignore_index: int = 255) -> torch.Tensor:
    """Loss table ``[N, Λ]`` of ``loss`` (``fnr``, ``fdr``, ``miscoverage``) for ``probs [N, C, H, W]``,
    ``labels [N, H, W]``, decreasing ``thresholds [Λ]`` and the ``target`` class (``fnr``/``fdr``)."""
    n = labels.shape[0]
    valid = labels != ignore_index
    rows = _rows(labels.shape, labels.device)
    if loss == "miscoverage":
        true_p = probs.gather(1, labels.clamp(0, probs.shape[1] - 1).unsqueeze(1)).squeeze(1)
        covered = _counts_above(true_p[valid], rows[valid], n, thresholds)
        judged = valid.flatten(1).sum(1, keepdim=True).double()
        return torch.where(judged > 0, 1 - covered / judged.clamp(min=1), torch.zeros_like(covered)).cpu()
    p = probs[:, target]
    truth = valid & (labels == target)
    hits = _counts_above(p[truth], rows[truth], n, thresholds)  # true positives
    if loss == "fnr":
        positives = truth.flatten(1).sum(1, keepdim=True).double()
        return torch.where(positives > 0, 1 - hits / positives.clamp(min=1), torch.zeros_like(hits)).cpu()
    if loss == "fdr":
        flagged = _counts_above(p[valid], rows[valid], n, thresholds)
        return torch.where(flagged > 0, 1 - hits / flagged.clamp(min=1), torch.zeros_like(hits)).cpu()
    raise ValueError(f"loss must be one of {', '.join(THRESHOLD_LOSSES)}; got {loss!r}")


FIRST_REACH = 16
"""Distances are first searched up to this many pixels; images that need more are searched again in full."""


def _needed(distances: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Per image, the smallest whole radius λ with ``distance ≤ λ`` at every pixel of ``where``: ``[N]``
    (0 if ``where`` is empty, ``inf`` if a distance is)."""
    d = torch.where(where, distances, torch.zeros_like(distances))
    return d.flatten(1).amax(1).ceil().double()


def _distances_where(mask: torch.Tensor, where: torch.Tensor, structure: str, outside: bool,
                     reach: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance map [N, H, W], needed [N])`` to ``mask``, exact wherever needed for ``where`` up to ``reach``:
    a short search first, the images whose need exceeds it searched again up to ``reach``."""
    first = FIRST_REACH if reach is None else min(reach, FIRST_REACH)
    d = distance_to(mask, structure, outside=outside, reach=first)
    needed = _needed(d, where)
    again = needed > first
    if (reach is None or reach > first) and bool(again.any()):
        d[again] = distance_to(mask[again], structure, outside=outside, reach=reach)
        needed[again] = _needed(d[again], where[again])
    return d, needed


def margin_needs(pred: torch.Tensor, labels: torch.Tensor, target: int, structure: str,
                 ignore_index: int = 255, inner: bool = False, reach: int | None = None) -> dict[str, torch.Tensor]:
    """What the margin losses need from one batch, for predicted masks ``pred [N, H, W]`` (bool).

    ``outer [N]``: dilations for the prediction to cover the truth (``inf``: empty prediction of a present
    class); ``truth_distance [N, H, W]``: per truth pixel the dilations that reach it (for the FNR);
    ``inner [N]`` (with ``inner=True``): erosions for the prediction to fall inside the truth. ``reach``: the
    largest margin of interest (needs beyond it come out larger than ``reach``, not exact).
    """
    valid = labels != ignore_index
    truth = valid & (labels == target)
    far, outer = _distances_where(pred, truth, structure, False, reach)
    out = {"outer": outer, "truth_distance": torch.where(truth, far, torch.nan)}
    if inner:  # a pixel survives λ erosions iff its depth (distance to the background or border) is > λ
        out["inner"] = _distances_where(~pred, pred & valid & ~truth, structure, True, reach)[1]
    return out


def step_losses(needed: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Binary losses ``1[λ < needed_i]``: needed ``[N]``, radii ``[Λ]`` → ``[N, Λ]`` float64."""
    return (radii.to(needed.device).double()[None, :] < needed[:, None]).double().cpu()


def margin_fnr_losses(truth_distance: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """FNR after λ dilations ``[N, Λ]`` from per-truth-pixel distances ``[N, H, W]`` (NaN off the truth)."""
    n = truth_distance.shape[0]
    d = truth_distance.flatten(1)
    truth = ~d.isnan()
    steps = radii.to(d.device).double()
    first = torch.bucketize(d[truth].double(), steps)  # index of the first radius ≥ d (num: none)
    reached = _cumulative_counts(first, _rows(d.shape, d.device)[truth], n, steps.numel())
    positives = truth.sum(1, keepdim=True).double()
    return torch.where(positives > 0, 1 - reached / positives.clamp(min=1), torch.zeros_like(reached)).cpu()
