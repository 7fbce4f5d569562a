"""Conformity scores for segmentation, and the registry that makes them pluggable.

A score maps predictions ``[N, C, H, W]`` to one score per class ``[N, C', H, W]`` (lower = more
conforming); the prediction set of a pixel is ``{c : s_c ≤ q̂_c}``. Registered scores:

- ``"lac"`` (Sadinle et al.'s least-ambiguous set-valued classifier, the Kandinsky paper's score):
  ``s_c = 1 − p_c``, precise in float32 (below).
- ``"aps"`` (adaptive prediction sets, Romano et al. 2020): ``s_c = Σ_{j: p_j > p_c} p_j + U·p_c``, the
  probability mass of the classes more likely than ``c`` (ties broken by class index) plus a share ``U`` of its
  own; a set holds the classes in decreasing probability until their mass reaches the threshold. ``U ∈ [0, 1)``
  breaks the ties that would otherwise pile up (the most likely class would always score 0, and with an
  accurate model most true-class scores would be exactly 0: coverage far above every level). Here ``U`` is not
  drawn from a generator but is a hash of the pixel's predictions (:func:`pixel_uniform`): uniform-looking,
  reproducible, no seed to carry. A deterministic function of the prediction is a valid conformity score, so
  the guarantee holds as for any score.
- ``"raps"`` (regularized APS, Angelopoulos et al. 2021): APS plus ``λ·max(0, rank_c − k_reg)`` with ``λ =``
  :data:`RAPS_LAMBDA`, ``k_reg =`` :data:`RAPS_K_REG` (rank 1 = most likely), divided by
  ``1 + λ·max(0, C − k_reg)`` so that scores stay in [0, 1] (the same sets): unlikely classes pay a penalty per
  rank, which keeps sets small when many classes share little mass.

APS and RAPS need probabilities that sum to one: a softmax head or a single sigmoid channel.

From logits the score is never formed as ``1 − p`` (which rounds to 0 for confident
pixels): for a softmax head ``s_c = Σ_{c'≠c} p_{c'} = exp(logsumexp_{c'≠c} log p_{c'})``, for a
sigmoid head ``s_c = 1 − σ(x_c) = σ(−x_c)``; both come from
:func:`segcal.outputs.log_probs` in float32 and keep their relative precision down to
~1e-38. From probabilities the score is ``1 − p_c`` in float32 (pass logits when you can:
float16 probabilities are exactly 1 for every p ≥ 1 − 2⁻¹², so those scores tie at 0).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from segcal.outputs import Head, Kind, log_probs, to_probs

ScoreFn = Callable[[torch.Tensor, Kind, Head], torch.Tensor]
"""``score(preds [N, C, H, W], kind, head) → scores [N, C', H, W]`` float32."""

SCORES: dict[str, ScoreFn] = {}


def register_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a conformity score under ``name`` (usable as ``score=name`` by every method)."""
    def add(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        return fn
    return add


def get_score(name: str) -> ScoreFn:
    """The registered score ``name`` (``ValueError`` listing the known ones otherwise)."""
    if name not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {name!r}")
    return SCORES[name]


@register_score("lac")
def class_scores(preds: torch.Tensor, kind: Kind = "logits", head: Head = "softmax") -> torch.Tensor:
    """Scores of every class, ``[N, C, H, W]`` → ``[N, C', H, W]`` float32 (``C' = 2`` for 1-channel sigmoid)."""
    if kind == "probs":
        return 1.0 - to_probs(preds, "probs", head)
    if kind != "logits":
        raise ValueError(f"kind must be 'logits' or 'probs', got {kind!r}")
    if head == "sigmoid":
        # log(1 − p_c) = log σ(−x_c); for one channel log_probs(−x) = [log(1 − p_0), log(1 − p_1)].
        return log_probs(-preds.float(), "sigmoid").exp()
    lp = log_probs(preds, head)  # validates head
    if lp.shape[1] == 1:
        return torch.zeros_like(lp)
    p = lp.exp()
    if lp.shape[1] == 2:
        return p.flip(1)  # 1 − p_0 = p_1 and 1 − p_1 = p_0, both with full relative precision
    # A class with p > 1/2 (at most one) needs the sum of the others; for every other class
    # 1 − p ≥ 1/2, so −expm1(log p) is already precise.
    big = p > 0.5
    others = torch.zeros_like(p[:, 0])
    for c in range(p.shape[1]):  # a loop over classes, not pixels: channel reductions are slow on CPU
        others += p[:, c].masked_fill(big[:, c], 0.0)
    return torch.where(big, others.unsqueeze(1), -torch.expm1(lp))


RAPS_LAMBDA = 0.01
RAPS_K_REG = 1


def _sum_to_one(preds: torch.Tensor, kind: Kind, head: Head, name: str) -> torch.Tensor:
    if head == "sigmoid" and preds.shape[1] > 1:
        raise ValueError(f"score {name!r} needs probabilities that sum to one (a softmax head or a single "
                         f"sigmoid channel), got {preds.shape[1]} independent sigmoid channels; use score='lac'")
    return to_probs(preds, kind, head)


def pixel_uniform(preds: torch.Tensor) -> torch.Tensor:
    """A number in [0, 1) per pixel ``[N, 1, H, W]`` hashed from the bits of its predictions ``[N, C, H, W]``
    (a 32-bit integer mix of every channel): a reproducible stand-in for a uniform draw."""
    bits = preds.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    h = torch.full_like(bits[:, :1], 0x811C9DC5)
    for c in range(bits.shape[1]):
        h = ((h ^ bits[:, c:c + 1]) * 0x01000193) & 0xFFFFFFFF
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):  # avalanche: nearby inputs, unrelated outputs
        h = ((h ^ (h >> shift)) * factor) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h.to(torch.float64).div_(2.0**32).to(torch.float32)


def _mass_above(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mass of the more likely classes and the 1-based rank ``[N, C, H, W]``."""
    values, order = p.sort(dim=1, descending=True, stable=True)
    above = values.cumsum(1) - values
    rank = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device).view(1, -1, 1, 1).expand_as(p)
    return (torch.empty_like(p).scatter_(1, order, above).clamp_(0.0, 1.0),
            torch.empty_like(p).scatter_(1, order, rank))


