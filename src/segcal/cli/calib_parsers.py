"""Argument parsers of `segcal evaluate | calibrate | predict | sweep | report`."""
from __future__ import annotations

import argparse

from segcal.cli import calib_commands
from segcal.methods import (
    CONFORMAL_METHODS,
    DEFAULT_N_CALS,
    MARGIN_LOSSES,
    METHODS,
    PROCEDURES,
    RISK_LOSSES,
    SCORES,
    STRUCTURES,
)

SPLITS = ["train", "val", "cal", "test"]


def _positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _memory_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--no-memory-check`` and ``--max-memory`` of a command that checks its memory estimate up front."""
    p.add_argument("--no-memory-check", action="store_true", help=f"run {what} even when its memory estimate "
                   "exceeds the budget")
    p.add_argument("--max-memory", type=_positive_float, metavar="GIB", help=f"memory budget of {what} in GiB: "
                   "refuse before the pass when the estimate exceeds it (default: 90%% of the available memory)")


def _source_args(p: argparse.ArgumentParser, split: str, checkpoint_help: str) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help=checkpoint_help)
    p.add_argument("--data", metavar="ROOT", help="dataset root when it moved since training (= data.root=ROOT)")
    p.add_argument("--split", default=split, choices=SPLITS, help=f"data split to use (default: {split})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g = p.add_argument_group("saved predictions (models from any framework)")
    g.add_argument("--predictions", metavar="DIR",
                   help="folder with one .npy/.npz/.pt per image (logits or probabilities [C, H, W])")
    g.add_argument("--masks", metavar="DIR", help="label masks matched by file name (default: DIR/masks)")
    g.add_argument("--kind", default="auto", choices=["auto", "logits", "probs"],
                   help="what the files hold (default: meta.json, else detected)")
    g.add_argument("--head", choices=["softmax", "sigmoid"], help="output head (default: meta.json or softmax)")
    g.add_argument("--classes", metavar="A,B,...", help="class names (default: meta.json)")
    g.add_argument("--ignore-index", type=int, help="label to ignore (default: meta.json or 255)")
    g.add_argument("--batch-size", type=int, default=8, help="images per batch when reading (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="data config overrides in dotted form, e.g. data.root=/data/ccp data.batch_size=16")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="calibration (ECE family, maps, figures) and, if calibrated, conformal coverage",
        description="Measure a model's calibration on a split: ECE (equal-width bins), adaptive ECE, MCE, "
        "classwise ECE, Brier, NLL, per-pixel ECE map, per-image ECE, boundary vs interior ECE, segmentation "
        "quality; before/after for a recalibrated checkpoint; coverage error, set sizes and maps for a "
        "conformally calibrated one. Writes evaluation.json and figures.")
    _source_args(p, "test", "model checkpoint (plain or calibrated); with --predictions: an optional calibration file")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/eval/<checkpoint>-<split>)")
    p.add_argument("--bins", type=int, default=15, help="equal-width confidence bins (default: 15)")
    p.add_argument("--boundary-width", type=int, default=3, help="boundary = within k pixels of a label change")
    p.add_argument("--alpha", type=float, default=0.1,
                   help="miscoverage for the set-size map and overlays (default: 0.1)")
    p.add_argument("--alphas", metavar="A,B,...", help="miscoverage grid for coverage error "
                   "(default: 1 − α ∈ {0.05, 0.10, ..., 0.95})")
    p.add_argument("--segmentation-only", action="store_true",
                   help="only segmentation quality (Dice, IoU, recall, precision, accuracy): no calibration metrics, "
                   "coverage or figures")
    _memory_args(p, "an evaluation")
    p.set_defaults(func=calib_commands.evaluate)

    p = sub.add_parser(
        "calibrate", help="fit a recalibrator, a conformal calibrator or a mask-level risk controller",
        description="Fit a calibration method on the calibration split and write a calibrated checkpoint "
        f"(methods: {', '.join(METHODS)}). Recalibration methods change the probabilities; conformal methods "
        "(pixel, image, kandinsky-*, local) store what per-pixel prediction sets need; risk methods give mask-level "
        "guarantees: `risk` picks the probability threshold that controls the FNR, FDR or miscoverage, `margin` "
        "the dilation (and erosion) margins of the predicted mask. Methods fitted on a recalibrated checkpoint use "
        "the recalibrated probabilities.")
    _source_args(p, "cal", "model checkpoint; with --predictions: optional calibrated file to extend")
    p.add_argument("--method", choices=METHODS, metavar="METHOD", help=", ".join(METHODS))
    p.add_argument("--list-params", action="store_true",
                   help="list the --param names and defaults of --method (or of every method) and exit")
    p.add_argument("--n-cal", type=int, metavar="K", help="use only the first K calibration images")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method hyper-parameter, repeatable, e.g. --param num_groups=6 --param split=0.5 "
                   "(conformal) or --param epochs=20 (selective/lts); --list-params shows them all")
    p.add_argument("--score", choices=SCORES, help="conformity score of a conformal method: lac (1 − p, default), "
                   "aps (mass of the more likely classes) or raps (APS with a rank penalty)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default: 0)")
    p.add_argument("--out", metavar="FILE", help="output file (default: <checkpoint>.<method>.ckpt next to it)")
    _memory_args(p, "a conformal method")
    g = p.add_argument_group("risk control (--method risk | margin)")
    g.add_argument("--loss", help=f"risk: {' | '.join(RISK_LOSSES)} (default: fnr); margin: "
                   f"{' | '.join(MARGIN_LOSSES)} (default: cover = the outer mask holds the whole truth)")
    g.add_argument("--alpha", type=float, help="risk level α (default: 0.1)")
    g.add_argument("--procedure", choices=PROCEDURES, help="crc (E[loss] ≤ α; default for monotone losses), rcps or "
                   "ltt (P(risk ≤ α) ≥ 1 − δ; ltt is the default for the FDR)")
    g.add_argument("--delta", type=float, help="failure probability δ of rcps / ltt (default: 0.1)")
    g.add_argument("--target-class", metavar="NAME",
                   help="class the FNR / FDR / margin is about (a name or index; default: class 1 of a binary model)")
    g.add_argument("--structure", choices=STRUCTURES, help="margin: dilate by 3×3 square (default), cross or a disk")
    g.add_argument("--inner", action="store_true", help="margin: also an eroded inner mask inside the truth")
    p.set_defaults(func=calib_commands.calibrate)

    p = sub.add_parser(
        "predict", help="save per-image predictions, and prediction sets with --alpha",
        description="Write <name>.npz (logits, and with --alpha the prediction sets and set sizes), masks/ and "
        "meta.json; with --alpha also sets/<name>.png (class colour = single class, white = ambiguous, "
        "black = empty; key: sets/legend.png); with --original-size also original/<name>.png (predicted labels) "
        "and original/sets/<name>.png at each image's original size. The folder works with "
        "`segcal evaluate --predictions`.")
    _source_args(p, "test", "model checkpoint (plain, recalibrated or conformally calibrated)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--alpha", type=float, help="miscoverage of the prediction sets (needs a conformal checkpoint); "
                   "with a risk controller also its risk level (default: the α it was calibrated at)")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in DIR")
    p.add_argument("--original-size", action="store_true",
                   help="also write label maps (and set images) at each image's original size, undoing data.resize")
    p.set_defaults(func=calib_commands.predict)

    p = sub.add_parser(
        "sweep", help="conformal methods vs number of calibration images (CE ± std, set size)",
        description="Calibrate every conformal method on random subsets of the calibration split for each n_cal "
        "(R repeats; the same subsets for every method) and evaluate on the test split.")
    _source_args(p, "test", "model checkpoint (a recalibrator in it is applied first)")
    p.add_argument("--cal-split", default="cal", choices=SPLITS, help="calibration pool split (default: cal)")
    p.add_argument("--cal-predictions", metavar="DIR", help="saved predictions of the calibration pool")
    p.add_argument("--methods", default=",".join(CONFORMAL_METHODS), metavar="M,M,...",
                   help=f"default: {','.join(CONFORMAL_METHODS)}")
    p.add_argument("--n-cals", metavar="N,N,...",
                   help=f"calibration set sizes (default: {','.join(map(str, DEFAULT_N_CALS))} up to the pool size, "
                   "plus the whole pool; given sizes above the pool are an error)")
    p.add_argument("--repeats", type=int, default=5, help="random subsets per n_cal (default: 5)")
    p.add_argument("--num-groups", help="groups for kandinsky-kmeans (an int or auto)")
    p.add_argument("--score", choices=SCORES, default="lac", help="conformity score of every method (default: lac)")
    p.add_argument("--marginal", action="store_true", help="pool the classes (one threshold per group for every "
                   "class, coverage over all pixels) instead of class-conditional thresholds")
    p.add_argument("--seed", type=int, default=0, help="seed of the random calibration subsets (default: 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/sweep); a sweep with the same "
                   "settings resumes from its records.jsonl")
    p.add_argument("--restart", action="store_true", help="discard the records of an earlier run in --out")
    p.set_defaults(func=calib_commands.sweep)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run directory",
                       description="One HTML file with figures embedded: configuration, training, metrics, "
                       "calibration before/after, conformal maps, sweep and prediction-set examples.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `segcal train` or `segcal demo`")
    p.add_argument("--out", metavar="FILE", help="default: RUN_DIR/report.html")
    p.set_defaults(func=calib_commands.report)
