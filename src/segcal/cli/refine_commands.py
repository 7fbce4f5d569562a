"""`segcal prepare-hybrid`, `refine`, `refine-eval`, `refine-report`: parsers and thin implementations."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

out = Console()


def add_parsers(sub) -> None:
    """Register the refinement subcommands on the `segcal` subparsers ``sub``."""
    p = sub.add_parser("prepare-hybrid", help="split a coarse-mask dataset into P_BASELINE / P_EVAL / P_COARSE",
                       description="From a folder dataset (images/, masks/, labels.csv with columns name[,accurate]) "
                       "write the accurate subsets P_BASELINE (training) and P_EVAL (held out) and the coarse rest "
                       "P_COARSE, with a seeded, recorded selection. See docs/refinement.md.")
    p.add_argument("source", metavar="FOLDER", help="folder dataset: images/, masks/ and usually labels.csv")
    p.add_argument("--prefix", metavar="P", help="output prefix P (default: FOLDER itself, so FOLDER_BASELINE, ...)")
    p.add_argument("--labels", metavar="CSV", help="which images have accurate masks (default: FOLDER/labels.csv)")
    p.add_argument("--baseline", type=int, metavar="N", help="accurate images for P_BASELINE (default: half)")
    p.add_argument("--eval", type=int, metavar="N", help="accurate images for P_EVAL (default: the rest)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the BASELINE / EVAL draw and of --max-coarse (default: 0)")
    p.add_argument("--max-coarse", type=int, metavar="N", help="keep a seeded random N of the coarse images")
    p.add_argument("--remap", choices=["binary"], help="binary: label > 0 becomes 1")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="target class names, background first")
    p.add_argument("--simulate-boxes", action="store_true",
                   help="every mask is accurate: replace P_COARSE masks by filled bounding boxes")
    p.add_argument("--per-component", action="store_true", help="with --simulate-boxes: one box per component")
    p.add_argument("--overwrite", action="store_true", help="replace existing P_BASELINE, P_EVAL and P_COARSE folders")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=prepare_hybrid)

    p = sub.add_parser("refine", help="improve coarse masks with a model: write a hybrid dataset P_H<k>",
                       description="Run CHECKPOINT over the coarse images of --data (a prepared project P or a "
                       "folder dataset) and write a hybrid dataset whose masks combine coarse mask and prediction.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint whose predictions refine the masks")
    p.add_argument("--data", required=True, metavar="P", help="project prefix (uses P_COARSE) or a folder dataset")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the next free P_H<k>)")
    p.add_argument("--threshold", type=float, default=0.5, help="p_k >= this makes a pixel class k (default 0.5)")
    p.add_argument("--no-restrict", action="store_true", help="trust the model outside the coarse regions too")
    p.add_argument("--min-found", type=float, default=0.0,
                   help="a coarse component where the model keeps at most this fraction falls back (default 0)")
    p.add_argument("--fallback", choices=["coarse", "ignore"], default="coarse",
                   help="a component that falls back (see --min-found) gets its coarse mask or ignore_index "
                   "(default: coarse)")
    p.add_argument("--confidence", choices=["none", "probability", "conformal"], default="none",
                   help="mark pixels the model is unsure about as ignore_index")
    p.add_argument("--min-confidence", type=float, default=0.9, help="probability mode: keep p(label) >= this")
    p.add_argument("--alpha", type=float, default=0.1, help="conformal mode: keep singleton sets at this alpha")
    p.add_argument("--calibration", metavar="DIR", help="conformal mode: accurate folder (default: model's val split)")
    acc = p.add_mutually_exclusive_group()
    acc.add_argument("--accurate", metavar="DIR", help="add these accurate images (default: P_BASELINE if any)")
    acc.add_argument("--no-accurate", action="store_true", help="only the refined coarse images")
    p.add_argument("--remap", choices=["binary"],
                   help="binary: label > 0 becomes 1 in the coarse, accurate and calibration masks")
    p.add_argument("--preview", type=int, default=4, metavar="N", help="images in preview.png (0: none)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference batch (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=refine)

    p = sub.add_parser("refine-eval", help="score a model on P_EVAL and append it to the project's rounds table",
                       description="Evaluate CHECKPOINT on P_EVAL at full resolution (IoU, Dice, recall, precision) "
                       "and append a row to P_rounds.csv; redraws P_rounds.png.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint to score")
    p.add_argument("--data", required=True, metavar="P", help="project prefix")
    p.add_argument("--round", required=True, metavar="NAME", help="row name, e.g. BASELINE, H1, H2")
    p.add_argument("--eval-data", metavar="DIR", help="evaluate here instead of P_EVAL")
    p.add_argument("--table", metavar="CSV", help="rounds table (default: P_rounds.csv)")
    p.add_argument("--train-data", metavar="TEXT", help="what the model was trained on (default: its data.root)")
    p.add_argument("--replace", action="store_true", help="replace an existing row of the same name")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference batch (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=refine_eval)

    p = sub.add_parser("refine-report", help="print a project's rounds table and redraw its plot")
    p.add_argument("--data", required=True, metavar="P", help="project prefix")
    p.add_argument("--table", metavar="CSV", help="rounds table (default: P_rounds.csv)")
    p.set_defaults(func=refine_report)


def prepare_hybrid(args: argparse.Namespace) -> int:
    from segcal.refine.prepare import prepare_hybrid as run

    res = run(args.source, args.prefix, args.labels, args.baseline, args.eval, args.seed, args.remap, args.classes,
              args.simulate_boxes, args.per_component, args.max_coarse, overwrite=args.overwrite,
              progress=not args.no_progress)
    for role, path in (("BASELINE", res.baseline), ("EVAL", res.eval), ("COARSE", res.coarse)):
        out.print(f"{role:9s} {len(res.names[role]):6d} images  {path}", highlight=False)
    return 0


def refine(args: argparse.Namespace) -> int:
    from segcal.refine.rules import RefineRule, rule_text
    from segcal.refine.run import refine_dataset

    rule = RefineRule(args.threshold, not args.no_restrict, args.min_found, args.fallback, args.confidence,
                      args.min_confidence, args.alpha)
    accurate = None if args.no_accurate else (args.accurate or "auto")
    res = refine_dataset(args.checkpoint, args.data, args.out, rule, accurate, args.remap, args.calibration,
                         args.overwrite, args.device, args.batch_size, args.preview, not args.no_progress)
    p = res.provenance
    counts = p["counts"]
    out.print(f"wrote {res.out}: {p['num_refined']} refined + {p['num_accurate']} accurate images", highlight=False)
    out.print(f"rule: {rule_text(rule)}", highlight=False)
    out.print(f"coarse foreground {counts['coarse_foreground']} px -> {counts['foreground']} px; changed "
              f"{counts['changed']} px; uncertain (ignore) {counts['uncertain']} px; fallback "
              f"{counts['fallback_components']} of {counts['components']} coarse components", highlight=False)
    return 0


def rounds_table(rows: list[dict], title: str) -> Table:
    from segcal.refine.rounds import METRICS

    table = Table(title=title)
    for col in ("round", *METRICS, "images", "trained on"):
        table.add_column(col, justify="left" if col in ("round", "trained on") else "right")
    for r in rows:
        table.add_row(r["round"], *(f"{r[m]:.4f}" for m in METRICS), str(r["num_images"]), r["train_data"])
    return table


def refine_eval(args: argparse.Namespace) -> int:
    from segcal.refine.rounds import record_round

    row, rows, plot = record_round(args.checkpoint, args.data, args.round, args.eval_data, args.table,
                                   args.train_data, args.replace, args.device, args.batch_size,
                                   not args.no_progress)
    out.print(rounds_table(rows, f"Rounds on {row['eval_data']}"))
    out.print(f"plot: {plot}", highlight=False)
    return 0


def refine_report(args: argparse.Namespace) -> int:
    from segcal.refine.rounds import rounds_report

    rows, plot = rounds_report(args.data, args.table)
    out.print(rounds_table(rows, f"Rounds of {args.data}"))
    out.print(f"plot: {plot}", highlight=False)
    return 0
