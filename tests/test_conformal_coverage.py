"""Coverage guarantee on synthetic exchangeable data over random calibration/test splits.

For continuous scores, class-conditional conformal coverage is at least 1 − α and at most
1 − α + 1/(n + 1) (n = scores in the pixel's group). Given a fixed pool, random splits keep
calibration and test images exchangeable, so split-averaged coverage must respect both bounds
up to Monte-Carlo error.
"""
import torch

from planted import block_map, planted_logits
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ImagewiseCalibrator, KandinskyCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import CoverageAccumulator
from segcal.conformal.scores import class_scores, scores_at_labels

ALPHA = 0.1
TOL = 0.006  # ≈ 5 Monte-Carlo standard errors of a 200-split mean


def split_coverage(planted, margins, noise, methods, splits, n_cal=25, pool=50, seed=0):
    """Per method: split-averaged class coverage [C] and its upper bound 1 − α + E[1/(n+1)] [C]."""
    logits, labels = planted_logits(pool, planted, margins, noise, seed=seed)
    scores = class_scores(logits)
    bank = ScoreBank(2, tuple(planted.shape), *scores_at_labels(scores, labels))
    gen = torch.Generator().manual_seed(seed)
    cov = {m: [] for m in methods}
    bound = {m: [] for m in methods}
    for _ in range(splits):
        perm = torch.randperm(pool, generator=gen)
        cal, test = bank.subset(perm[:n_cal]), perm[n_cal:]
        for name, make in methods.items():
            cp = make().fit_bank(cal)
            acc = CoverageAccumulator(cp, [ALPHA], min_test_labels=1)
            acc.update_scores(scores[test], labels[test])
            cov[name].append(acc.compute().class_coverage[0])
            n_pixel = cp.scores_.group_counts().gather(1, cp.group_map_.flatten(1)).double()  # [C, P]
            m = acc.counts.flatten(1).double()
            bound[name].append(1 - ALPHA + (m / (n_pixel + 1)).sum(1) / m.sum(1))
    return ({m: torch.stack(v).mean(0) for m, v in cov.items()},
            {m: torch.stack(v).mean(0) for m, v in bound.items()})


def test_coverage_guarantee_pixelwise_imagewise_kandinsky_at_n25():
    methods = {"pixelwise": lambda: PixelwiseCalibrator(2),
               "imagewise": lambda: ImagewiseCalibrator(2),
               "kandinsky": lambda: KandinskyCalibrator("kmeans", 2)}  # groups/thresholds on disjoint halves
    cov, bound = split_coverage(block_map((10, 10)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], methods, splits=200)
    for name in methods:
        assert bool((cov[name] >= 1 - ALPHA - TOL).all()), (name, cov[name])
        assert bool((cov[name] <= bound[name] + TOL).all()), (name, cov[name], bound[name])
    assert bool((bound["pixelwise"] > 0.95).all())  # ~12 scores per pixel: a loose upper bound
    assert bool((bound["imagewise"] < 0.902).all())


def test_disjoint_split_keeps_coverage_that_reusing_scores_loses():
    # no spatial structure: k-means groups pixels by calibration noise, and pooling the same
    # scores that formed the groups gives thresholds that are too low
    methods = {"split": lambda: KandinskyCalibrator("kmeans", 2),
               "same images": lambda: KandinskyCalibrator("kmeans", 2, split=None)}
    cov, _ = split_coverage(torch.zeros(10, 10, dtype=torch.long), [2.0], [1.5], methods, splits=30, seed=1)
    assert bool((cov["split"] >= 1 - ALPHA - 0.01).all()), cov
    assert bool((cov["same images"] < 1 - ALPHA - 0.01).all()), cov
