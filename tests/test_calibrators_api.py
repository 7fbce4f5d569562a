"""Shared calibrator API: stream formats, bad input, sampling rule, registry and state round trips."""
import io

import pytest
import torch

from segcal.calibrators.registry import CALIBRATORS, load_calibrator, make_calibrator
from segcal.calibrators.sampling import CropSample, PixelSample, reservoir_slots
from segcal.calibrators.stream import CalibrationStream
from segcal.estimator import NotFittedError

C = 3
QUICK = {"temperature": {}, "vector": {}, "matrix": {}, "dirichlet": {}, "selective": {"epochs": 2},
         "lts": {"epochs": 2}, "histogram": {}, "isotonic": {}}


def random_batches(num_batches=3, n=4, size=8, seed=0, c=C):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, c, size, size, generator=g) * 3, torch.randint(0, c, (n, size, size), generator=g))
            for _ in range(num_batches)]


def quick(method, **kw):
    return make_calibrator(method, **QUICK[method], **kw)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_state_dict_round_trip_gives_identical_outputs(method):
    batches = random_batches()
    cal = quick(method).fit(batches)
    buffer = io.BytesIO()
    torch.save(cal.state_dict(), buffer)
    buffer.seek(0)
    clone = load_calibrator(torch.load(buffer, weights_only=True))
    assert type(clone) is type(cal) and clone.get_params() == cal.get_params()
    logits = random_batches(num_batches=1, seed=9)[0][0]
    assert torch.equal(clone(logits), cal(logits))
    assert clone.info_ == cal.info_


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_argmax_is_kept_and_shape_preserved(method):
    cal = quick(method).fit(random_batches())
    logits = random_batches(num_batches=1, seed=5)[0][0]
    out = cal(logits)
    assert out.shape == logits.shape and out.dtype == torch.float32
    if cal.preserves_argmax:  # vector (unequal temperatures), histogram and isotonic (mapped) may reorder
        assert torch.equal(out.argmax(1), logits.argmax(1))


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_bad_streams_raise_clear_errors(method):
    with pytest.raises(ValueError, match="no batches"):
        quick(method).fit([])
    with pytest.raises(ValueError, match="no batches"):
        quick(method).fit(iter(()))
    logits, labels = random_batches(num_batches=1)[0]
    with pytest.raises(ValueError, match="single class"):
        quick(method).fit([(logits, torch.full_like(labels, 2))])
    nan = logits.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        quick(method).fit([(nan, labels)])
    with pytest.raises(ValueError, match="no labelled pixels"):
        quick(method).fit([(logits, torch.full_like(labels, 255))])
    with pytest.raises(ValueError, match="labels must lie"):
        quick(method).fit([(logits, torch.full_like(labels, 7))])


def test_single_class_with_ignored_pixels_still_counts_as_single():
    logits, labels = random_batches(num_batches=1)[0]
    labels = torch.where(labels == 0, torch.tensor(255), torch.tensor(1))
    with pytest.raises(ValueError, match=r"single class \(1\)"):
        quick("temperature").fit([(logits, labels)])


def test_stream_items_may_be_tuples_lists_or_mappings():
    (logits, labels), (l2, y2) = random_batches(num_batches=2)
    images = torch.zeros(logits.shape[0], 3, *logits.shape[2:])
    items = [(logits, labels, images), {"logits": l2, "labels": y2}]
    stream = CalibrationStream(items)
    batches = list(stream)
    assert batches[0].images is not None and batches[1].images is None
    assert stream.num_batches == 2 and stream.num_images == 8 and int(stream.class_counts.sum()) == 2 * 4 * 64
    for bad, message in [((logits,), "stream items must be"), ({"logits": logits}, "keys"),
                         ((logits, labels.tolist()), "torch.Tensor or a NumPy array"),
                         ((logits, labels, images[:, :, :2]), "images")]:
        with pytest.raises(ValueError, match=message):
            list(CalibrationStream([bad]))
    with pytest.raises(ValueError, match="iterable"):
        CalibrationStream(logits)
    (from_numpy,) = list(CalibrationStream([(logits.numpy(), labels.numpy())]))
    assert torch.equal(from_numpy.logits, logits) and torch.equal(from_numpy.labels, labels)


def test_channel_count_must_stay_the_same_across_batches():
    a = random_batches(num_batches=1)[0]
    b = random_batches(num_batches=1, c=4)[0]
    with pytest.raises(ValueError, match="earlier batches had 3"):
        quick("temperature").fit([a, b])


