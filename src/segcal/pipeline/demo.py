"""`segcal demo`: the main job end to end on built-in synthetic data (or a folder dataset).

Stages, all into one run directory: train a small UNet far past its best epoch on few
images (the last checkpoint is over-fitted and over-confident; temperature scaling fits T ≈ 1.5)
→ measure calibration on the test split → fit temperature and selective scaling, Dirichlet calibration
and isotonic regression on the calibration split and measure again → calibrate the five conformal methods
(and imagewise with the APS score) and evaluate their coverage → mask-level guarantees for class 1 (FNR
control, and dilation / erosion margins) → a low-data sweep → ``report.html``.
The model runs once per split and later stages reuse the cached logits; the uncalibrated model is measured
once (``eval/last-test``), and each calibrated evaluation measures only what its calibrator changes.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from segcal.calibrated import save_bundle
from segcal.configio import load_yaml
from segcal.io.jsonio import write_json
from segcal.pipeline.calibrate import calibrate
from segcal.pipeline.config import ExperimentConfig, experiment_from_dict
from segcal.pipeline.configs import resolve_config
from segcal.pipeline.evaluate import evaluate
from segcal.pipeline.inference import load_model
from segcal.pipeline.results import REPORT_LEVEL, EvaluationResult, SegmentationQuality
from segcal.pipeline.sources import CachedSource, ModelSource, datamodule_for
from segcal.pipeline.sweep import run_sweep
from segcal.pipeline.train import TrainResult, new_run_dir, train
from segcal.report.build import build_report

QUICK_OVERRIDES = [
    "data.synthetic.num_images=96", "data.splits={train: 32, val: 16, cal: 24, test: 24}",
    "train.epochs=2", "train.checkpoint_every=1", "train.val_every=1", "train.vis_samples=3",
]
# a folder dataset has many more training images than the 32 built-in ones: fewer epochs keep it in minutes
FOLDER_OVERRIDES = ["train.epochs=30", "train.val_every=1", "train.checkpoint_every=10", "data.batch_size=16"]
RECALIBRATION = ("temperature", "selective", "dirichlet", "isotonic")
CONFORMAL = ("pixel", "image", "kandinsky-kmeans", "kandinsky-annuli", "local")
SCORE_VARIANTS = {"image-aps": ("image", {"score": "aps"})}
"""Conformal methods with another conformity score: evaluation name → (method, parameters)."""
RISK = {"risk": {"loss": "fnr", "target_class": 1, "alpha": 0.1},
        "margin": {"structure": "disk", "inner": True, "target_class": 1, "alpha": 0.1}}
"""Risk controllers the demo fits (class 1 is the first non-background class of the synthetic scenes)."""
SWEEP_N_CALS = (10, 25, 50)
QUICK_SELECTIVE = {"epochs": 5}


@dataclass
class DemoResult:
    run_dir: Path
    train: TrainResult
    evaluations: dict[str, EvaluationResult]
    sweep: dict
    report: Path
    summary: list[str]
    seconds: float
    test_metrics: SegmentationQuality | None = None


def demo_config(out: str = "runs", quick: bool = False, data: str | None = None,
                overrides: list[str] | None = None, progress: bool = True) -> ExperimentConfig:
    """The demo experiment: ``demo.yaml`` + quick/data adjustments + user overrides."""
    extra = [f"output_dir={out}", f"train.progress={str(progress).lower()}"]
    if quick:
        extra += QUICK_OVERRIDES
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data: folder not found: {root}")
        extra += ["data.kind=folder", f"data.root={root}", "data.splits={train: 0.5, val: 0.1, cal: 0.2, test: 0.2}",
                  *FOLDER_OVERRIDES]
    return experiment_from_dict(load_yaml(resolve_config("demo")), extra + list(overrides or []))


def run_demo(out: str = "runs", quick: bool = False, data: str | None = None, overrides: list[str] | None = None,
             progress: bool = True, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run every stage; writes ``summary.json`` and ``report.html`` into the run directory."""
    start = time.time()
    def say(message: str) -> None:
        if log is not None:
            log(f"[{time.time() - start:4.0f} s] {message}")

    cfg = demo_config(out, quick, data, overrides, progress)
    run_dir = new_run_dir(cfg)
    say(f"1/7 training {cfg.model.arch} for {cfg.train.epochs} epochs → {run_dir}")
    trained = train(cfg, run_dir)
    ckpt = trained.last_checkpoint
    model = load_model(ckpt, "cpu")
    dm = datamodule_for(ckpt, model)
    test = CachedSource(ModelSource(model, dm, "test", str(ckpt)), progress, "predict test split")
    cal = CachedSource(ModelSource(model, dm, "cal", str(ckpt)), progress, "predict cal split")

    def run_eval(name: str, bundle=None) -> EvaluationResult:
        return evaluate(test, bundle, run_dir / "eval" / name, name=name,
                        baseline=None if bundle is None else "last-test", progress=progress).result

    say("2/7 measuring calibration of the last checkpoint")
    evaluations = {"last-test": run_eval("last-test")}
    say(f"3/7 recalibrating: {', '.join(RECALIBRATION)}")
    for method in RECALIBRATION:
        params = QUICK_SELECTIVE if quick and method == "selective" else {}
        bundle, _ = calibrate(cal, method, params=params, seed=cfg.seed, progress=progress)
        save_bundle(bundle, ckpt.with_name(f"last.{method}.ckpt"), ckpt)
        evaluations[f"last.{method}-test"] = run_eval(f"last.{method}-test", bundle)
    say(f"4/7 conformal calibration: {', '.join([*CONFORMAL, *SCORE_VARIANTS])}")
    conformal = {**{m: (m, {}) for m in CONFORMAL}, **SCORE_VARIANTS}
    for name, (method, params) in conformal.items():
        bundle, _ = calibrate(cal, method, params=params, seed=cfg.seed, progress=progress)
        save_bundle(bundle, ckpt.with_name(f"last.{name}.ckpt"), ckpt)
        evaluations[f"last.{name}-test"] = run_eval(f"last.{name}-test", bundle)
    say(f"5/7 mask-level guarantees: {', '.join(RISK)}")
    for method, params in RISK.items():
        bundle, _ = calibrate(cal, method, params=params, seed=cfg.seed, progress=progress)
        save_bundle(bundle, ckpt.with_name(f"last.{method}.ckpt"), ckpt)
        evaluations[f"last.{method}-test"] = run_eval(f"last.{method}-test", bundle)
    n_cals = sorted({n for n in SWEEP_N_CALS if n < len(cal)} | {len(cal)})
    say(f"6/7 low-data sweep over n_cal = {n_cals}")
    sweep = run_sweep(cal, test, run_dir / "sweep", methods=CONFORMAL, n_cals=n_cals, repeats=2 if quick else 5,
                      seed=cfg.seed, progress=progress)
    summary = summary_lines(cfg, trained, evaluations, run_dir)
    seconds = time.time() - start
    write_json(run_dir / "summary.json", {"summary": summary, "seconds": seconds,
                                          "val_best": asdict(trained.val_metrics)})
    say("7/7 writing the HTML report")
    report = build_report(run_dir)
    return DemoResult(run_dir, trained, evaluations, sweep, report, summary, time.time() - start,
                      evaluations["last-test"].segmentation)


