"""Predictions at the model's size mapped back to the original size: inverse of the data transform."""
import numpy as np
import pytest
import torch

from segcal.data.transforms import fit_to_size
from segcal.refine.predict import to_original


def block_mask(h: int, w: int, block: int, num_classes: int = 3, seed: int = 0) -> np.ndarray:
    """A label map made of ``block x block`` constant tiles (exact under integer rescaling)."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, num_classes, (h // block, w // block))
    return np.kron(tiles, np.ones((block, block), dtype=np.int64))


def onehot(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = mask != 255
    out = torch.zeros(num_classes, *mask.shape)
    out.scatter_(0, mask.clamp(max=num_classes - 1)[None], valid[None].float())
    return out


@pytest.mark.parametrize("mode,size", [("pad", (64, 32)), ("pad", (32, 64)), ("stretch", (64, 64)),
                                       ("crop", (32, 64)), ("crop", (64, 32))])
def test_labels_round_trip_through_the_transform(mode, size):
    mask = block_mask(*size, block=2)
    image = np.zeros((*size, 3), dtype=np.uint8)
    _, model_mask = fit_to_size(image, mask, (32, 32), mode)  # what the model is trained on
    back, known = to_original(onehot(model_mask, 3), size, (32, 32), mode, interp="nearest")
    labels = back.argmax(0).numpy()
    assert back.shape == (3, *size)
    if mode == "crop":
        assert 0 < known.sum() < known.numel()
        cols = known.any(0).numpy() if size[1] > size[0] else known.any(1).numpy()
        assert cols.sum() == 32 and np.flatnonzero(cols)[0] == 16  # the centre crop
    else:
        assert known.all()
    assert np.array_equal(labels[known.numpy()], mask[known.numpy()])


def test_pad_drops_letterbox_and_bilinear_keeps_probabilities():
    probs = torch.rand(2, 32, 32)
    probs = probs / probs.sum(0, keepdim=True)
    probs[:, :, :8] = torch.tensor([0.0, 1.0]).view(2, 1, 1)  # letterbox columns: must be dropped
    probs[:, :, 24:] = torch.tensor([0.0, 1.0]).view(2, 1, 1)
    back, known = to_original(probs, (100, 50), (32, 32), "pad")  # 100x50 -> fitted 32x16 at columns 8..23
    assert back.shape == (2, 100, 50) and known.all()
    assert torch.allclose(back.sum(0), torch.ones(100, 50), atol=1e-5)
    inner = probs[:, :, 8:24]
    assert back[1].max() <= inner[1].max() + 1e-6 and back[1].min() >= inner[1].min() - 1e-6


def test_shrinking_is_antialiased_and_constant_maps_stay_constant():
    x = torch.full((2, 32, 32), 0.25)
    back, _ = to_original(x, (8, 8), (32, 32), "stretch")
    assert torch.allclose(back, torch.full((2, 8, 8), 0.25))


def test_bad_shape():
    with pytest.raises(ValueError, match="image_size"):
        to_original(torch.zeros(2, 16, 16), (32, 32), (32, 32), "pad")
    with pytest.raises(ValueError, match="interp"):
        to_original(torch.zeros(2, 32, 32), (64, 64), (32, 32), "pad", interp="cubic")
