"""Likelihood helpers shared by the calibrators: NLL and floored log-probability features."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segcal.outputs import Head, log_probs

LOGP_FLOOR = 30.0
"""Log-probabilities below ``-LOGP_FLOOR`` carry no more information and are floored in features."""


def floored_log_probs(logits: torch.Tensor, head: Head = "softmax") -> torch.Tensor:
    """Per-class log-probabilities clamped to ``≥ -LOGP_FLOOR``, classes on dim 1.

    ``[P, C]`` → ``[P, C']`` or ``[N, C, H, W]`` → ``[N, C', H, W]`` (see
    :func:`segcal.outputs.log_probs`); input to the learned calibrators.
    """
    return log_probs(logits, head).clamp_min(-LOGP_FLOOR)


def mean_nll(
    logits: torch.Tensor, labels: torch.Tensor, head: Head = "softmax", ignore_index: int = 255
) -> torch.Tensor:
    """Mean NLL over valid pixels; ``logits [P, C]`` with ``labels [P]``, or ``[N, C, H, W]`` with ``[N, H, W]``.

    Softmax head: cross-entropy. Sigmoid head: the sum over channels of the one-vs-rest
    binary cross-entropies (a one-channel head is binary: label 1 is the positive class).
    ``ignore_index`` labels are excluded; the result is differentiable in ``logits``.
    """
    if head == "softmax":
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    if logits.shape[1] == 1:
        target = safe.unsqueeze(1).to(logits.dtype)
    else:
        target = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=1)
    return per_pixel[valid].mean()
