"""Selective scaling (Wang, Gong & Wang, "On Calibrating Semantic Segmentation Models", CVPR 2023).

A per-pixel misprediction classifier (:mod:`segcal.calibrators.misprediction`) decides
whether the model's arg-max at a pixel is wrong. Pixels predicted correct keep their logits
(T = 1); pixels predicted wrong get ``logits / T2``. Both temperatures are positive, so the
arg-max never changes. Works with softmax and sigmoid heads (the classifier reads the
per-class log-probabilities of either).

Fitting: the sampled calibration pixels are split by image (``val_fraction`` of the images,
drawn with ``seed``) into training and validation pixels; the classifier is trained on the
first and its epoch chosen on the second. ``T2`` is either given or, with ``t2="auto"``
(default), chosen by **confidence matching** on the validation pixels the classifier flags:
the smallest ``T2 ∈ [1, T2_MAX]`` whose scaled mean top-label confidence equals those
pixels' accuracy, so the flagged group is calibrated on average. An accurate classifier
(flagged pixels almost all wrong, accuracy ≤ 1/C) gives ``T2_MAX = 1e10`` (uniform
probabilities); a moderately accurate one a finite ``T2`` (the paper's ≈ 2); a classifier
whose flags are already no more confident than accurate gives ``T2 = 1`` (no scaling).
"""
from __future__ import annotations

import math

import torch

from segcal.calibrators.base import PixelCalibrator
from segcal.calibrators.diagnostics import NO_OP_TOLERANCE, check_objective, top_label_ece, warn_fit
from segcal.calibrators.misprediction import (
    MispredictionMLP,
    MispredictionTraining,
    misprediction_features,
    train_misprediction_classifier,
)
from segcal.calibrators.stream import Progress
from segcal.calibrators.temperature import fit_log_temperature
from segcal.outputs import Head, log_probs, num_output_classes

T2_MAX = 1e10


def mean_confidence(logits: torch.Tensor, head: Head, temperature: float = 1.0) -> float:
    """Mean top-label probability of ``logits [P, C] / temperature``."""
    return log_probs(logits / temperature, head).max(dim=1).values.exp().mean().item()


def confidence_matching_t2(logits: torch.Tensor, labels: torch.Tensor, head: Head, iterations: int = 60) -> float:
    """``T2 ∈ [1, T2_MAX]`` with mean top-label confidence of ``logits [P, C] / T2`` equal to
    the top-label accuracy on ``labels [P]`` (bisection on ``log T2``); 1 when ``P = 0``."""
    if len(labels) == 0:
        return 1.0
    accuracy = (log_probs(logits, head).max(dim=1).indices == labels).float().mean().item()
    if mean_confidence(logits, head) <= accuracy:
        return 1.0
    if mean_confidence(logits, head, T2_MAX) >= accuracy:
        return T2_MAX
    lo, hi = 0.0, math.log(T2_MAX)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_confidence(logits, head, math.exp(mid)) > accuracy else (lo, mid)
    return math.exp(hi)


