"""`segcal` command line: argument parsing, config loading and printing — nothing scientific."""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from segcal import __version__
from segcal.cli import commands

console = Console(stderr=True)

EPILOG = "Run `segcal <command> --help` for the options of a command."


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in dotted form, e.g. train.epochs=5 data.root=/data/ccp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segcal", description="Train segmentation models, measure and fix their calibration, and give "
        "per-pixel conformal prediction sets.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"segcal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="end-to-end demo on built-in synthetic data (or --data FOLDER)",
                       description="Train a small UNet, evaluate it and write a run directory with figures.")
    p.add_argument("--quick", action="store_true", help="a < 2 minute smoke version")
    p.add_argument("--data", metavar="FOLDER", help="a folder dataset (images/ + masks/) instead of synthetic data")
    p.add_argument("--out", metavar="DIR", default="runs", help="parent folder of the run directory (default: runs)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_overrides(p)
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("train", help="train a model from a YAML experiment config",
                       description="Train a segmentation model. CONFIG is a YAML file or a built-in name "
                       "(see `segcal configs`).")
    p.add_argument("config", metavar="CONFIG", help="YAML experiment config file or built-in config name")
    p.add_argument("--run-dir", metavar="DIR", help="write the run here (default: <output_dir>/<name>/<time>)")
    p.add_argument("--resume", metavar="CKPT", help="resume training from a checkpoint (its run directory's "
                   "logs/metrics.csv is continued, not restarted)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (= train.progress=false)")
    _add_overrides(p)
    p.set_defaults(func=commands.train)

    p = sub.add_parser("configs", help="list the built-in experiment configs")
    p.set_defaults(func=commands.list_configs)

    p = sub.add_parser("config", help="print a resolved experiment config",
                       description="Load CONFIG (file or built-in name), apply overrides, validate, print YAML.")
    p.add_argument("config", metavar="CONFIG", nargs="?", help="default: the built-in defaults")
    _add_overrides(p)
    p.set_defaults(func=commands.show_config)

    p = sub.add_parser("export-synthetic", help="write the built-in synthetic dataset as a folder dataset",
                       description="Write images/, masks/ and classes.json for the synthetic dataset.")
    p.add_argument("out", metavar="DIR", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--num-images", type=int, default=100, help="number of images (default: 100)")
    p.add_argument("--num-classes", type=int, default=3,
                   help="number of classes, background included, >= 2 (default: 3)")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="image height and width in pixels, each >= 16 (default: 64 64)")
    p.add_argument("--seed", type=int, default=0, help="scene seed: image i is drawn from (seed, i) (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=commands.export_synthetic)

    from segcal.cli import calib_parsers, refine_commands
    from segcal.cli.examples import add_examples

    calib_parsers.add_parsers(sub)  # evaluate, calibrate, predict, sweep, report
    refine_commands.add_parsers(sub)  # prepare-hybrid, refine, refine-eval, refine-report
    add_examples(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that temporary files and locks are cleaned up on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one console line each (no source line, no file path)."""
    console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def describe_error(exc: BaseException) -> str:
    """One line naming the file and the cause: ``OSError`` shows its path and ``strerror``."""
    if isinstance(exc, OSError) and exc.strerror and exc.args and str(exc).startswith("[Errno"):
        return f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`train CFG --run-dir D a.b=1`): collect KEY=VALUE leftovers.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    func: Callable[[argparse.Namespace], int | None] = args.func
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    show_warning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(func(args) or 0)
    except (ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(describe_error(exc))}", highlight=False, soft_wrap=True)
        return 2
    except Terminated:
        console.print("[yellow]terminated[/]")
        return 143
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = show_warning


if __name__ == "__main__":
    sys.exit(main())
