"""Examples shown at the end of ``segcal <command> --help`` and in docs/cli.md."""
from __future__ import annotations

import argparse

EXAMPLES: dict[str, list[str]] = {
    "demo": ["segcal demo                      # the end-to-end demo on built-in data (~1 min)",
             "segcal demo --quick              # a smoke version",
             "segcal demo --data my_dataset    # the same on a folder dataset (images/ + masks/)"],
    "train": ["segcal train ccp_person data.root=../shared/data/ccp train.epochs=40",
              "segcal train my.yaml --run-dir runs/exp1 model.channels=[16,32,64]",
              "segcal train runs/exp1/config.yaml --resume runs/exp1/checkpoints/last.ckpt"],
    "evaluate": ["segcal evaluate runs/exp1/checkpoints/last.ckpt",
                 "segcal evaluate runs/exp1/checkpoints/last.temperature.ckpt --split test",
                 "segcal evaluate last.ckpt --segmentation-only",
                 "segcal evaluate --predictions preds/test preds/test/calibration/pixel.pt"],
    "calibrate": ["segcal calibrate last.ckpt --method temperature",
                  "segcal calibrate last.temperature.ckpt --method kandinsky-kmeans --param num_groups=6",
                  "segcal calibrate --predictions preds/cal --method pixel",
                  "segcal calibrate --list-params --method selective"],
    "predict": ["segcal predict last.ckpt --split cal --out preds/cal",
                "segcal predict last.kandinsky-kmeans.ckpt --out preds/test --alpha 0.1",
                "segcal predict last.kandinsky-kmeans.ckpt --out preds/full --alpha 0.1 --original-size"],
    "sweep": ["segcal sweep last.ckpt --repeats 5",
              "segcal sweep --predictions preds/test --cal-predictions preds/cal --n-cals 10,25,50"],
    "report": ["segcal report runs/demo/20261202-120000"],
    "config": ["segcal config ccp_person train.epochs=5     # validate and print, imports no torch"],
    "export-synthetic": ["segcal export-synthetic data/synth11 --num-classes 11 --num-images 200"],
}


def add_examples(sub: argparse._SubParsersAction) -> None:
    """Attach :data:`EXAMPLES` as the epilog of each subcommand (shown verbatim by ``--help``)."""
    for name, lines in EXAMPLES.items():
        parser = sub.choices[name]
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
