"""Temperature and vector scaling: recovery of known temperatures, arg-max, heads, ignore_index, NLL."""
import pytest
import torch
import torch.nn.functional as F

from segcal.calibrators.nll import mean_nll
from segcal.calibrators.temperature import TemperatureScaling, VectorScaling


def tempered_stream(temperature, num_batches=4, n=8, c=5, size=32, seed=0, scale=2.0):
    """Labels drawn from softmax(z); the model reports z * temperature (per class if a vector)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.as_tensor(temperature, dtype=torch.float32).reshape(1, -1, 1, 1)
    batches = []
    for _ in range(num_batches):
        z = torch.randn(n, c, size, size, generator=g) * scale
        probs = F.softmax(z, dim=1).movedim(1, -1).reshape(-1, c)
        labels = torch.multinomial(probs, 1, generator=g).reshape(n, size, size)
        batches.append((z * t, labels))
    return batches


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_scaling_recovers_known_temperature(t_true):
    cal = TemperatureScaling().fit(tempered_stream(t_true))
    assert cal.temperature_.shape == (1,)
    assert abs(cal.temperature_.item() / t_true - 1) < 0.02
    assert cal.info_["nll_after"] < cal.info_["nll_before"]
    assert cal.info_["pixels"] == 4 * 8 * 32 * 32


def test_binary_sigmoid_temperature_is_recovered():
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(4):
        z = torch.randn(8, 1, 32, 32, generator=g) * 3
        labels = torch.bernoulli(torch.sigmoid(z[:, 0]), generator=g).long()
        batches.append((z * 1.8, labels))
    cal = TemperatureScaling(head="sigmoid").fit(batches)
    assert abs(cal.temperature_.item() / 1.8 - 1) < 0.02


def test_vector_scaling_recovers_per_class_temperatures_roughly():
    t_true = torch.tensor([0.7, 1.0, 1.5, 2.0, 3.0])
    cal = VectorScaling().fit(tempered_stream(t_true, num_batches=6))
    assert cal.temperature_.shape == (5,)
    assert torch.allclose(cal.temperature_, t_true, rtol=0.1)


def test_temperature_and_equal_vector_temperatures_keep_the_argmax():
    logits, _ = tempered_stream(2.0, num_batches=1)[0]
    cal = TemperatureScaling().fit(tempered_stream(2.0, num_batches=1))
    out = cal(logits)
    assert out.shape == logits.shape and out.dtype == torch.float32
    assert torch.equal(out.argmax(1), logits.argmax(1))
    vec = VectorScaling().fit(tempered_stream(2.0, num_batches=1))
    state = vec.state_dict()
    state["params"]["log_temperature"] = torch.full((5,), 0.9)
    equal = VectorScaling.from_state_dict(state)
    assert torch.equal(equal(logits).argmax(1), logits.argmax(1))
    assert torch.allclose(equal(logits), logits / torch.tensor(0.9).exp())


def test_multichannel_sigmoid_head_fits_one_temperature_per_channel():
    g = torch.Generator().manual_seed(5)
    batches = []
    for _ in range(2):
        labels = torch.randint(0, 3, (4, 16, 16), generator=g)
        z = (F.one_hot(labels, 3).movedim(-1, 1).float() * 2 - 1) * 6 + torch.randn(4, 3, 16, 16, generator=g)
        batches.append((z, labels))
    cal = VectorScaling(head="sigmoid").fit(batches)
    assert cal.temperature_.shape == (3,)
    assert cal.info_["nll_after"] <= cal.info_["nll_before"]


def test_ignored_pixels_do_not_influence_the_fit():
    def with_ignored_rows(fill):
        out = []
        for logits, labels in tempered_stream(2.0, num_batches=2):
            labels, logits = labels.clone(), logits.clone()
            labels[:, :8] = 255
            logits[:, :, :8] = fill(logits[:, :, :8])
            out.append((logits, labels))
        return out

    with_junk = TemperatureScaling().fit(with_ignored_rows(lambda x: torch.randn_like(x) * 100))
    with_zeros = TemperatureScaling().fit(with_ignored_rows(torch.zeros_like))
    assert with_junk.info_["pixels"] == 2 * 8 * 24 * 32
    assert torch.equal(with_junk.temperature_, with_zeros.temperature_)


def test_mean_nll_matches_torch_losses_for_both_heads():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, 0] = 255
    assert torch.allclose(mean_nll(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))
    valid = labels != 255
    onehot = F.one_hot(labels.clamp_max(2), 3).movedim(-1, 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1)[valid].mean()
    assert torch.allclose(mean_nll(logits, labels, "sigmoid"), bce)
    binary = labels.clamp_max(1).where(valid, labels)
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], binary[valid].float())
    assert torch.allclose(mean_nll(logits[:, :1], binary, "sigmoid"), expected)
    flat = logits.movedim(1, -1).reshape(-1, 3)
    assert torch.allclose(mean_nll(flat[valid.flatten()], labels.flatten()[valid.flatten()]), mean_nll(logits, labels))


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError, match="max_iter"):
        TemperatureScaling(max_iter=0)
    with pytest.raises(ValueError, match="pixels_per_image"):
        VectorScaling(pixels_per_image=0)
    with pytest.raises(ValueError, match="head"):
        TemperatureScaling(head="softplus")
