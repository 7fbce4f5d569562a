"""The test side of a risk controller: realized risk, λ, mask areas and their spread over images.

:class:`RiskEvaluation` is fed the (recalibrated) logits of every test batch and keeps a few numbers per image
(never a pixel): the controlled loss at the chosen λ, and what the guarantee costs — the FDR (precision paid)
of an FNR-controlled mask and vice versa, mask / band areas, set sizes. :meth:`compute` gives a
:class:`~segcal.pipeline.results.RiskSummary`; the first few images are kept for the overlay figures.
"""
from __future__ import annotations

import torch

from segcal.batch import Batch
from segcal.outputs import hard_labels
from segcal.pipeline.results import RiskSummary, Spread
from segcal.risk import MarginController, RiskController


def _rates(mask: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image FNR, FDR and area share of ``mask`` against ``truth`` (all ``[N, H, W]`` bool)."""
    hits = (mask & truth).flatten(1).sum(1).double()
    positives = truth.flatten(1).sum(1).double()
    flagged = (mask & valid).flatten(1).sum(1).double()
    zero = torch.zeros_like(hits)
    return {"fnr": torch.where(positives > 0, 1 - hits / positives.clamp(min=1), zero),
            "fdr": torch.where(flagged > 0, 1 - hits / flagged.clamp(min=1), zero),
            "mask_area": mask.flatten(1).double().mean(1)}


class RiskEvaluation:
    """Per-image statistics of ``controller`` on test batches; ``examples``: images kept for figures."""

    def __init__(self, controller: RiskController | MarginController, examples: int = 4) -> None:
        self.controller, self.examples = controller, examples
        self.values: dict[str, list[torch.Tensor]] = {}
        self.items: list[dict] = []  # name, image, truth, masks of the first images

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.values.setdefault(name, []).append(value.double())  # on the batches' device until compute

    def update(self, source, batch: Batch, logits: torch.Tensor) -> None:
        """Add the images of ``batch`` with their (recalibrated) ``logits [N, C, H, W]``."""
        rc, labels = self.controller, batch.labels
        valid = labels != source.ignore_index
        truth = None if rc.target_class_ is None else valid & (labels == rc.target_class_)
        if isinstance(rc, MarginController):
            masks = rc.predict(logits)
            losses = rc.image_losses(logits, labels, masks=masks)
            self._add("loss", losses["outer"])
            if "inner" in losses:
                self._add("inner_loss", losses["inner"])
            outer = _rates(masks.outer, truth, valid)
            self._add("fnr", outer["fnr"])
            self._add("outer_area", outer["mask_area"])
            self._add("pred_area", masks.pred.flatten(1).double().mean(1))
            self._add("band_area", masks.band.flatten(1).double().mean(1))
            if masks.inner is not None:
                self._add("inner_area", masks.inner.flatten(1).double().mean(1))
            shown = {"pred": masks.pred, "outer": masks.outer, "inner": masks.inner}
        else:  # the losses from the masks and sets just predicted (what image_losses computes, without a second pass)
            out = rc.predict(logits)
            if rc.loss == "miscoverage":
                covered = out.gather(1, labels.clamp(0, out.shape[1] - 1).unsqueeze(1)).squeeze(1) & valid
                judged = valid.flatten(1).sum(1).double()
                self._add("loss", torch.where(judged > 0, 1 - covered.flatten(1).sum(1) / judged.clamp(min=1),
                                              torch.zeros_like(judged)))
                self._add("set_size", torch.where(valid, out.sum(1).double(), torch.nan).nanmean((1, 2)))
                shown = {"sets": out}
            else:
                rates = _rates(out, truth, valid)
                self._add("loss", rates[rc.loss])
                for key in ("fnr", "fdr", "mask_area"):
                    self._add(key, rates[key])
                self._add("pred_area", (hard_labels(logits, source.head) == rc.target_class_).flatten(1)
                          .double().mean(1))
                shown = {"mask": out}
        self._keep(source, batch, truth, shown)

    def _keep(self, source, batch: Batch, truth, shown: dict) -> None:
        take = min(self.examples - len(self.items), len(batch))
        display = getattr(source, "display_image", None)
        for i in range(max(take, 0)):
            image = display(batch, i) if display is not None and batch.images is not None else None
            self.items.append({"name": batch.names[i] if batch.names else str(len(self.items)), "image": image,
                               "truth": None if truth is None else truth[i].cpu(),  # a few images, once
                               **{k: None if v is None else v[i].cpu() for k, v in shown.items()}})

    def compute(self) -> RiskSummary:
        rc = self.controller
        values = {k: torch.cat(v).cpu() for k, v in self.values.items()}
        loss = values["loss"]
        if isinstance(rc, MarginController):
            margins = rc.margins()
            chosen = {side: rc.selection(side=side) for side in margins}
            lam: dict[str, float] = {f"{side}_margin": m for side, m in margins.items()}
            feasible = all(s.feasible for s in chosen.values())
            calibration_risk = chosen["outer"].risk
            extra = {"structure": rc.structure, "inner": rc.inner}
        else:
            chosen = {"outer": rc.selection()}
            lam = {"threshold": rc.threshold()}
            feasible, calibration_risk, extra = chosen["outer"].feasible, chosen["outer"].risk, {}
        return RiskSummary(
            method=rc.method, loss=rc.loss, procedure=rc.procedure_, alpha=rc.alpha,
            delta=None if rc.procedure_ == "crc" else rc.delta, target_class=rc.target_class_, n_cal=rc.n_cal_,
            feasible=feasible, parameters=lam, calibration_risk=calibration_risk, num_test_images=len(loss),
            test_risk=float(loss.mean()), images_over_alpha=float((loss > rc.alpha).double().mean()),
            per_image={k: Spread.of(v) for k, v in values.items()}, options=extra)


def risk_figures(folder, evaluation: RiskEvaluation, class_names: list[str]) -> list[dict[str, str]]:
    """Outline overlays of the kept images and the per-image loss histogram; their figure entries."""
    from segcal.plots.conformal import plot_prediction_set_overlay
    from segcal.plots.risk import plot_loss_histogram, plot_mask_outlines

    rc, entries = evaluation.controller, []
    folder.mkdir(parents=True, exist_ok=True)

    def entry(key: str, title: str, path) -> None:
        entries.append({"key": key, "title": title, "path": str(path.relative_to(folder.parent)), "group": "risk"})

    path = folder / "risk_losses.png"
    plot_loss_histogram(torch.cat(evaluation.values["loss"]).numpy(), rc.alpha, rc.loss, path=path)
    entry("risk_losses", f"Per-image test {rc.loss} ({rc.method}, {rc.procedure_.upper()}, α = {rc.alpha:g})", path)
    target = "" if rc.target_class_ is None else f" of {class_names[rc.target_class_]}"
    for i, item in enumerate(evaluation.items):
        path = folder / f"risk_overlay_{i}.png"
        if "sets" in item:
            plot_prediction_set_overlay(item["image"] if item["image"] is not None else torch.zeros(3, *item[
                "sets"].shape[1:]), item["sets"], class_names, rc.alpha, path=path)
        else:
            plot_mask_outlines(item["image"], item, f"{item['name']}: {rc.method} masks{target}", path=path)
        entry(f"risk_overlay_{i}", f"{'Sets' if 'sets' in item else 'Masks'}{target}, {item['name']}", path)
    return entries
