"""Resizing, normalisation and joint image+mask augmentation."""
import numpy as np
import pytest
import torch

from segcal.data.base import Sample
from segcal.data.config import AugmentConfig, DataConfig
from segcal.data.transforms import SegTransform, affine_pair, color_jitter, denormalize, fit_to_size, normalize


def _wide_sample(h=20, w=40):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = 200
    mask = np.zeros((h, w), dtype=np.int64)
    mask[:, w // 2:] = 2
    return Sample("wide", image, mask)


def test_pad_keeps_aspect_and_marks_padding_ignore():
    s = _wide_sample()  # 20 x 40 -> fit into 40 x 40: scaled x1, 10 rows of padding above and below
    out = SegTransform((40, 40), "pad", ignore_index=255)(s)
    mask = out["mask"]
    assert mask.shape == (40, 40)
    assert (mask[:10] == 255).all() and (mask[30:] == 255).all()
    assert set(mask[10:30].unique().tolist()) == {0, 2}
    assert (mask[10:30, :20] == 0).all() and (mask[10:30, 20:] == 2).all()
    # padded image pixels are the mean colour, i.e. 0 after normalisation
    assert torch.allclose(out["image"][:, :10], torch.zeros(3, 10, 40), atol=1e-6)


def test_pad_downscales_by_the_limiting_side():
    img, mask = fit_to_size(np.zeros((30, 90, 3), np.uint8), np.zeros((30, 90), np.int64), (20, 30), "pad")
    assert img.shape == (3, 20, 30)
    assert (mask == 255).sum() == 10 * 30  # content 10 x 30, 10 padded rows


def test_crop_and_stretch():
    s = _wide_sample()
    crop = SegTransform((20, 20), "crop")(s)["mask"]
    assert crop.shape == (20, 20) and (crop[:, :10] == 0).all() and (crop[:, 10:] == 2).all()
    stretch = SegTransform((10, 10), "stretch")(s)["mask"]
    assert stretch.shape == (10, 10) and (stretch[:, :5] == 0).all() and (stretch[:, 5:] == 2).all()


def test_normalize_and_denormalize_invert():
    cfg = DataConfig()
    x = torch.rand(3, 5, 6)
    torch.testing.assert_close(denormalize(normalize(x, cfg.mean, cfg.std), cfg), x)
    item = SegTransform(None, mean=cfg.mean, std=cfg.std)(_wide_sample())
    assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64
    torch.testing.assert_close(denormalize(item["image"], cfg)[0], torch.full((20, 40), 200 / 255))


def test_resized_masks_never_interpolate_labels():
    rng = np.random.default_rng(0)
    mask = rng.choice([0, 3, 7], size=(37, 53))
    s = Sample("r", rng.integers(0, 255, (37, 53, 3), dtype=np.uint8), mask)
    for mode in ("pad", "crop", "stretch"):
        out = SegTransform((24, 24), mode)(s)["mask"]
        assert set(out.unique().tolist()) <= {0, 3, 7, 255}


STRONG = AugmentConfig(hflip=0.5, vflip=0.5, rotate_deg=40, scale=(0.7, 1.3), translate=0.2, color_jitter=0.5)


def test_augmented_masks_stay_integer_labels_and_borders_are_ignored():
    rng = np.random.default_rng(1)
    mask = rng.choice([0, 1, 2], size=(32, 32))
    s = Sample("a", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), mask)
    t = SegTransform((32, 32), augment=STRONG)
    seen = set()
    for seed in range(20):
        out = t(s, seed=seed)["mask"]
        assert out.dtype == torch.int64
        seen |= set(out.unique().tolist())
    assert seen == {0, 1, 2, 255}  # rotations/zoom-outs bring in out-of-image pixels as ignore


def test_affine_matches_nearest_resampling_of_labels():
    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[4:12, 4:12] = 1
    image = torch.zeros(3, 16, 16)
    _, out = affine_pair(image, mask, angle=0.0, zoom=2.0, shift=(0.0, 0.0), ignore_index=255)
    assert (out == 1).all()  # zoom x2 on the centre: the square fills the frame
    _, out = affine_pair(image, mask, angle=0.0, zoom=0.5, shift=(0.0, 0.0), ignore_index=255)
    assert (out == 1).sum() == 16 and (out == 255).sum() == 16 * 16 - 64


def test_augmentation_reproducible_from_seed():
    rng = np.random.default_rng(2)
    s = Sample("a", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), rng.choice([0, 1], size=(24, 24)))
    t = SegTransform((24, 24), augment=STRONG)
    a, b, c = t(s, seed=5), t(s, seed=5), t(s, seed=6)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_flips_move_image_and_mask_together():
    s = _wide_sample()
    t = SegTransform(None, augment=AugmentConfig(hflip=1.0))
    out = t(s, seed=0)
    assert (out["mask"][:, :20] == 2).all() and (out["mask"][:, 20:] == 0).all()


def test_color_jitter_changes_image_only():
    img = torch.rand(3, 8, 8)
    torch.testing.assert_close(color_jitter(img, 1.0, 1.0, 1.0), img)
    grey = torch.full((3, 4, 4), 0.5)
    torch.testing.assert_close(color_jitter(grey, 1.2, 1.0, 1.0), torch.full((3, 4, 4), 0.6))
    s = _wide_sample()
    out = SegTransform(None, augment=AugmentConfig(hflip=0.0, color_jitter=0.5))(s, seed=3)
    assert torch.equal(out["mask"], torch.from_numpy(s.mask))


def test_bad_resize_mode():
    with pytest.raises(ValueError, match="resize mode"):
        fit_to_size(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64), (2, 2), "squash")