@register_score("aps")
def aps_scores(preds: torch.Tensor, kind: Kind = "logits", head: Head = "softmax") -> torch.Tensor:
    """APS scores ``[N, C', H, W]``: the mass of the classes more likely than each class, plus ``U`` times its own."""
    p = _sum_to_one(preds, kind, head, "aps")
    return (_mass_above(p)[0] + pixel_uniform(preds) * p).clamp_(0.0, 1.0)


@register_score("raps")
def raps_scores(preds: torch.Tensor, kind: Kind = "logits", head: Head = "softmax") -> torch.Tensor:
    """RAPS scores ``[N, C', H, W]`` (APS plus a rank penalty, rescaled into [0, 1])."""
    p = _sum_to_one(preds, kind, head, "raps")
    above, rank = _mass_above(p)
    scale = 1.0 + RAPS_LAMBDA * max(0, p.shape[1] - RAPS_K_REG)
    aps = (above + pixel_uniform(preds) * p).clamp_(0.0, 1.0)
    return (aps + RAPS_LAMBDA * (rank - RAPS_K_REG).clamp_min(0)) / scale


def label_scores(
    preds: torch.Tensor,
    labels: torch.Tensor,
    kind: Kind = "logits",
    head: Head = "softmax",
    ignore_index: int = 255,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score of the true class at every pixel (class-conditional scores).

    Returns ``(scores [N, H, W] float32, labels [N, H, W] int64)`` where ignored pixels have
    label ``-1``.
    """
    return scores_at_labels(class_scores(preds, kind, head), labels, ignore_index)


def valid_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Labels as int64 with ``ignore_index`` and out-of-range values replaced by ``-1``."""
    y = labels.long()
    valid = (y >= 0) & (y < num_classes)
    if 0 <= ignore_index < num_classes:
        valid &= y != ignore_index
    return y.masked_fill(~valid, -1)


def scores_at_labels(scores: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores [N, C, H, W]`` at ``labels [N, H, W]`` → ``(scores [N, H, W], labels with ignore → -1)``.

    Where the label is ``-1`` the returned score is that of class 0 (unused).
    """
    y = valid_labels(labels, scores.shape[1], ignore_index)
    return scores.gather(1, y.clamp_min(0).unsqueeze(1)).squeeze(1), y
