"""One Source protocol and one Batch type from the data to the calibrators: a folder of saved predictions
goes straight into every calibrator's fit, and tuples or mappings work the same."""
import pytest
import torch

from conftest import write_prediction_folder
from segcal.batch import Batch, unpack_item
from segcal.calibrators import TemperatureScaling
from segcal.conformal import PixelwiseCalibrator, evaluate_coverage
from segcal.pipeline.sources import CachedSource, Source


@pytest.fixture
def folder(tmp_path):
    return write_prediction_folder(tmp_path / "p")


def test_sources_follow_the_protocol(folder):
    cached = CachedSource(folder)
    for source in (folder, cached, cached.subset(5)):
        assert isinstance(source, Source)
        batches = list(source)
        assert all(isinstance(b, Batch) for b in batches) and sum(len(b) for b in batches) == len(source)
        assert source.display_image(batches[0], 0).shape == (3, 8, 8)
        assert source.describe()["num_images"] == len(source)


def test_batches_go_straight_into_every_calibrator(folder):
    ts = TemperatureScaling(max_iter=10).fit(folder)
    cp = PixelwiseCalibrator().fit(folder)
    as_tuples = [(b.logits, b.labels) for b in folder]
    assert torch.equal(ts.temperature_, TemperatureScaling(max_iter=10).fit(as_tuples).temperature_)
    assert torch.equal(cp.nc_curves(), PixelwiseCalibrator().fit(as_tuples).nc_curves())
    assert evaluate_coverage(cp, folder, min_test_labels=1).num_test_images == 10


def test_unpack_item_accepts_batches_tuples_and_mappings():
    logits, labels = torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long)
    for item in (Batch(logits, labels, ["a"]), (logits, labels), {"logits": logits, "labels": labels},
                 (logits.numpy(), labels.numpy())):
        got = unpack_item(item)
        assert torch.equal(got[0], logits) and torch.equal(got[1], labels) and got[2] is None
    with pytest.raises(ValueError, match="stream items must be a Batch"):
        unpack_item(logits)
