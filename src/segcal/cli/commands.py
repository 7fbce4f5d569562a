"""Implementations of the `segcal` subcommands (thin: parse → pipeline → print)."""
from __future__ import annotations

import argparse

import yaml
from rich.console import Console
from rich.table import Table

from segcal.configio import to_dict

out = Console()


def number(value: float | None, digits: int = 4) -> str:
    """A table cell: the value rounded, or an en dash when undefined."""
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_table(quality, title: str) -> Table:
    """Rich table of a :class:`~segcal.pipeline.results.SegmentationQuality` (rows: classes, columns: metrics)."""
    table = Table(title=title)
    table.add_column("class")
    names = list(quality.per_class)
    for name in names:
        table.add_column(name, justify="right")
    for i, cname in enumerate(quality.classes):
        table.add_row(cname, *(number(quality.per_class[m][i]) for m in names))
    table.add_row(f"[bold]{quality.mean_label}[/]", *(number(quality.mean(m)) for m in names))
    return table


RISK_ROWS = (("loss", "per-image loss"), ("fnr", "FNR"), ("fdr", "FDR (1 − precision)"),
             ("mask_area", "mask area"), ("pred_area", "predicted mask area"), ("outer_area", "outer mask area"),
             ("inner_area", "inner mask area"), ("band_area", "band area"), ("inner_loss", "inner ⊄ truth"),
             ("set_size", "set size"))
"""Per-image quantities of a :class:`~segcal.pipeline.results.RiskSummary`, in table order (areas: image share)."""


def risk_table(risk, classes: list[str]) -> Table:
    """The chosen λ, the realized risk and the spread over test images of a risk evaluation."""
    target = "" if risk.target_class is None else f" of {classes[risk.target_class]}"
    delta = "" if risk.delta is None else f", δ = {risk.delta:g}"
    table = Table(title=f"Risk control: {risk.method} {risk.loss}{target}, {risk.procedure.upper()} at "
                        f"α = {risk.alpha:g}{delta}, {risk.n_cal} calibration / {risk.num_test_images} test images")
    for column in ("", "mean", "std", "10%", "median", "90%"):
        table.add_column(column, justify="left" if not column else "right")
    for name, value in risk.parameters.items():
        shown = "trivial (infeasible)" if value is None or value == float("inf") else f"{value:.4g}"
        table.add_row(name.replace("_", " "), shown, "", "", "", "")
    table.add_row("calibration risk", number(risk.calibration_risk), "", "", "", "")
    table.add_row("test risk", number(risk.test_risk), "", "", "", "")
    table.add_row("images with loss > α", number(risk.images_over_alpha, 3), "", "", "", "")
    for key, title in RISK_ROWS:
        spread = risk.per_image.get(key)
        if spread is not None and not (key == "loss" and risk.loss in risk.per_image):  # shown by name
            table.add_row(title, *(number(getattr(spread, f)) for f in ("mean", "std", "p10", "p50", "p90")))
    return table


def demo(args: argparse.Namespace) -> int:
    from segcal.pipeline.demo import run_demo

    log = (lambda message: out.print(f"[bold green]segcal demo[/] {message}", highlight=False))
    result = run_demo(args.out, args.quick, args.data, args.overrides, progress=not args.no_progress, log=log)
    out.print(metrics_table(result.test_metrics, "Test split (last checkpoint)"))
    out.rule("segcal demo")
    for line in result.summary:
        out.print(line, highlight=False)
    out.print(f"report: {result.report}  ({result.seconds:.0f} s)", highlight=False)
    return 0


def train(args: argparse.Namespace) -> int:
    from segcal.pipeline.config import load_experiment
    from segcal.pipeline.configs import resolve_config
    from segcal.pipeline.train import train as run_train

    overrides = list(args.overrides) + ([f"train.resume={args.resume}"] if args.resume else [])
    overrides += ["train.progress=false"] if args.no_progress else []
    cfg = load_experiment(resolve_config(args.config), overrides)
    result = run_train(cfg, args.run_dir)
    out.print(metrics_table(result.val_metrics, f"Validation ({result.best_checkpoint.name})"))
    out.print(f"run directory: {result.run_dir}  ({result.seconds:.0f} s)", highlight=False)
    return 0


def list_configs(args: argparse.Namespace) -> int:
    from segcal.pipeline.configs import builtin_configs

    table = Table(title="Built-in configs (segcal train NAME key=value ...)")
    table.add_column("name")
    table.add_column("description")
    for name, path in sorted(builtin_configs().items()):
        first = next((ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        table.add_row(name, first)
    out.print(table)
    return 0


def show_config(args: argparse.Namespace) -> int:
    from segcal.pipeline.config import load_experiment
    from segcal.pipeline.configs import resolve_config

    cfg = load_experiment(resolve_config(args.config) if args.config else None, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def export_synthetic(args: argparse.Namespace) -> int:
    from segcal.data.config import SyntheticConfig
    from segcal.data.folder import write_folder_dataset
    from segcal.data.synthetic import SyntheticDataset

    cfg = SyntheticConfig(num_images=args.num_images, num_classes=args.num_classes, height=args.size[0],
                          width=args.size[1], seed=args.seed)
    path = write_folder_dataset(SyntheticDataset(cfg), args.out, overwrite=args.overwrite)
    out.print(f"wrote {args.num_images} images to {path}", highlight=False)
    return 0