def split_images(image_ids: torch.Tensor, val_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean ``[P]`` marking pixels of the held-out images (``round(val_fraction × #images)``,
    at least one, at most all but one), drawn uniformly with ``generator``."""
    images = image_ids.unique()
    if len(images) < 2:
        raise ValueError(
            "selective scaling validates its classifier on held-out calibration images:"
            f" it needs at least 2 images with valid pixels, got {len(images)}"
        )
    n_val = min(max(1, round(val_fraction * len(images))), len(images) - 1)
    val_images = images[torch.randperm(len(images), generator=generator)[:n_val].to(images.device)]
    return torch.isin(image_ids, val_images)


class SelectiveScaling(PixelCalibrator):
    """Selective scaling: logits / T2 where a classifier predicts the arg-max is wrong, else unchanged.

    Hyper-parameters (beyond ``head``, ``ignore_index``, ``seed``, ``pixels_per_image``,
    ``max_pixels``):

    * ``t2``: a positive temperature for flagged pixels, or ``"auto"`` (confidence matching,
      see the module docstring);
    * classifier: ``hidden`` width, ``epochs`` (default 10; the paper uses 40 epochs of
      20-pixel batches, we use larger ``batch_size`` 512 and keep the best epoch anyway),
      ``lr``, ``weight_decay`` (1e-6, AdamW), ``wrong_weight`` (weight of mispredicted pixels
      in the loss; default #correct / #wrong), ``threshold`` on P(wrong);
    * ``val_fraction``: share of calibration images held out to pick the epoch and T2.

    After fitting: ``fitted_t2``, ``classifier`` and ``validation_metrics`` (the classifier's
    accuracy, balanced accuracy, wrong-class precision/recall on held-out pixels).
    """

    method = "selective"

    def __init__(
        self,
        head: Head = "softmax",
        ignore_index: int = 255,
        seed: int = 0,
        pixels_per_image: int = 4096,
        max_pixels: int = 2**19,
        t2: float | str = "auto",
        hidden: int = 64,
        epochs: int = 10,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        wrong_weight: float | None = None,
        val_fraction: float = 0.2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(head, ignore_index, seed, pixels_per_image, max_pixels)
        number = isinstance(t2, (int, float)) and not isinstance(t2, bool)
        if t2 != "auto" and not (number and math.isfinite(t2) and t2 > 0):
            raise ValueError(f"t2 must be 'auto' or a positive finite temperature, got {t2!r}")
        if min(hidden, epochs, batch_size) < 1:
            raise ValueError(f"hidden, epochs and batch_size must be ≥ 1, got {hidden}, {epochs}, {batch_size}")
        if not 0 < val_fraction < 1 or not 0 < threshold < 1:
            raise ValueError(f"val_fraction and threshold must lie in (0, 1), got {val_fraction} and {threshold}")
        if wrong_weight is not None and not wrong_weight > 0:
            raise ValueError(f"wrong_weight must be None or > 0, got {wrong_weight}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay ≥ 0, got {lr} and {weight_decay}")
        self.t2, self.hidden, self.epochs, self.batch_size = t2, hidden, epochs, batch_size
        self.lr, self.weight_decay, self.wrong_weight = lr, weight_decay, wrong_weight
        self.val_fraction, self.threshold = val_fraction, threshold

    @property
    def validation_metrics_(self) -> dict[str, float]:
        """The chosen classifier's metrics on the held-out calibration pixels."""
        self.check_is_fitted()
        return self.info_.get("validation", {})

    def _training_config(self) -> MispredictionTraining:
        return MispredictionTraining(self.hidden, self.epochs, self.batch_size, self.lr, self.weight_decay,
                                     self.wrong_weight, self.threshold)

    def _fit_pixels(
        self, logits: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor, progress: Progress | None
    ) -> None:
        t = float(fit_log_temperature(logits, labels, self.head).exp())  # cheap: warn before the training
        if t < 1 - NO_OP_TOLERANCE:
            warn_fit(f"selective: the model is under-confident on the calibration pixels (temperature scaling fits "
                     f"T = {t:.3f} < 1); selective scaling can only soften predictions (T2 >= 1) and will change "
                     "little or make things worse; use temperature scaling (--method temperature) instead")
        generator = torch.Generator().manual_seed(self.seed)
        features = misprediction_features(logits, self.head)
        wrong = log_probs(logits, self.head).max(dim=1).indices != labels
        is_val = split_images(image_ids, self.val_fraction, generator)
        self.classifier_, metrics, history = train_misprediction_classifier(
            (features[~is_val], wrong[~is_val]), (features[is_val], wrong[is_val]),
            self._training_config(), generator, progress,
        )
        if self.t2 == "auto":
            flagged = self.classifier_.predict_wrong(features[is_val], self.threshold)
            self.t2_ = confidence_matching_t2(logits[is_val][flagged], labels[is_val][flagged], self.head)
        else:
            self.t2_ = float(self.t2)
        self.info_.update(validation=metrics, history=history, t2=self.t2_)
        self._check_fit(logits[is_val], labels[is_val])

    def _check_fit(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Warn when T2 changes nothing or the held-out top-label ECE got worse (pixel logits ``[P, C]``)."""
        if abs(self.t2_ - 1) < NO_OP_TOLERANCE:
            warn_fit("selective: T2 = 1: the pixels flagged as likely wrong are not over-confident, so selective "
                     "scaling changes nothing; use temperature scaling if the model needs calibrating")
            return
        flagged = self.classifier_.predict_wrong(misprediction_features(logits, self.head), self.threshold)
        scaled = torch.where(flagged.unsqueeze(1), logits / self.t2_, logits)
        before, after = top_label_ece(logits, labels, self.head), top_label_ece(scaled, labels, self.head)
        self.info_.update(val_ece_before=before, val_ece_after=after)
        check_objective("selective", "held-out top-label ECE", before, after)

    def flag_wrong(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean ``[N, H, W]``: pixels of ``logits [N, C, H, W]`` the classifier predicts wrong."""
        self.check_is_fitted()
        n, _, h, w = logits.shape
        features = misprediction_features(logits.float(), self.head)
        self.classifier_.to(logits.device)
        return self.classifier_.predict_wrong(features.reshape(n * h * w, -1), self.threshold).view(n, h, w)

    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        return torch.where(self.flag_wrong(logits).unsqueeze(1), logits / self.t2_, logits)

    def _params(self) -> dict:
        return {"classifier": self.classifier_.state_dict(), "t2": self.t2_}

    def _load_params(self, params: dict, num_channels: int) -> None:
        t2 = float(params["t2"])
        if not math.isfinite(t2) or t2 <= 0:
            raise ValueError(f"t2 in the state must be a positive finite temperature, got {t2}")
        classifier = MispredictionMLP(num_output_classes(num_channels, self.head), self.hidden)
        classifier.load_state_dict(params["classifier"])
        self.classifier_, self.t2_ = classifier.eval(), t2
