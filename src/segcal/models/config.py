"""Configuration of networks, losses and optimisers (validated dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field

ARCHS = ("unet", "attention_unet")
HEADS = ("softmax", "sigmoid")
LOSSES = ("ce", "dice", "tversky", "topk_ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine_restarts", "step")


def _check(cond: bool, key: str, expected: str, value) -> None:
    if not cond:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


@dataclass
class ModelConfig:
    """MONAI network: ``unet`` or ``attention_unet`` with configurable widths/depth. ``data.image_size``
    must be divisible by the product of ``strides`` (one down-sampling factor between adjacent levels)."""

    arch: str = "unet"  # unet (MONAI UNet) | attention_unet (MONAI AttentionUnet)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # feature widths, one per level
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])  # len(channels) - 1 down-sampling factors
    num_res_units: int = 2  # unet only
    dropout: float = 0.0  # dropout probability in the network blocks
    head: str = "softmax"  # "softmax" (C channels) or "sigmoid" (1 channel if binary, else C)

    def validate(self, prefix: str = "model") -> None:
        _check(self.arch in ARCHS, f"{prefix}.arch", f"one of {ARCHS}", self.arch)
        _check(self.head in HEADS, f"{prefix}.head", f"one of {HEADS}", self.head)
        _check(len(self.channels) >= 2 and all(c > 0 for c in self.channels), f"{prefix}.channels",
               "a list of at least 2 positive widths", self.channels)
        _check(len(self.strides) == len(self.channels) - 1 and all(s >= 1 for s in self.strides),
               f"{prefix}.strides", f"{len(self.channels) - 1} positive integers (one per down-sampling)",
               self.strides)
        _check(self.num_res_units >= 0, f"{prefix}.num_res_units", ">= 0", self.num_res_units)
        _check(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", "in [0, 1)", self.dropout)


@dataclass
class LossTerm:
    """One weighted term of the training loss.

    ``tversky``: alpha weighs false positives, beta false negatives (the sewer-pipe seed uses
    alpha 0.1, beta 0.9, smooth 1). ``topk_ce``: cross-entropy over the hardest ``k`` fraction
    of valid pixels. ``from_logits=False`` means the network already outputs probabilities.
    """

    name: str = "ce"  # ce (BCE for a sigmoid head) | dice | tversky | topk_ce
    weight: float = 1.0  # factor of this term in the sum (0: skipped)
    alpha: float = 0.5  # tversky: weight of false positives
    beta: float = 0.5  # tversky: weight of false negatives
    smooth: float = 1e-5  # dice/tversky: added to numerator and denominator
    k: float = 0.1
    include_background: bool = True  # dice/tversky: also score class 0 (background)
    from_logits: bool = True

    def validate(self, prefix: str) -> None:
        _check(self.name in LOSSES, f"{prefix}.name", f"one of {LOSSES}", self.name)
        _check(self.weight >= 0, f"{prefix}.weight", ">= 0", self.weight)
        _check(0 <= self.alpha <= 1, f"{prefix}.alpha", "in [0, 1]", self.alpha)
        _check(0 <= self.beta <= 1, f"{prefix}.beta", "in [0, 1]", self.beta)
        _check(self.smooth >= 0, f"{prefix}.smooth", ">= 0", self.smooth)
        _check(0 < self.k <= 1, f"{prefix}.k", "in (0, 1]", self.k)


@dataclass
class LossConfig:
    """Weighted sum of loss terms, e.g. ``[{name: ce, weight: 1}, {name: dice, weight: 1}]``."""

    terms: list[LossTerm] = field(default_factory=lambda: [LossTerm("ce"), LossTerm("dice")])  # summed by weight

    def validate(self, prefix: str = "loss") -> None:
        _check(len(self.terms) > 0, f"{prefix}.terms", "a non-empty list", self.terms)
        for i, term in enumerate(self.terms):
            term.validate(f"{prefix}.terms[{i}]")
        _check(sum(t.weight for t in self.terms) > 0, f"{prefix}.terms", "weights with a positive sum",
               [t.weight for t in self.terms])


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    name: str = "adamw"  # adam | adamw | sgd (torch.optim)
    lr: float = 1e-3  # initial learning rate
    weight_decay: float = 1e-4  # decoupled for adamw; an L2 penalty in the gradient for adam and sgd
    momentum: float = 0.9  # sgd only
    scheduler: str = "none"  # learning-rate schedule, stepped every epoch: none | cosine_restarts | step
    t0: int = 10  # cosine_restarts: epochs of the first cycle
    t_mult: int = 1  # cosine_restarts: cycle growth factor
    min_lr: float = 0.0  # cosine_restarts: floor
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor

    def validate(self, prefix: str = "optim") -> None:
        _check(self.name in OPTIMIZERS, f"{prefix}.name", f"one of {OPTIMIZERS}", self.name)
        _check(self.scheduler in SCHEDULERS, f"{prefix}.scheduler", f"one of {SCHEDULERS}", self.scheduler)
        _check(self.lr > 0, f"{prefix}.lr", "> 0", self.lr)
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", ">= 0", self.weight_decay)
        _check(0 <= self.momentum < 1, f"{prefix}.momentum", "in [0, 1)", self.momentum)
        _check(self.t0 >= 1 and self.t_mult >= 1, f"{prefix}.t0/t_mult", "integers >= 1", (self.t0, self.t_mult))
        _check(self.step_size >= 1, f"{prefix}.step_size", ">= 1", self.step_size)
        _check(0 < self.gamma <= 1, f"{prefix}.gamma", "in (0, 1]", self.gamma)
