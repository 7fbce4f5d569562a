"""Tensor conventions for model outputs: logits ↔ class probabilities, with the checks every consumer needs.

Conventions used throughout segcal:

* predictions are ``[N, C, H, W]`` tensors, either ``logits`` or ``probs``;
* ``head="softmax"``: the C channels are mutually exclusive classes;
* ``head="sigmoid"``: each channel is an independent one-vs-rest probability. A single
  channel (``C == 1``) is a binary model and is expanded to two classes
  ``[background, foreground] = [1 - p, p]``;
* labels are ``[N, H, W]`` integer class indices; ``ignore_index`` pixels are excluded.

Scores must be computed in float32 from logits (``log_probs``): float16 probabilities tie
at exactly 1 for every p ≥ 1 − 2⁻¹², which corrupts conformal scores near 0.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

Head = Literal["softmax", "sigmoid"]
Kind = Literal["logits", "probs"]

PROB_SUM_TOL = 1e-3


def as_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` as a tensor: tensors pass through, NumPy arrays are wrapped without a copy; anything else is a
    ``ValueError`` naming ``name``."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None and isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a torch.Tensor or a NumPy array, got {type(x).__name__}")


def num_output_classes(channels: int, head: Head) -> int:
    """Number of classes represented by ``channels`` output channels of a ``head``."""
    return 2 if (head == "sigmoid" and channels == 1) else channels


def check_fitted_preds(preds: torch.Tensor, head: Head, num_classes: int, fitted: str,
                       shape: tuple[int, ...] | None = None) -> None:
    """``ValueError`` unless ``preds [N, C, H, W]`` suit what was fitted on ``num_classes`` classes (and, with
    ``shape``, on images of that size: then NaN and inf are refused too); ``fitted`` names it in messages."""
    if preds.ndim != 4:
        raise ValueError(f"preds must have shape [N, C, H, W], got {tuple(preds.shape)}")
    if shape is not None and not torch.isfinite(preds).all():
        raise ValueError("preds contain NaN or inf values (fit rejects them too): check the model outputs")
    classes = num_output_classes(preds.shape[1], head)
    if classes != num_classes:
        raise ValueError(f"preds have {preds.shape[1]} channels ({classes} classes with a {head} head)"
                         f" but the {fitted} was fitted on {num_classes} classes")
    if shape is not None and tuple(preds.shape[2:]) != tuple(shape):
        raise ValueError(f"preds have image size {tuple(preds.shape[2:])} but the {fitted} was fitted"
                         f" on {tuple(shape)} images (resize to the calibration size)")


def log_probs(logits: torch.Tensor, head: Head = "softmax") -> torch.Tensor:
    """Per-class log-probabilities in float32, ``[N, C, H, W]`` → ``[N, C', H, W]``.

    ``C' = 2`` for a single-channel sigmoid head, else ``C' = C``.
    """
    x = logits.float()
    if head == "softmax":
        return F.log_softmax(x, dim=1)
    if head == "sigmoid":
        if x.shape[1] == 1:
            return torch.cat([F.logsigmoid(-x), F.logsigmoid(x)], dim=1)
        return F.logsigmoid(x)
    raise ValueError(f"head must be 'softmax' or 'sigmoid', got {head!r}")


def hard_labels(logits: torch.Tensor, head: Head = "softmax") -> torch.Tensor:
    """Predicted labels ``[N, H, W]`` from logits ``[N, C, H, W]``: arg-max of the logits, or
    ``logit > 0`` for a single-channel sigmoid head. Taken on logits, not probabilities, so a
    large temperature (near-uniform probabilities, ties in float32) keeps the prediction. (``max(1).indices``:
    the same first maximum as ``argmax(1)``, 4–10× faster on CPU for the channel dimension.)"""
    if head == "sigmoid" and logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.max(1).indices


def to_probs(preds: torch.Tensor, kind: Kind = "probs", head: Head = "softmax") -> torch.Tensor:
    """Class probabilities ``[N, C', H, W]`` (float32) from logits or probabilities."""
    if kind == "logits":
        return log_probs(preds, head).exp()
    if kind != "probs":
        raise ValueError(f"kind must be 'logits' or 'probs', got {kind!r}")
    p = preds.float()
    if head == "sigmoid" and p.shape[1] == 1:
        p = torch.cat([1.0 - p, p], dim=1)
    return p


def check_batch(
    preds: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    ignore_index: int = 255,
    kind: Kind = "probs",
    head: Head = "softmax",
    name: str = "preds",
) -> None:
    """Raise ``ValueError`` naming the problem if a (preds, labels) batch is malformed.

    Checks: ``preds`` is 4-D ``[N, C, H, W]``, ``labels`` is ``[N, H, W]`` with the same
    N, H, W; the channel count matches ``num_classes``; values are finite; declared
    probabilities lie in [0, 1] (and sum to 1 over classes for a softmax head); labels are
    integers in ``[0, C)`` or ``ignore_index``.
    """
    if preds.ndim != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(preds.shape)}")
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape [N, H, W], got {tuple(labels.shape)}")
    n, c, h, w = preds.shape
    if c == 1 and head == "softmax":
        expected = f" (expected num_classes={num_classes} channels)" if num_classes is not None else ""
        raise ValueError(f"{name} has 1 channel: a softmax over one class is constant; for a binary model with a "
                         f"single output channel pass head='sigmoid' (--head sigmoid){expected}")
    if tuple(labels.shape) != (n, h, w):
        raise ValueError(
            f"shape mismatch: {name} is {tuple(preds.shape)} but labels are {tuple(labels.shape)}"
            f" (expected labels [{n}, {h}, {w}])"
        )
    classes = num_output_classes(c, head)
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"{name} has {c} channels ({classes} classes with a {head} head) but num_classes={num_classes}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if not torch.isfinite(preds).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if kind == "probs":
        if preds.min() < 0 or preds.max() > 1:
            raise ValueError(f"{name} declared as probabilities but has values outside [0, 1]")
        if head == "softmax":
            dev = (preds.float().sum(dim=1) - 1).abs().max().item()
            if dev > PROB_SUM_TOL:
                raise ValueError(
                    f"{name} declared as softmax probabilities but class sums deviate from 1 by {dev:.3g}"
                    " (pass logits with kind='logits', or head='sigmoid' for independent classes)"
                )
    valid = labels != ignore_index
    if valid.any():
        lv = labels[valid]
        lo, hi = int(lv.min()), int(lv.max())
        if lo < 0 or hi >= classes:
            raise ValueError(
                f"labels must lie in [0, {classes - 1}] or equal ignore_index={ignore_index};"
                f" found values in [{lo}, {hi}]"
            )


def probs_to_logits(probs: Any, head: str = "softmax") -> torch.Tensor:
    """Logits ``float32 [N, C, H, W]`` that reproduce probabilities ``probs`` ``[N, C, H, W]`` under ``head``.

    softmax: ``log(p)`` (p clamped to ≥ 1e-12), so ``softmax(logits) = p / Σp`` exactly, p itself when
    normalised; sigmoid: ``log(p) − log1p(−p)`` (p clamped to [1e-7, 1 − 1e-7]), so ``sigmoid(logits) = p``.
    """
    p = torch.as_tensor(probs).float()
    if head == "softmax":
        return p.clamp_min(1e-12).log()
    if head == "sigmoid":
        p = p.clamp(1e-7, 1 - 1e-7)
        return p.log() - torch.log1p(-p)
    raise ValueError(f"head must be 'softmax' or 'sigmoid', got {head!r}")
