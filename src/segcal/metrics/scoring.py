"""Proper scoring rules per pixel: Brier score and negative log-likelihood (NLL).

Two output families (see :mod:`segcal.outputs`):

* *exclusive* classes – a softmax head, or a single-channel sigmoid expanded to
  ``[1 − p, p]``: NLL is ``−log p_y``;
* *independent* classes – a multi-channel sigmoid head (one-vs-rest): NLL is the summed
  binary cross-entropy ``−Σ_c [y_c log p_c + (1 − y_c) log(1 − p_c)]``.

The Brier score is ``Σ_c (p_c − y_c)²`` in both cases (Brier, 1950; range [0, 2] for
exclusive classes; scikit-learn's binary ``brier_score_loss`` is half of it for two classes).
From logits, log-probabilities are computed in float32 with log-softmax / log-sigmoid; from
probabilities they are clipped to ``[eps, 1 − eps]`` with ``eps`` the float32 machine epsilon
(as scikit-learn's ``log_loss`` does), which caps the NLL of a pixel at about 15.9.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segcal.outputs import Head, Kind, log_probs, to_probs

PROB_EPS = torch.finfo(torch.float32).eps


def is_exclusive(head: Head, channels: int) -> bool:
    """Whether ``channels`` outputs of ``head`` describe mutually exclusive classes."""
    return head == "softmax" or channels == 1


def class_log_probs(preds: torch.Tensor, kind: Kind, head: Head) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(probs, log_probs)``, float32 ``[N, C', H, W]``.

    ``log_probs`` is exact (log-softmax / log-sigmoid) from logits and ``None`` from probabilities.
    """
    if kind == "logits":
        logp = log_probs(preds, head)
        return logp.exp(), logp
    return to_probs(preds, kind, head), None


def _clipped_log(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(PROB_EPS, 1 - PROB_EPS).log_()


def brier_per_pixel(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``Σ_c (p_c − y_c)² = Σ_c p_c² − 2 p_y + 1`` per pixel ``[N, H, W]``.

    ``probs [N, C, H, W]``; ``labels [N, H, W]`` in ``[0, C)``.
    """
    p_true = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    return probs.square().sum(1).sub_(p_true, alpha=2).add_(1)


def nll_per_pixel(preds: torch.Tensor, probs: torch.Tensor, logp: torch.Tensor | None, labels: torch.Tensor,
                  kind: Kind, head: Head) -> torch.Tensor:
    """Negative log-likelihood per pixel ``[N, H, W]`` (float32).

    ``preds`` are the raw outputs ``[N, C, H, W]``; ``probs`` and ``logp`` come from
    :func:`class_log_probs`; ``labels [N, H, W]`` lie in ``[0, C')`` (replace ignored pixels
    by any class; their values are meaningless).
    """
    index = labels.unsqueeze(1)
    if logp is None:  # from probabilities: clip, and only where needed
        p_true = probs.gather(1, index).squeeze(1)
        if is_exclusive(head, preds.shape[1]):
            return _clipped_log(p_true).neg_()
        log_not = _clipped_log(1 - probs)
        return -(log_not.sum(1) + _clipped_log(p_true) - log_not.gather(1, index).squeeze(1))
    if is_exclusive(head, preds.shape[1]):
        return -logp.gather(1, index).squeeze(1)
    log_not = F.logsigmoid(-preds.float())
    # −Σ_c [y_c log p_c + (1 − y_c) log(1 − p_c)] with one-hot y
    return -(log_not.sum(1) + (logp - log_not).gather(1, index).squeeze(1))
