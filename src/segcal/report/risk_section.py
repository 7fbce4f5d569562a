"""The report's "Mask-level guarantees" section: every evaluation of a risk controller (``--method risk|margin``)."""
from __future__ import annotations

from segcal.report.html import Html, figure_grid, h3, join, note, para, table
from segcal.report.inputs import RunInputs

CMD_RISK = "segcal calibrate CHECKPOINT --method risk --loss fnr --alpha 0.1"
SPREAD_ROWS = (("loss", "per-image loss"), ("fnr", "FNR"), ("fdr", "FDR"), ("mask_area", "mask area"),
               ("outer_area", "outer mask area"), ("inner_area", "inner mask area"), ("band_area", "band area"),
               ("inner_loss", "inner \u2284 truth"), ("set_size", "set size"))


def _parameters(parameters: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {'trivial' if v is None else f'{v:.4g}'}" for k, v in parameters.items())


def risk_section(run: RunInputs) -> Html:
    evals = [e for e in run.evaluations if e.result.risk is not None]
    if not evals:
        return note("no risk-control evaluation found", f"{CMD_RISK}, then segcal evaluate CHECKPOINT")
    rows = []
    for e in evals:
        r = e.result.risk
        target = "" if r.target_class is None else e.result.classes[r.target_class] if r.target_class < len(
            e.result.classes) else str(r.target_class)
        rows.append([e.name, f"{r.method} {r.loss}", target, r.procedure.upper(), r.alpha, r.delta, r.n_cal,
                     _parameters(r.parameters), r.calibration_risk, r.test_risk, r.images_over_alpha,
                     r.num_test_images])
    parts = [table(["evaluation", "guarantee", "class", "procedure", "\u03b1", "\u03b4", "n_cal", "chosen",
                    "calibration risk", "test risk", "images with loss > \u03b1", "test images"], rows, label_cols=2),
             para("CRC bounds the expected per-image loss by \u03b1; RCPS and LTT bound the risk by \u03b1 with "
                  "probability 1\u2212\u03b4 over the calibration draw. Single images may exceed \u03b1: the "
                  "guarantee is about the mean. Areas are shares of the image.")]
    for e in evals:
        r = e.result.risk
        spread = [[title, *(getattr(r.per_image[key], f) for f in ("mean", "std", "p10", "p50", "p90"))]
                  for key, title in SPREAD_ROWS if key in r.per_image and not (key == "loss" and r.loss in r.per_image)]
        parts += [h3(f"{e.name}: {r.method} {r.loss}"),
                  table(["per test image", "mean", "std", "10%", "median", "90%"], spread),
                  figure_grid(e.figures("risk", run.run_dir))]
    return join(parts)
