"""Predict with a model at its input size and map the outputs back to each image's original size.

The model sees an image through its data transform (``data.image_size`` with ``pad``, ``crop`` or
``stretch``, see :mod:`segcal.data.transforms`). :func:`to_original` inverts that geometry:
``pad`` drops the letterbox border, ``crop`` puts the centre crop back into the resized frame
(pixels cropped away are *unknown*), ``stretch`` only resizes. Probabilities are resized
bilinearly (antialiased when shrinking), label-like maps (prediction sets) by nearest neighbour,
sampling pixel centres like PIL does for the masks.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from segcal.data.base import SegSource
from segcal.data.transforms import SegTransform, fitted_size
from segcal.models.lightning import SegModel
from segcal.outputs import to_probs
from segcal.pipeline.inference import experiment_of, run_model


def to_original(x: torch.Tensor, size: tuple[int, int], image_size: tuple[int, int], mode: str,
                interp: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Map ``x [C, h, w]`` (model frame, ``(h, w) = image_size``) to ``[C, H, W]`` (``size``).

    Returns the mapped tensor (float32) and ``known`` (bool ``[H, W]``, False where the model
    never saw the pixel). ``interp``: ``"bilinear"`` for probabilities, ``"nearest"`` for labels.
    """
    h, w = image_size
    if tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"x must be [C, {h}, {w}] (the model's image_size), got {tuple(x.shape)}")
    big_h, big_w = size
    nh, nw = fitted_size(big_h, big_w, (h, w), mode)
    top, left = abs(nh - h) // 2, abs(nw - w) // 2
    x = x.float()
    known = torch.ones(1, nh, nw)
    if mode == "pad":
        x = x[:, top:top + nh, left:left + nw]
    elif mode == "crop" and (nh, nw) != (h, w):
        border = (left, nw - w - left, top, nh - h - top)
        x = F.pad(x[None], border, mode="replicate")[0]  # no blending with made-up values at the edge
        known = F.pad(known.new_ones(1, h, w), border)
    out = _resize(x, (big_h, big_w), interp)
    return out, _resize(known, (big_h, big_w), "nearest")[0] > 0.5


def _resize(x: torch.Tensor, size: tuple[int, int], interp: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interp == "nearest":
        return F.interpolate(x[None], size=size, mode="nearest-exact")[0]
    if interp != "bilinear":
        raise ValueError(f"interp must be 'bilinear' or 'nearest', got {interp!r}")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


class _ModelInputs(Dataset):
    """Items ``{"image": [3, h, w] model input, "mask": raw int64 [H, W], "name"}`` of a source."""

    def __init__(self, source: SegSource, transform: SegTransform):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        sample = self.source.load(i)
        return {"image": self.transform(sample)["image"], "mask": sample.mask, "name": sample.name}


def _collate(items: list[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]), "mask": [it["mask"] for it in items],
            "name": [it["name"] for it in items]}


@dataclass
class OriginalPrediction:
    """One image's outputs at its original size: ``probs [C, H, W]``, ``sets [C, H, W]`` or None."""

    name: str
    mask: np.ndarray
    probs: np.ndarray
    known: np.ndarray
    sets: np.ndarray | None = None


def model_transform(model: SegModel) -> SegTransform:
    """The model's evaluation transform (its stored ``data`` config, no augmentation)."""
    return SegTransform.from_config(experiment_of(model).data)


@torch.no_grad()
def predict_original(model: SegModel, source: SegSource, batch_size: int = 8, calibrator=None,
                     alpha: float = 0.1, num_workers: int = 0, progress: bool = True,
                     description: str = "predict") -> Iterator[OriginalPrediction]:
    """Yield each image's probabilities (and conformal sets, with ``calibrator``) at its original size."""
    data = experiment_of(model).data
    transform = model_transform(model)
    loader = DataLoader(_ModelInputs(source, transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    for logits, batch in run_model(model, loader, description, progress):
        probs = to_probs(logits, "logits", model.head)
        sets = calibrator.predict_set(logits, alpha) if calibrator is not None else None
        for j, (name, mask) in enumerate(zip(batch["name"], batch["mask"])):
            p, known = to_original(probs[j], mask.shape, data.image_size, data.resize)
            s = None
            if sets is not None:
                s = to_original(sets[j].float(), mask.shape, data.image_size, data.resize, "nearest")[0] > 0.5
                s = s.numpy()
            yield OriginalPrediction(name, mask, p.numpy(), known.numpy(), s)
