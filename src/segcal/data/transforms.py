"""Resize, normalise and jointly augment image + mask.

Order per item: resize the uint8 image to ``image_size`` (PIL; pad / crop / stretch) → float [0, 1] →
colour jitter (image only) → normalise with mean/std → flips and affine (MONAI ``Affine``:
bilinear for the image, nearest for the mask). Pixels that come from outside the image
(letterbox padding, affine borders) are ``ignore_index`` in the mask and the mean colour
(0 after normalisation) in the image. Masks are never interpolated.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Affine
from PIL import Image

from segcal.data.config import AugmentConfig, DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def fitted_size(height: int, width: int, size: tuple[int, int], mode: str) -> tuple[int, int]:
    """Size ``(nh, nw)`` to resize an ``height x width`` image to before padding/cropping to ``size``."""
    h, w = size
    if mode == "stretch":
        return h, w
    if mode not in ("pad", "crop"):
        raise ValueError(f"resize mode must be 'pad', 'crop' or 'stretch', got {mode!r}")
    s = min(h / height, w / width) if mode == "pad" else max(h / height, w / width)
    nh, nw = max(1, round(height * s)), max(1, round(width * s))
    return (min(nh, h), min(nw, w)) if mode == "pad" else (max(nh, h), max(nw, w))


def resize_arrays(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``uint8 [H, W, 3]`` (bilinear, antialiased) and an integer mask (nearest) to ``size``."""
    if image.shape[:2] == tuple(size):
        return image, mask
    h, w = size
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize((w, h), Image.NEAREST)).astype(np.int64)
    return image, mask


def fit_to_size(image: np.ndarray, mask: np.ndarray, size: tuple[int, int], mode: str = "pad",
                fill: Sequence[float] = IMAGENET_MEAN, ignore_index: int = 255
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 [H, W, 3]`` image and ``[H, W]`` mask → float ``[3, h, w]`` in [0, 1] and int64 ``[h, w]``.

    ``pad``: keep aspect, letterbox (image filled with ``fill``, mask with ``ignore_index``);
    ``crop``: keep aspect, cover then centre-crop; ``stretch``: ignore aspect.
    """
    h, w = size
    nh, nw = fitted_size(image.shape[0], image.shape[1], size, mode)
    image, mask = resize_arrays(np.ascontiguousarray(image), np.asarray(mask), (nh, nw))
    img_t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
    mask_t = torch.from_numpy(np.array(mask, dtype=np.int64))
    top, left = abs(nh - h) // 2, abs(nw - w) // 2
    if (nh, nw) == (h, w):
        return img_t, mask_t
    if mode == "crop":
        return img_t[:, top:top + h, left:left + w], mask_t[top:top + h, left:left + w]
    out_img = torch.tensor(list(fill), dtype=torch.float32).view(3, 1, 1).repeat(1, h, w)
    out_mask = torch.full((h, w), ignore_index, dtype=torch.int64)
    out_img[:, top:top + nh, left:left + nw] = img_t
    out_mask[top:top + nh, left:left + nw] = mask_t
    return out_img, out_mask


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image - mean) / std`` per channel, ``[..., 3, H, W]``."""
    m = torch.tensor(list(mean), dtype=image.dtype).view(3, 1, 1)
    s = torch.tensor(list(std), dtype=image.dtype).view(3, 1, 1)
    return (image - m) / s


def denormalize(image: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Inverse of :func:`normalize` with ``cfg.mean/std``, clamped to [0, 1] (for plotting)."""
    m = torch.tensor(list(cfg.mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(list(cfg.std), dtype=torch.float32).view(3, 1, 1)
    return (image.detach().float().cpu() * s + m).clamp(0.0, 1.0)


def color_jitter(image: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Scale brightness, contrast (around the mean grey) and saturation of ``[3, H, W]`` in [0, 1]."""
    image = image * brightness
    grey_mean = (image * _GRAY).sum(0).mean()
    image = (image - grey_mean) * contrast + grey_mean
    grey = (image * _GRAY).sum(0, keepdim=True)
    return (grey + (image - grey) * saturation).clamp(0.0, 1.0)


def affine_pair(image: torch.Tensor, mask: torch.Tensor, angle: float, zoom: float,
                shift: tuple[float, float], ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (radians), zoom (>1 enlarges) and shift (pixels, (dy, dx)) image and mask together.

    Out-of-image pixels: 0 in the (normalised) image, ``ignore_index`` in the mask.
    """
    aff = Affine(rotate_params=angle, scale_params=(1.0 / zoom, 1.0 / zoom), translate_params=shift,
                 padding_mode="zeros", image_only=True)
    image = aff(image, mode="bilinear").as_tensor()
    shifted = aff((mask + 1).double()[None], mode="nearest").as_tensor()[0].round().long()  # 0 = outside
    return image, torch.where(shifted == 0, torch.full_like(shifted, ignore_index), shifted - 1)


class SegTransform:
    """Raw :class:`~segcal.data.base.Sample` → ``{"image": float32 [3, H, W], "mask": int64 [H, W], "name",
    "size"}`` (``size``: the original ``(H, W)``, int64 ``[2]``).

    ``image_size=None`` keeps the native size. With ``augment``, ``__call__(sample, seed)`` draws
    every random parameter from ``numpy.random.default_rng(seed)`` (reproducible).
    """

    def __init__(self, image_size: tuple[int, int] | None = None, resize: str = "pad",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 ignore_index: int = 255, augment: AugmentConfig | None = None):
        self.image_size = tuple(image_size) if image_size is not None else None
        self.resize, self.mean, self.std = resize, tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.augment = augment
        self._rng = np.random.default_rng()

    @classmethod
    def from_config(cls, cfg: DataConfig, augment: bool = False) -> SegTransform:
        return cls(cfg.image_size, cfg.resize, cfg.mean, cfg.std, cfg.ignore_index,
                   cfg.augment if augment else None)

    def __call__(self, sample, seed: int | None = None) -> dict:
        size = self.image_size or sample.image.shape[:2]
        image, mask = fit_to_size(sample.image, sample.mask, size, self.resize, self.mean, self.ignore_index)
        if self.augment is not None:
            rng = np.random.default_rng(seed) if seed is not None else self._rng
            image, mask = self._augment(image, mask, rng)
        else:
            image = normalize(image, self.mean, self.std)
        return {"image": image.contiguous(), "mask": mask.contiguous(), "name": sample.name,
                "size": torch.tensor(sample.image.shape[:2])}

    def _augment(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.augment
        u_h, u_v = rng.random(2)
        angle = math.radians(rng.uniform(-a.rotate_deg, a.rotate_deg))
        zoom = rng.uniform(*a.scale)
        dy, dx = rng.uniform(-a.translate, a.translate, 2) * np.array(image.shape[-2:])
        jitter = rng.uniform(1.0 - a.color_jitter, 1.0 + a.color_jitter, 3)
        if a.color_jitter > 0:
            image = color_jitter(image, *jitter)
        image = normalize(image, self.mean, self.std)
        if u_h < a.hflip:
            image, mask = image.flip(-1), mask.flip(-1)
        if u_v < a.vflip:
            image, mask = image.flip(-2), mask.flip(-2)
        if angle != 0.0 or zoom != 1.0 or dy != 0.0 or dx != 0.0:
            image, mask = affine_pair(image, mask, angle, zoom, (float(dy), float(dx)), self.ignore_index)
        return image, mask