def test_transform_checks_fit_and_shape():
    cal = quick("temperature")
    with pytest.raises(NotFittedError, match="not fitted"):
        cal(torch.zeros(1, C, 2, 2))
    with pytest.raises(NotFittedError, match="not fitted"):
        cal.state_dict()
    cal.fit(random_batches())
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        cal(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        cal(torch.full((1, C, 2, 2), float("nan")))


def test_registry_and_state_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        make_calibrator("platt")
    with pytest.raises(ValueError, match="'method'"):
        load_calibrator({"state": {}})
    state = quick("temperature").fit(random_batches()).state_dict()
    with pytest.raises(ValueError, match="not 'vector'"):
        make_calibrator("vector").load_state_dict(state)
    assert repr(make_calibrator("temperature", seed=3)).startswith("TemperatureScaling(head='softmax'")


def test_progress_wraps_the_stream_and_the_epochs():
    seen = []

    def progress(iterable, description):
        seen.append(description)
        return iterable

    quick("selective").fit(random_batches(), progress=progress)
    assert seen == ["calibration batches", "selective scaling: misprediction classifier"]


def test_reservoir_slots_match_sequential_algorithm_r():
    capacity, total = 5, 40
    g_vec, g_seq = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    vectorised = torch.full((capacity,), -1)
    seen = 0
    for count in (3, 7, 1, 12, 17):
        source, slot = reservoir_slots(seen, count, capacity, g_vec)
        vectorised[slot] = source + seen
        seen += count
    sequential = torch.full((capacity,), -1)
    seen = 0
    for count in (3, 7, 1, 12, 17):
        t = torch.arange(seen, seen + count)
        j = (torch.rand(count, generator=g_seq, dtype=torch.float64) * (t + 1)).long()
        for item, pick in zip(t.tolist(), j.tolist()):
            slot = item if item < capacity else pick
            if slot < capacity:
                sequential[slot] = item
        seen += count
    assert seen == total and torch.equal(vectorised, sequential)


def test_reservoir_is_roughly_uniform():
    hits = torch.zeros(100)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        kept = torch.full((10,), -1)
        for start in range(0, 100, 25):
            source, slot = reservoir_slots(start, 25, 10, g)
            kept[slot] = source + start
        hits[kept] += 1
    assert (hits / 400 - 0.1).abs().max() < 0.06  # each item is kept with probability 10/100


def test_pixel_sample_is_bounded_valid_and_seeded():
    batches = random_batches(num_batches=5, n=4, size=8)
    for _, labels in batches:
        labels[:, :2] = 255
    sample = PixelSample(pixels_per_image=10, max_pixels=1000, seed=0)
    for logits, labels in batches:
        sample.add(logits, labels)
    logits, labels, ids = sample.tensors()
    assert len(labels) == 5 * 4 * 10 and (labels != 255).all()
    assert torch.bincount(ids).max() == 10 and ids.max() == 19
    small = PixelSample(pixels_per_image=10, max_pixels=64, seed=0)
    again = PixelSample(pixels_per_image=10, max_pixels=64, seed=0)
    other = PixelSample(pixels_per_image=10, max_pixels=64, seed=1)
    for logits, labels in batches:
        for s in (small, again, other):
            s.add(logits, labels)
    assert small.size == 64 and small.seen == 200
    assert torch.equal(small.tensors()[0], again.tensors()[0])
    assert not torch.equal(small.tensors()[0], other.tensors()[0])
    pixel_logits = batches[0][0].movedim(1, -1)[batches[0][1] != 255]
    first = sample.tensors()[0][:10]
    assert all((pixel_logits == row).all(1).any() for row in first)  # rows are real pixels' logit vectors


def test_crop_sample_crops_and_pads():
    logits, labels = random_batches(num_batches=1, n=3, size=8)[0]
    crops = CropSample(max_images=2, crop_size=5, seed=0)
    crops.add(logits, labels)
    out = crops.tensors()
    assert out["logits"].shape == (2, C, 5, 5) and out["labels"].shape == (2, 5, 5) and "images" not in out
    small = CropSample(max_images=10, crop_size=6, seed=0)
    small.add(logits, labels)  # fixes the crop shape at 6 × 6
    small.add(logits[:, :, :4, :4], labels[:, :4, :4])  # smaller images are padded
    out = small.tensors()
    assert out["labels"].shape == (6, 6, 6) and (out["labels"][:3] != 255).all()
    assert (out["labels"][3:, 4:] == 255).all() and (out["labels"][3:, :, 4:] == 255).all()
    assert torch.equal(out["labels"][3:, :4, :4], labels[:, :4, :4]) and (out["logits"][3:, :, 4:] == 0).all()
    with pytest.raises(ValueError, match="images"):
        small.add(logits, labels, torch.zeros(3, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_fit_and_transform_on_cuda_and_reload_on_cpu(method):
    batches = [(z.cuda(), y.cuda()) for z, y in random_batches()]
    cal = quick(method).fit(batches)
    logits = random_batches(num_batches=1, seed=5)[0][0]
    out = cal(logits.cuda())
    assert out.is_cuda
    state = cal.state_dict()
    clone = load_calibrator(state)
    assert torch.allclose(clone(logits), out.cpu(), atol=1e-5)
