"""The rule that combines a coarse mask with a model's probabilities into a refined (hybrid) mask.

For one image with coarse mask ``Y [H, W]`` and probabilities ``p [C, H, W]`` (at the mask's size):

1. **Proposal.** ``restrict=True`` (default): inside the coarse region of class ``k`` the pixel
   is ``k`` if ``p_k ≥ threshold``, else background; outside every coarse region it is
   background (coarse boxes are trusted to contain the objects). ``restrict=False``: the most
   probable foreground class ``k`` wherever ``p_k ≥ threshold``, else background, everywhere.
2. **Fallback.** Each connected component of a coarse class region where the proposal keeps at
   most ``min_found`` of its pixels (default 0: the model found nothing in it) gets back its
   coarse mask (``fallback="coarse"``) or becomes ``ignore_index`` (``fallback="ignore"``).
3. **Confidence (optional).** Pixels the model decided on (inside coarse regions with
   ``restrict``, everywhere otherwise; fallback components excepted) whose label is not
   confident become ``ignore_index``: ``confidence="probability"`` keeps ``p_label ≥
   min_confidence``; ``confidence="conformal"`` keeps pixels whose conformal prediction set at
   miscoverage ``alpha`` is exactly ``{label}``.

Pixels outside the model's view (``known=False``: cropped away by ``resize: crop``) and
``ignore_index`` pixels of ``Y`` keep their coarse value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

FALLBACKS = ("coarse", "ignore")
CONFIDENCES = ("none", "probability", "conformal")


@dataclass
class RefineRule:
    """Parameters of the refinement rule (see the module docstring)."""

    threshold: float = 0.5
    restrict: bool = True
    min_found: float = 0.0
    fallback: str = "coarse"
    confidence: str = "none"
    min_confidence: float = 0.9
    alpha: float = 0.1

    def validate(self) -> RefineRule:
        checks = [
            (0.0 < self.threshold < 1.0, "threshold", "in (0, 1)"),
            (0.0 <= self.min_found < 1.0, "min_found", "a fraction in [0, 1)"),
            (self.fallback in FALLBACKS, "fallback", f"one of {FALLBACKS}"),
            (self.confidence in CONFIDENCES, "confidence", f"one of {CONFIDENCES}"),
            (0.5 <= self.min_confidence < 1.0, "min_confidence", "in [0.5, 1)"),
            (0.0 < self.alpha < 1.0, "alpha", "in (0, 1)"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ValueError(f"rule.{key} must be {expected}, got {getattr(self, key)!r}")
        return self

    def describe(self) -> dict:
        return {**asdict(self), "text": rule_text(self)}


def rule_text(rule: RefineRule) -> str:
    """One sentence describing ``rule`` (for provenance files and the CLI)."""
    where = "inside the coarse region of its class" if rule.restrict else "everywhere"
    found = "nothing" if rule.min_found == 0 else f"at most {rule.min_found:.0%} of it"
    text = (f"class k where p_k >= {rule.threshold:g} {where}, else background; a coarse component where the "
            f"model keeps {found} falls back to {'its coarse mask' if rule.fallback == 'coarse' else 'ignore'}")
    if rule.confidence == "probability":
        text += f"; pixels with p(label) < {rule.min_confidence:g} become ignore"
    elif rule.confidence == "conformal":
        text += f"; pixels whose conformal set (alpha {rule.alpha:g}) is not {{label}} become ignore"
    return text


def _components(coarse: np.ndarray, num_classes: int) -> np.ndarray:
    """Connected components of each coarse class region, numbered 1..n across classes (0 = none)."""
    comp = np.zeros(coarse.shape, dtype=np.int64)
    offset = 0
    for k in range(1, num_classes):
        region = coarse == k
        if region.any():
            lab, n = ndimage.label(region)
            comp[region] = lab[region] + offset
            offset += n
    return comp


def propose(coarse: np.ndarray, probs: np.ndarray, rule: RefineRule, ignore_index: int = 255) -> np.ndarray:
    """Step 1: proposed labels ``[H, W]`` (int64) from ``coarse [H, W]`` and ``probs [C, H, W]``."""
    valid = coarse != ignore_index
    if rule.restrict:
        k = np.where(valid, coarse, 0)
        pk = np.take_along_axis(probs, k[None], 0)[0]
        labels = np.where((k > 0) & (pk >= rule.threshold), k, 0)
    else:
        best = probs[1:].argmax(0) + 1
        labels = np.where(probs[1:].max(0) >= rule.threshold, best, 0)
    return np.where(valid, labels, ignore_index).astype(np.int64)


def confident_pixels(labels: np.ndarray, probs: np.ndarray, rule: RefineRule, sets: np.ndarray | None,
                     ignore_index: int = 255) -> np.ndarray:
    """Bool ``[H, W]``: the label is confident under ``rule.confidence`` (all True for ``"none"``)."""
    if rule.confidence == "none":
        return np.ones(labels.shape, dtype=bool)
    k = np.where(labels == ignore_index, 0, labels)[None]
    if rule.confidence == "probability":
        return np.take_along_axis(probs, k, 0)[0] >= rule.min_confidence
    if sets is None:
        raise ValueError("rule.confidence='conformal' needs the prediction sets (sets [C, H, W])")
    return (sets.sum(0) == 1) & np.take_along_axis(sets, k, 0)[0]


def refine_mask(coarse: np.ndarray, probs: np.ndarray, rule: RefineRule, sets: np.ndarray | None = None,
                known: np.ndarray | None = None, ignore_index: int = 255) -> tuple[np.ndarray, dict]:
    """Hybrid mask ``int64 [H, W]`` and counts, from ``coarse [H, W]``, ``probs [C, H, W]``.

    ``sets`` (bool ``[C, H, W]``) are conformal prediction sets (``confidence="conformal"``);
    ``known`` (bool ``[H, W]``) marks pixels the model saw (default: all).
    """
    coarse = np.asarray(coarse)
    probs = np.asarray(probs, dtype=np.float32)
    if coarse.ndim != 2 or probs.ndim != 3 or probs.shape[1:] != coarse.shape:
        raise ValueError(f"expected coarse [H, W] and probs [C, H, W] of the same size, got coarse "
                         f"{coarse.shape} and probs {probs.shape}")
    c = probs.shape[0]
    bad = (coarse != ignore_index) & ((coarse < 0) | (coarse >= c))
    if bad.any():
        raise ValueError(f"coarse mask has labels {np.unique(coarse[bad])[:5].tolist()} outside 0..{c - 1} "
                         f"(the model has {c} classes) and not ignore_index {ignore_index}")
    known = np.ones(coarse.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    labels = propose(coarse, probs, rule, ignore_index)
    comp = _components(coarse, c)
    n = int(comp.max())
    area = np.bincount(comp.ravel(), weights=known.ravel(), minlength=n + 1)
    found = np.bincount(comp.ravel(), weights=((labels == coarse) & known).ravel(), minlength=n + 1)
    falls = found <= rule.min_found * area
    falls[0] = False
    fallback = falls[comp]
    decided = known & (coarse != ignore_index) & ~fallback
    if rule.restrict:
        decided &= comp > 0
    uncertain = decided & ~confident_pixels(labels, probs, rule, sets, ignore_index)
    labels[uncertain] = ignore_index
    labels[fallback] = coarse[fallback] if rule.fallback == "coarse" else ignore_index
    labels[~known] = coarse[~known]
    valid = coarse != ignore_index
    stats = {"pixels": int(coarse.size), "coarse_foreground": int(((coarse > 0) & valid).sum()),
             "foreground": int(((labels > 0) & (labels != ignore_index)).sum()),
             "changed": int((valid & (labels != coarse) & (labels != ignore_index)).sum()),
             "uncertain": int(uncertain.sum()), "components": n, "fallback_components": int(falls.sum()),
             "unknown": int((~known).sum())}
    return labels, stats
