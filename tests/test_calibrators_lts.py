"""Local temperature scaling: spatially varying over-confidence, arg-max, images, state."""
import pytest
import torch
import torch.nn.functional as F

from segcal.calibrators.lts import LocalTemperatureScaling, TemperatureNet
from segcal.calibrators.nll import mean_nll
from segcal.calibrators.temperature import TemperatureScaling

C = 3


def region_stream(num_batches=2, n=8, size=24, seed=0):
    """Labels ~ softmax(z); the model reports 3·z on the left half (over-confident) and z on
    the right half (calibrated). The image's channel 0 marks the left half."""
    g = torch.Generator().manual_seed(seed)
    left = (torch.arange(size) < size // 2).float().expand(size, size)
    t_map = 1 + 2 * left
    batches = []
    for _ in range(num_batches):
        z = torch.randn(n, C, size, size, generator=g) * 2
        labels = torch.multinomial(F.softmax(z, 1).movedim(1, -1).reshape(-1, C), 1, generator=g)
        images = torch.stack([left, torch.zeros_like(left), torch.zeros_like(left)]).expand(n, 3, size, size)
        batches.append((z * t_map, labels.reshape(n, size, size), images))
    return batches, left.bool()


def test_lts_learns_a_spatially_varying_temperature_and_beats_global_ts():
    train, left = region_stream()
    cal = LocalTemperatureScaling(use_image=True, epochs=25, batch_size=4, lr=1e-2).fit(train)
    ts = TemperatureScaling().fit(train)
    (test,), _ = region_stream(num_batches=1, seed=1)
    logits, labels, images = test
    t_map = cal.temperature_map(logits, images)[:, 0]
    assert t_map[:, left].mean() > 2.0 and t_map[:, ~left].mean() < 1.5
    nll_lts, nll_ts = mean_nll(cal(logits, images), labels), mean_nll(ts(logits), labels)
    assert nll_lts < nll_ts - 0.02
    assert torch.equal(cal(logits, images).argmax(1), logits.argmax(1))


def test_temperature_net_starts_at_one_and_stays_positive():
    net = TemperatureNet(4, hidden=8, t_min=0.05)
    assert torch.allclose(net(torch.randn(2, 4, 9, 9)), torch.ones(2, 1, 9, 9), atol=1e-6)
    with torch.no_grad():
        net.out.bias.fill_(-100.0)
    assert (net(torch.randn(1, 4, 5, 5)) >= 0.05).all()


def test_lts_without_image_keeps_argmax_and_handles_sigmoid_heads():
    train, _ = region_stream(num_batches=1, n=4, size=16)
    cal = LocalTemperatureScaling(epochs=2, crop_size=8).fit([(z, y) for z, y, _ in train])
    logits = train[0][0]
    assert cal(logits).shape == logits.shape
    assert torch.equal(cal(logits).argmax(1), logits.argmax(1))
    binary = [(z[:, :1], (y > 0).long()) for z, y, _ in train]
    sig = LocalTemperatureScaling(head="sigmoid", epochs=2).fit(binary)
    assert torch.equal(sig(binary[0][0]) > 0, binary[0][0] > 0)


def test_use_image_requires_images_in_the_stream_and_at_transform():
    train, _ = region_stream(num_batches=1, n=4, size=16)
    with pytest.raises(ValueError, match="use_image=True"):
        LocalTemperatureScaling(use_image=True, epochs=1).fit([(z, y) for z, y, _ in train])
    cal = LocalTemperatureScaling(use_image=True, epochs=1).fit(train)
    logits, _, images = train[0]
    with pytest.raises(ValueError, match="images of shape"):
        cal(logits)
    with pytest.raises(ValueError, match="images of shape"):
        cal(logits, images[:, :2])


def test_state_round_trip_with_images_is_exact():
    train, _ = region_stream(num_batches=1, n=4, size=16)
    cal = LocalTemperatureScaling(use_image=True, epochs=2).fit(train)
    clone = LocalTemperatureScaling.from_state_dict(cal.state_dict())
    logits, _, images = train[0]
    assert torch.equal(clone(logits, images), cal(logits, images))
    assert clone.get_params() == cal.get_params()


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError, match="t_min"):
        LocalTemperatureScaling(t_min=0.0)
    with pytest.raises(ValueError, match="crop_size"):
        LocalTemperatureScaling(crop_size=0)


def test_epoch_selection_needs_two_images_unless_disabled():
    (batch,), _ = region_stream(num_batches=1, n=1, size=16)
    with pytest.raises(ValueError, match="val_fraction=0"):
        LocalTemperatureScaling(epochs=1).fit([batch[:2]])
    cal = LocalTemperatureScaling(epochs=2, val_fraction=0).fit([batch[:2]])
    assert cal.info_["val_crops"] == 1 and len(cal.info_["val_nll"]) == 3