def summary_lines(cfg: ExperimentConfig, trained: TrainResult, evaluations: dict[str, EvaluationResult],
                  run_dir: Path) -> list[str]:
    """The summary: model, Dice, ECE before/after, NLL before/after, CE per conformal method, mask guarantees."""
    base = evaluations["last-test"]
    quality = base.segmentation
    ece = {"uncalibrated": base.calibration["uncalibrated"]}
    ece.update({m: evaluations[f"last.{m}-test"].calibration[m] for m in RECALIBRATION})
    conf = {m: evaluations[f"last.{m}-test"].conformal for m in (*CONFORMAL, *SCORE_VARIANTS)}
    ce = ", ".join(f"{m} {_fmt(c.mean_ce)} (set size {_fmt(c.at(REPORT_LEVEL).mean_set_size, 2)})"
                   for m, c in conf.items())
    val_dice = trained.val_metrics.mean("dice")
    return [
        f"model: {trained.last_checkpoint.name} after {cfg.train.epochs} epochs "
        f"(best val Dice {_fmt(val_dice, 3)}), run {run_dir.name}",
        f"test Dice {_fmt(quality.mean('dice'), 3)}, IoU {_fmt(quality.mean('iou'), 3)} ({quality.mean_label})",
        "ECE " + " → ".join(f"{k}{_fitted(evaluations, k)} {_fmt(v.ece)}" for k, v in ece.items()),
        "NLL " + " → ".join(f"{k} {_fmt(v.nll)}" for k, v in ece.items()),
        f"conformal CE at n_cal = {next(iter(conf.values())).n_cal} (set size at 1 − α = {REPORT_LEVEL}): {ce}",
        *(_risk_line(evaluations[f"last.{m}-test"].risk) for m in RISK),
    ]


def _risk_line(r) -> str:
    """``FNR control (CRC, α = 0.1): threshold 0.43, test FNR 0.081, precision 0.91`` and the margin analogue."""
    chosen = ", ".join(f"{k.replace('_', ' ')} {'trivial' if v is None or v == float('inf') else f'{v:.3g}'}"
                       for k, v in r.parameters.items())
    head = f"{r.method} {r.loss} of class {r.target_class} ({r.procedure.upper()}, α = {r.alpha:g}): {chosen}, "
    if r.method == "margin":
        inner = r.per_image.get("inner_loss")
        return head + (f"truth ⊆ outer on {1 - r.test_risk:.3f} of test images"
                       + ("" if inner is None else f", inner ⊆ truth on {1 - inner.mean:.3f}")
                       + f", band area {_fmt(r.per_image['band_area'].mean, 3)}")
    return head + f"test {r.loss.upper()} {r.test_risk:.3f}, precision {_fmt(1 - r.per_image['fdr'].mean, 3)}"


def _fitted(evaluations: dict[str, EvaluationResult], method: str) -> str:
    """`` (T = 1.51)`` / `` (T2 = 2.05)``: the fitted temperature, so "no change" is explained."""
    result = evaluations.get(f"last.{method}-test")
    info = result.recalibration.info if result is not None and result.recalibration is not None else {}
    if "temperature" in info and len(info["temperature"]) == 1:
        return f" (T = {info['temperature'][0]:.3g})"
    return f" (T2 = {info['t2']:.3g})" if "t2" in info else ""


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"
