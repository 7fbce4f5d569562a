"""From the model's grid back to the original image: undo ``data.resize`` (pad / crop / stretch).

The data pipeline fits every image of size ``(H, W)`` to the model's ``(h, w)``
(:func:`~segcal.data.transforms.fit_to_size`): resize to ``fitted_size`` keeping the aspect, then
letterbox (``pad``) or centre-crop (``crop``), or stretch. :func:`to_original` inverts that for per-pixel
outputs: the letterbox is cut away, cropped-away borders are marked as not covered, and the rest is
resized to ``(H, W)`` (bilinear for scores, nearest for sets and labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segcal.data.transforms import fitted_size


def to_original(x: torch.Tensor, original: tuple[int, int], resize: str, nearest: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [K, h, w]`` on the model's grid → ``([K, H, W], covered [H, W] bool)`` on the original grid.

    ``covered`` is ``False`` where the model never saw the pixel (the borders ``crop`` cut away; there
    ``x`` is 0). ``nearest`` resamples by nearest neighbour (sets, labels); otherwise bilinearly (logits).
    """
    if x.ndim != 3:
        raise ValueError(f"expected [K, h, w], got shape {tuple(x.shape)}")
    height, width = (int(v) for v in original)
    h, w = x.shape[-2:]
    nh, nw = fitted_size(height, width, (h, w), resize)
    top, left = abs(nh - h) // 2, abs(nw - w) // 2
    dtype = x.dtype
    values = x.float()
    if resize == "crop":  # the model saw the centre (h, w) of a (nh, nw) resize: put it back on a blank canvas
        canvas = values.new_zeros((x.shape[0], nh, nw))
        canvas[:, top:top + h, left:left + w] = values
        seen = torch.zeros((1, nh, nw))
        seen[:, top:top + h, left:left + w] = 1.0
        values = canvas
    else:  # pad: cut the letterbox away (stretch: nothing to cut)
        values = values[:, top:top + nh, left:left + nw]
        seen = torch.ones((1, nh, nw))
    mode = "nearest-exact" if nearest else "bilinear"
    kwargs = {} if nearest else {"align_corners": False}
    out = F.interpolate(values[None], size=(height, width), mode=mode, **kwargs)[0]
    covered = F.interpolate(seen[None], size=(height, width), mode="nearest-exact")[0, 0] > 0.5
    if nearest or not dtype.is_floating_point:
        out = out.round()
    return out.to(dtype), covered
