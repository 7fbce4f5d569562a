"""Training losses: cross-entropy/BCE, Dice, Tversky (MONAI), top-k CE, and weighted sums.

Every loss takes network outputs ``[N, C_out, H, W]`` and a :class:`Target`: either hard
labels ``[N, H, W]`` (``ignore_index`` pixels excluded) or soft targets ``[N, C, H, W]`` with a
validity mask (mixup). Heads follow :mod:`segcal.outputs` (a 1-channel sigmoid head
is a binary model with classes ``[background, foreground]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, TverskyLoss
from torch import nn

from segcal.models.config import LossConfig, LossTerm
from segcal.outputs import log_probs


@dataclass
class Target:
    """Per-pixel class distribution ``soft [N, C, H, W]`` and validity ``valid [N, H, W]``."""

    soft: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def from_labels(cls, labels: torch.Tensor, num_classes: int, ignore_index: int) -> Target:
        valid = labels != ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
        soft = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
        return cls(soft, valid)


class SegmentationLoss(nn.Module):
    """Weighted sum of the terms in a :class:`LossConfig`."""

    def __init__(self, cfg: LossConfig, num_classes: int, head: str = "softmax", ignore_index: int = 255):
        super().__init__()
        self.terms = list(cfg.terms)
        self.num_classes = num_classes
        self.head = head
        self.ignore_index = ignore_index
        self.overlap = nn.ModuleList(self._overlap_loss(t) for t in self.terms)

    @staticmethod
    def _overlap_loss(term: LossTerm) -> nn.Module:
        kw = dict(include_background=term.include_background, smooth_nr=term.smooth, smooth_dr=term.smooth,
                  soft_label=True)
        if term.name == "dice":
            return DiceLoss(**kw)
        if term.name == "tversky":
            return TverskyLoss(alpha=term.alpha, beta=term.beta, **kw)
        return nn.Identity()

    def forward(self, outputs: torch.Tensor, target: torch.Tensor | Target) -> torch.Tensor:
        if not isinstance(target, Target):
            target = Target.from_labels(target, self.num_classes, self.ignore_index)
        total = outputs.new_zeros(())
        for term, overlap in zip(self.terms, self.overlap):
            if term.weight == 0:
                continue
            if term.name in ("ce", "topk_ce"):
                value = self._cross_entropy(outputs, target, term)
            else:
                value = overlap(self._probs(outputs, term) * target.valid.unsqueeze(1), target.soft)
            total = total + term.weight * value
        return total

    def _log_probs(self, outputs: torch.Tensor, term: LossTerm) -> torch.Tensor:
        if term.from_logits:
            return log_probs(outputs, self.head)
        p = outputs.float()
        if self.head == "sigmoid" and p.shape[1] == 1:
            p = torch.cat([1 - p, p], dim=1)
        return p.clamp_min(1e-12).log()

    def _probs(self, outputs: torch.Tensor, term: LossTerm) -> torch.Tensor:
        return self._log_probs(outputs, term).exp()

    def _cross_entropy(self, outputs: torch.Tensor, target: Target, term: LossTerm) -> torch.Tensor:
        """Per-pixel CE (softmax) or summed per-class BCE (sigmoid), averaged over valid pixels.

        ``topk_ce`` keeps only the hardest ``k`` fraction of valid pixels.
        """
        if self.head == "sigmoid" and outputs.shape[1] > 1 and term.from_logits:
            pixel = F.binary_cross_entropy_with_logits(outputs.float(), target.soft, reduction="none").sum(1)
        else:
            pixel = -(target.soft * self._log_probs(outputs, term)).sum(1)
        pixel = pixel[target.valid]
        if pixel.numel() == 0:
            return outputs.sum() * 0.0
        if term.name == "topk_ce":
            keep = max(1, int(round(term.k * pixel.numel())))
            pixel = pixel.topk(keep).values
        return pixel.mean()
