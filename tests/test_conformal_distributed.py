"""Accumulators reduce across torch.distributed ranks (2 gloo processes) to the single-process result."""

import torch

from planted import block_map, planted_logits
from ranks import run_ranks
from segcal.conformal.calibrator import ConformalCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import CoverageAccumulator
from segcal.conformal.grouping import register_grouping


@register_grouping("test-dist-halves", num_groups=2)  # a learned-grouping stand-in that needs no sklearn
def halves(stats, num_groups, seed):
    h, w = stats.shape
    return (torch.arange(w) >= w // 2).long().expand(h, w)


def make_data():
    return planted_logits(24, block_map((4, 6)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=0)


def fitted_on_rank(rank, world):
    logits, labels = make_data()
    cal_l, cal_y = logits[:16][rank::world], labels[:16][rank::world]
    test_l, test_y = logits[16:][rank::world], labels[16:][rank::world]
    out = {}
    for mode in ("exact", "histogram"):
        cp = PixelwiseCalibrator(2, mode=mode).fit([(cal_l, cal_y)])  # all-reduces when initialised
        acc = CoverageAccumulator(cp, min_test_labels=1)
        acc.update(test_l, test_y)
        res = acc.all_reduce().compute()
        out[mode] = {"curves": cp.nc_curves(), "coverage": res.coverage, "images": res.num_test_images,
                     "n_cal": cp.n_cal_}
    grouped = ConformalCalibrator("test-dist-halves", 2).fit([(cal_l, cal_y)])
    out["grouped_parts"] = grouped.images_per_part_
    return out


def test_two_gloo_ranks_match_single_process(tmp_path):
    got = run_ranks(fitted_on_rank, tmp_path)[0]
    logits, labels = make_data()
    # the ranks saw images {0, 2, …} and {1, 3, …}: order does not matter for the statistics
    for mode in ("exact", "histogram"):
        cp = PixelwiseCalibrator(2, mode=mode).fit([(logits[:16], labels[:16])])
        acc = CoverageAccumulator(cp, min_test_labels=1)
        acc.update(logits[16:], labels[16:])
        res = acc.compute()
        assert got[mode]["n_cal"] == 16 and got[mode]["images"] == 8
        assert torch.equal(got[mode]["curves"], cp.nc_curves())
        assert torch.equal(got[mode]["coverage"].nan_to_num(-1), res.coverage.nan_to_num(-1))
    assert got["grouped_parts"] == {"cal": 8, "fit": 8}  # the split rule applies per rank, then merges
