"""Recalibration on CCP: uncalibrated vs temperature, vector, selective and LTS scaling (issue 5 table).

Trains (or reuses) the built-in ``ccp_person`` and ``ccp_parts`` models, takes their LAST
checkpoint (past the best epoch, deliberately over-fitted), fits every method on the whole
``cal`` split (500 images) and evaluates on ``test`` (200 images) — the same steps as::

    segcal train ccp_person data.root=DATA train.epochs=40 --run-dir RUNS/ccp_person
    segcal calibrate RUNS/ccp_person/checkpoints/last.ckpt --method selective
    segcal evaluate RUNS/ccp_person/checkpoints/last.selective.ckpt

    python benchmarks/ccp_calibration.py --data ../shared/data/ccp --runs /work/runs

Writes ``benchmarks/results/ccp_calibration.json`` and prints markdown tables (top-label ECE,
adaptive ECE, NLL, Brier, classwise ECE and ECE per class).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from segcal.methods import RECALIBRATION_METHODS
from segcal.pipeline.calibrate import calibrate
from segcal.pipeline.config import load_experiment
from segcal.pipeline.configs import resolve_config
from segcal.pipeline.evaluate import evaluate
from segcal.pipeline.sources import model_source
from segcal.pipeline.train import train

RESULTS = Path(__file__).parent / "results" / "ccp_calibration.json"
EPOCHS = {"ccp_person": 40, "ccp_parts": 40}
COLUMNS = (("ece", "ECE"), ("adaptive_ece", "adaptive ECE"), ("smooth_ece", "smooth ECE"), ("nll", "NLL"),
           ("brier", "Brier"), ("mean_classwise_ece", "classwise ECE"))


def checkpoint(config: str, data: str, runs: Path) -> Path:
    run_dir = runs / config
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        cfg = load_experiment(resolve_config(config), [f"data.root={data}", f"train.epochs={EPOCHS[config]}"])
        train(cfg, run_dir)
    return last


def rows_for(config: str, data: str, runs: Path, methods: list[str]) -> list[dict]:
    ckpt = checkpoint(config, data, runs)
    overrides = [f"data.root={data}"]
    test = model_source(ckpt, "test", overrides)
    cal = model_source(ckpt, "cal", overrides)
    rows = []
    for method in ["uncalibrated", *methods]:
        start = time.time()
        bundle, record = (None, None) if method == "uncalibrated" else calibrate(cal, method, progress=False)
        fit = time.time() - start
        ev = evaluate(test, bundle, progress=False)
        summary = ev.result.calibration[method]
        res = {**summary.details, "smooth_ece": summary.smooth_ece}
        rows.append({"config": config, "method": method, **{k: res[k] for k, _ in COLUMNS},
                     "class_ece": dict(zip(ev.result.classes, summary.classwise_ece)),
                     "fit_seconds": fit, "info": None if record is None else _scalars(record["info"])})
        print(f"{config:10s} {method:12s} ECE {res['ece']:.4f} NLL {res['nll']:.4f} ({fit:.0f} s)", flush=True)
    return rows


def _scalars(info: dict) -> dict:
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str)) or k == "temperature"}


def markdown(rows: list[dict]) -> str:
    lines = []
    for config in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == config]
        classes = list(rs[0]["class_ece"])
        head = ["method", *(t for _, t in COLUMNS), *(f"ECE {c}" for c in classes)]
        lines += [f"**{config}** (test split, {len(classes)} classes)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for r in rs:
            cells = [r["method"], *(f"{r[k]:.4f}" for k, _ in COLUMNS),
                     *("–" if r["class_ece"][c] is None else f"{r['class_ece'][c]:.4f}" for c in classes)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ccp")
    parser.add_argument("--runs", default="runs", type=Path)
    parser.add_argument("--configs", default="ccp_person,ccp_parts")
    parser.add_argument("--methods", default=",".join(RECALIBRATION_METHODS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = args.configs.split(",")
    kept = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []  # other configs' rows stay
    rows = [r for r in kept if r["config"] not in configs]
    for config in configs:
        rows += rows_for(config, args.data, args.runs, args.methods.split(","))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
