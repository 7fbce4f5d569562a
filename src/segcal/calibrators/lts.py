"""Local temperature scaling (Ding, Han, Liu & Niethammer, ICCV 2021).

A small fully convolutional network maps the model's floored log-probabilities (optionally
concatenated with the input image) to a per-pixel temperature map ``T(x) [N, 1, H, W]``,
shared by all classes: calibrated logits are ``logits / T(x)``. ``T = softplus(·) + t_min``
is positive, so the arg-max never changes, and the network starts at ``T = 1`` everywhere
(zero-initialised output layer). It is trained by minimising the NLL of the valid pixels
of a seeded reservoir of calibration crops (:class:`~segcal.calibrators.sampling.CropSample`)
with Adam for a fixed number of epochs, keeping the epoch (0 = the untrained T = 1 included)
with the lowest NLL on held-out crops: a per-pixel network can over-fit the label noise of a
small calibration set. Both heads are supported.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from segcal.calibrators.base import Calibrator
from segcal.calibrators.nll import floored_log_probs, mean_nll
from segcal.calibrators.sampling import CropSample
from segcal.calibrators.stream import CalibrationStream, Progress
from segcal.outputs import Head, num_output_classes


class TemperatureNet(nn.Module):
    """``[N, K, H, W]`` inputs → positive temperatures ``[N, 1, H, W]``.

    Three 3×3 convolutions with dilations 1, 2, 4 (a 15×15 receptive field) and ReLUs, then
    a 1×1 convolution, ``softplus`` and ``+ t_min``. Output starts at exactly 1.
    """

    def __init__(self, in_channels: int, hidden: int = 16, t_min: float = 0.05) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, dilation in enumerate((1, 2, 4)):
            layers += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(hidden, 1, 1)
        self.t_min = t_min
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.fill_(math.log(math.expm1(1.0 - t_min)))  # softplus⁻¹(1 − t_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.out(self.features(x))) + self.t_min


class LocalTemperatureScaling(Calibrator):
    """Per-pixel temperature map from a small CNN: logits → logits / T(x).

    Hyper-parameters (beyond ``head``, ``ignore_index``, ``seed``): ``use_image`` (feed the
    image too: stream items must then be ``(logits, labels, images)`` and ``transform``
    needs ``images``), ``hidden`` channels, ``t_min`` (smallest temperature), ``epochs``,
    ``batch_size`` (crops per step), ``lr``, ``weight_decay`` (Adam), ``val_fraction`` (share
    of crops held out to pick the epoch, 0 = pick on the training crops), and the crop reservoir
    ``max_images`` × ``crop_size``² (memory at most ``max_images × (C + K + 2) × crop_size² × 4``
    bytes). ``info`` holds ``best_epoch``, the validation NLL per epoch (``val_nll``, epoch 0 =
    T = 1) and the NLL of all sampled crops before and after.
    """

    method = "lts"

    def __init__(
        self,
        head: Head = "softmax",
        ignore_index: int = 255,
        seed: int = 0,
        use_image: bool = False,
        hidden: int = 16,
        t_min: float = 0.05,
        epochs: int = 30,
        batch_size: int = 8,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        val_fraction: float = 0.2,
        max_images: int = 256,
        crop_size: int = 128,
    ) -> None:
        super().__init__(head, ignore_index, seed)
        if min(hidden, epochs, batch_size, max_images, crop_size) < 1:
            raise ValueError(
                "hidden, epochs, batch_size, max_images and crop_size must be ≥ 1, got"
                f" {hidden}, {epochs}, {batch_size}, {max_images}, {crop_size}"
            )
        if not 0 < t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay ≥ 0, got {lr} and {weight_decay}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        self.use_image, self.hidden, self.t_min = use_image, hidden, t_min
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.val_fraction, self.max_images, self.crop_size = val_fraction, max_images, crop_size

    def _inputs(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        x = floored_log_probs(logits, self.head)
        return torch.cat([x, images], dim=1) if self.use_image and images is not None else x

    @torch.no_grad()
    def temperature_map(self, logits: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Temperatures ``[N, 1, H, W]`` for ``logits [N, C, H, W]`` (and ``images [N, K, H, W]``)."""
        self.check_is_fitted()
        if self.use_image:
            n, _, h, w = logits.shape
            if images is None or tuple(images.shape) != (n, self.image_channels_, h, w):
                got = None if images is None else tuple(images.shape)
                raise ValueError(
                    f"use_image=True needs images of shape [{n}, {self.image_channels_}, {h}, {w}], got {got}"
                )
            images = images.to(logits.device, torch.float32)
        self.net_.to(logits.device)
        return self.net_(self._inputs(logits.float(), images))

    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        return logits / self.temperature_map(logits, images)

    def _collect(self, batches: CalibrationStream) -> CropSample:
        sample = CropSample(self.max_images, self.crop_size, self.ignore_index, self.seed)
        for batch in batches:
            if self.use_image and batch.images is None:
                raise ValueError("use_image=True needs stream items (logits, labels, images)")
            sample.add(batch.logits, batch.labels, batch.images if self.use_image else None)
        return sample

    def _split(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded ``(train, val)`` crop indices; ``val = train`` (all crops) when ``val_fraction == 0``."""
        order = torch.randperm(count, generator=generator)
        if self.val_fraction == 0:
            return order, order
        if count < 2:
            raise ValueError(
                f"local temperature scaling holds out {self.val_fraction:g} of the calibration images to"
                f" choose the epoch but got {count} image; pass val_fraction=0 or more images"
            )
        n_val = min(max(1, round(self.val_fraction * count)), count - 1)
        return order[n_val:], order[:n_val]

    def _fit_sample(self, sample: CropSample, progress: Progress | None) -> None:
        crops = sample.tensors()
        logits, labels, images = crops["logits"], crops["labels"], crops.get("images")
        x = self._inputs(logits, images)
        self.image_channels_ = 0 if images is None else images.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        train, val = (idx.to(x.device) for idx in self._split(len(labels), generator))
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
            torch.manual_seed(self.seed)
            net = TemperatureNet(x.shape[1], self.hidden, self.t_min).to(x.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        has_valid = (labels != self.ignore_index).flatten(1).any(dim=1)
        history = [self._nll(logits, labels, x, val, net)]
        best_epoch, best_state = 0, copy.deepcopy(net.state_dict())
        epochs = range(1, self.epochs + 1)
        for epoch in progress(epochs, "local temperature scaling") if progress else epochs:
            shuffled = train[torch.randperm(len(train), generator=generator).to(x.device)]
            for idx in shuffled[has_valid[shuffled]].split(self.batch_size):
                loss = mean_nll(logits[idx] / net(x[idx]), labels[idx], self.head, self.ignore_index)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            history.append(self._nll(logits, labels, x, val, net))
            if history[-1] < history[best_epoch]:
                best_epoch, best_state = epoch, copy.deepcopy(net.state_dict())
        net.load_state_dict(best_state)
        self.net_ = net.eval()
        every = torch.arange(len(labels), device=x.device)
        self.info_.update(crops=len(labels), val_crops=len(val), best_epoch=best_epoch, val_nll=history,
                         nll_before=self._nll(logits, labels, x, every, None),
                         nll_after=self._nll(logits, labels, x, every, net))

    @torch.no_grad()
    def _nll(self, logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, crops: torch.Tensor,
             net: TemperatureNet | None) -> float:
        """Mean NLL over the valid pixels of ``crops`` (indices), scaled by ``net`` (``None``: T = 1)."""
        total, count = 0.0, 0
        for idx in crops.split(self.batch_size):
            valid = int((labels[idx] != self.ignore_index).sum())
            if valid:
                z = logits[idx] if net is None else logits[idx] / net(x[idx])
                total += float(mean_nll(z, labels[idx], self.head, self.ignore_index)) * valid
                count += valid
        return total / count if count else float("nan")

    def _params(self) -> dict:
        assert self.net_ is not None
        return {"net": self.net_.state_dict(), "image_channels": self.image_channels_}

    def _load_params(self, params: dict, num_channels: int) -> None:
        self.image_channels_ = int(params["image_channels"])
        in_channels = num_output_classes(num_channels, self.head) + (self.image_channels_ if self.use_image else 0)
        net = TemperatureNet(in_channels, self.hidden, self.t_min)
        net.load_state_dict(params["net"])
        self.net_ = net.eval()
