"""Streaming calibration metrics for segmentation: the ECE family, spatial views and quality.

:class:`CalibrationMetrics` accumulates, batch by batch, the binned sums of
:mod:`segcal.stats.binned` for several *views* of the same pixels, and reads every metric
from them at the end:

=====================  ===============================  ==========================================
view                   statistics                       metrics
=====================  ===============================  ==========================================
top-label, region      ``[2 (boundary, interior), B]``  ECE, MCE, RMSCE, reliability diagram,
                                                        boundary vs interior ECE
top-label, fine        ``[F]`` logit-spaced bins        adaptive (equal-mass) ECE and its bound
one-vs-rest            ``[C, B]``                       classwise ECE / MCE, per-class reliability
per pixel (optional)   ``[H, W, B]`` (``[C, H, W, B]``)  per-pixel ECE map (per class)
per image              ``[n, B]`` per batch             per-image ECE (one scalar per image)
=====================  ===============================  ==========================================

plus sums for the Brier score and NLL and a confusion matrix (Dice, IoU, recall, precision,
pixel accuracy via :func:`segcal.metrics.segmentation.quality_from_confusion`). Memory is
O(B) per global view and O(B·H·W) per map, independent of the number of images; the only
O(N) state is one float per image.

Every state is a sum (per-image ECEs are concatenated), so metrics merge with ``a + b`` /
:meth:`CalibrationMetrics.merge`, and torchmetrics reduces them across DDP ranks (Lightning
does this on ``compute()``). ``a + b`` merges states: it does *not* build torchmetrics'
compositional metric.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from segcal.metrics.boundary import boundary_mask
from segcal.metrics.calibration_results import CalibrationResults, Reliability
from segcal.metrics.scoring import brier_per_pixel, class_log_probs, nll_per_pixel
from segcal.metrics.segmentation import quality_from_confusion
from segcal.outputs import Head, Kind, check_batch, hard_labels
from segcal.stats.binned import BinnedStats, equal_width_bins, logit_bins
from segcal.stats.calibration_tests import calibration_tests
from segcal.stats.equal_mass import equal_mass_ece
from segcal.stats.smooth_ece import smooth_ece

REGIONS = ("boundary", "interior")
STAT_SUFFIXES = ("count", "conf", "correct")  # state names of a BinnedStats view
TEST_SUMS = ("spiegel_num", "spiegel_den", "variance_sum")  # streamed sums of the calibration tests


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _region_summary(region: BinnedStats) -> dict[str, dict[str, float]]:
    """``{boundary, interior} → {ece, mce, pixels, accuracy, confidence}`` from statistics ``[2, B]``."""
    ece, mce, total = region.ece(), region.mce(), region.total()
    accuracy = region.correct_sum.sum(-1) / total   # NaN for an empty region
    confidence = region.conf_sum.sum(-1) / total
    return {name: {"ece": float(ece[i]), "mce": float(mce[i]), "pixels": int(total[i]),
                   "accuracy": float(accuracy[i]), "confidence": float(confidence[i])}
            for i, name in enumerate(REGIONS)}


def _as_list(state: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A concatenated ("cat") state as a list of tensors (it is one tensor after a DDP sync)."""
    return list(state) if isinstance(state, list) else [state]


class CalibrationMetrics(Metric):
    """Streaming calibration metrics of segmentation outputs; see the module docstring.

    ``update(preds, labels)`` takes predictions ``[N, C, H, W]`` (``kind="probs"`` or
    ``"logits"``; ``head="softmax"`` or ``"sigmoid"`` as in :mod:`segcal.outputs`) and
    labels ``[N, H, W]``; ``ignore_index`` pixels are excluded everywhere. ``compute()``
    returns :class:`~segcal.metrics.calibration_results.CalibrationResults`.

    Definitions (``p`` = top-label confidence ``max_c p_c``, correct = ``argmax_c p_c == y``):

    * ECE ``Σ_b (n_b/n)|acc_b − conf_b|`` over ``bins`` equal-width bins ``[k/B, (k+1)/B)``
      (last bin closed), MCE ``max_b |acc_b − conf_b|`` over non-empty bins, RMSCE the L2
      version – as torchmetrics ``MulticlassCalibrationError`` with norm l1 / max / l2, except
      that ``p == 1`` falls in the last bin rather than a bin of its own.
    * Adaptive ECE: ``bins`` equal-mass bins (Nixon et al., 2019), formed in one pass from a
      fine histogram of ``adaptive_resolution`` bins uniform in ``logit(p)``; the worst-case gap
      to the exact sorted-scores value is reported as ``adaptive_ece_bound``
      (see :mod:`segcal.stats.equal_mass`).
    * Classwise ECE of class c: ECE of ``p_c`` against ``[y == c]`` over all valid pixels
      (one-vs-rest, Kull et al., 2019); ``mean_classwise_ece`` averages it over classes.
    * Brier ``Σ_c (p_c − y_c)²`` and NLL (:mod:`segcal.metrics.scoring`), averaged over pixels.
    * Per-pixel ECE map ``[H, W]``: the ECE of each pixel position over images (needs all images
      of one size; pass ``image_size`` to allocate it up front, required under DDP when a rank
      may see no batch). ``class_maps=True`` adds classwise maps ``[C, H, W]`` (C× memory).
    * Per-image ECE: one top-label ECE per image (NaN for images without valid pixels).
    * Boundary vs interior: ECE over pixels within ``boundary_width`` pixels of a label change
      (:func:`segcal.metrics.boundary.boundary_mask`) and over the others.

    Quantities with no data (e.g. all pixels ignored) are NaN, never an exception; the
    results then report ``num_pixels == 0``.

    Args (besides the above): ``validate`` runs :func:`segcal.outputs.check_batch` on
    every batch (clear ``ValueError`` for malformed input); ``**kwargs`` go to torchmetrics'
    ``Metric`` (e.g. ``sync_on_compute``). Memory: ``3·B·8`` bytes per cell, e.g. 28 MB for a
    240×320 map with 15 bins; C times that with ``class_maps``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        num_classes: int,
        bins: int = 15,
        ignore_index: int = 255,
        head: Head = "softmax",
        kind: Kind = "probs",
        ece_map: bool = True,
        class_maps: bool = False,
        boundary_width: int = 3,
        adaptive_resolution: int = 8192,
        image_size: tuple[int, int] | None = None,
        validate: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = _positive_int("num_classes", num_classes, 2)
        self.bins = _positive_int("bins", bins)
        self.boundary_width = _positive_int("boundary_width", boundary_width)
        self.adaptive_resolution = _positive_int("adaptive_resolution", adaptive_resolution, self.bins)
        if head not in ("softmax", "sigmoid"):
            raise ValueError(f"head must be 'softmax' or 'sigmoid', got {head!r}")
        if kind not in ("probs", "logits"):
            raise ValueError(f"kind must be 'probs' or 'logits', got {kind!r}")
        if image_size is not None:
            image_size = tuple(_positive_int("image_size", s) for s in image_size)
            if len(image_size) != 2:
                raise ValueError(f"image_size must be (H, W), got {image_size!r}")
        self.ignore_index, self.head, self.kind = int(ignore_index), head, kind
        self.ece_map, self.class_maps, self.validate = bool(ece_map), bool(class_maps), bool(validate)

        c = self.num_classes
        self._add_binned("region", (len(REGIONS),), self.bins)
        self._add_binned("fine", (), self.adaptive_resolution)
        self._add_binned("classwise", (c,), self.bins)
        if self.ece_map:
            self._add_binned("map", image_size, self.bins)
        if self.class_maps:
            self._add_binned("class_map", None if image_size is None else (c, *image_size), self.bins)
        self.add_state("confmat", torch.zeros(c, c, dtype=torch.int64), dist_reduce_fx="sum")
        for name in ("brier_sum", "nll_sum", *TEST_SUMS):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("image_ece", [], dist_reduce_fx="cat")

    # -- states ------------------------------------------------------------------------------
    def _add_binned(self, name: str, cells: tuple[int, ...] | None, bins: int) -> None:
        """Register the sum states ``{name}_count / _conf / _correct``; ``cells=None`` allocates on first use."""
        empty = BinnedStats.zeros((0,) if cells is None else cells, bins)
        for suffix, tensor in zip(STAT_SUFFIXES, empty.tensors()):
            self.add_state(f"{name}_{suffix}", tensor, dist_reduce_fx="sum")

    def _binned(self, name: str, cells: tuple[int, ...] | None = None) -> BinnedStats:
        """The statistics of view ``name`` (in-place views of the states); allocates/checks ``cells``."""
        stats = BinnedStats(*(getattr(self, f"{name}_{suffix}") for suffix in STAT_SUFFIXES))
        if cells is None or stats.cells == cells:
            return stats
        if stats.count.numel() == 0:
            stats = BinnedStats.zeros(cells, stats.num_bins, device=stats.count.device)
            for suffix, tensor in zip(STAT_SUFFIXES, stats.tensors()):
                setattr(self, f"{name}_{suffix}", tensor)
            return stats
        raise ValueError(
            f"per-pixel ECE maps need images of one size: accumulated {stats.cells[-2:]}, got {cells[-2:]}"
            " (resize the images, or pass ece_map=False and class_maps=False)"
        )

    # -- accumulation ------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        """Add a batch: ``preds [N, C, H, W]`` (logits or probabilities) and ``labels [N, H, W]``."""
        if self.validate:
            check_batch(preds, labels, self.num_classes, self.ignore_index, self.kind, self.head)
        probs, logp = class_log_probs(preds, self.kind, self.head)
        labels = labels.to(probs.device, torch.int64)
        n, c, h, w = probs.shape
        valid = labels != self.ignore_index
        weight = None if bool(valid.all()) else valid.double()  # ignored pixels get weight 0
        dev = probs.device

        if self.kind == "logits":  # the model's prediction: arg-max of the logits, exact where
            pred = hard_labels(preds, self.head).to(dev)  # scaled probabilities tie in float32
            conf = probs.gather(1, pred.unsqueeze(1)).squeeze(1)
        else:
            conf, pred = probs.max(1)
        correct = pred == labels
        # top-label samples, shared by the per-image, fine and map views
        top = (equal_width_bins(conf, self.bins), conf.double(), correct.double())

        # per image x region (boundary / interior): global, region and image ECE at once
        region = (~boundary_mask(labels, self.boundary_width, self.ignore_index)).long()
        cell = torch.arange(n, device=dev).view(n, 1, 1) * len(REGIONS) + region
        per_image = BinnedStats.zeros((n, len(REGIONS)), self.bins, device=dev)
        per_image.add_samples_(*top, cell, weight)
        for total, batch in zip(self._binned("region").tensors(), per_image.sum(0).tensors()):
            total += batch
        self.image_ece.append(per_image.sum(1).ece())
        self.num_images += n

        self._binned("fine").add_samples_(logit_bins(conf, self.adaptive_resolution), *top[1:], None, weight)
        s, y = top[1], top[2]  # calibration tests: Spiegelhalter's sums and the variance Σ s(1 − s)
        for name, value in zip(TEST_SUMS, ((y - s) * (1 - 2 * s), (1 - 2 * s).square() * s * (1 - s), s * (1 - s))):
            setattr(self, name, getattr(self, name) + (value if weight is None else value * weight).sum())
        pixel = torch.arange(h * w, device=dev).view(1, h, w)
        if self.ece_map:
            self._binned("map", (h, w)).add_samples_(*top, pixel, weight)

        # one-vs-rest per class
        classes = torch.arange(c, device=dev).view(1, c, 1, 1)
        onehot = labels.unsqueeze(1) == classes
        class_bins = equal_width_bins(probs, self.bins)
        class_weight = None if weight is None else weight.unsqueeze(1)
        self._binned("classwise").add_samples_(class_bins, probs, onehot, classes, class_weight)
        if self.class_maps:
            self._binned("class_map", (c, h, w)).add_samples_(
                class_bins, probs, onehot, classes * (h * w) + pixel.unsqueeze(1), class_weight)

        target = labels.clamp(0, c - 1)  # any class at ignored pixels (weight 0)
        brier = brier_per_pixel(probs, target).double()
        nll = nll_per_pixel(preds, probs, logp, target, self.kind, self.head).double()
        if weight is not None:
            brier, nll = brier * weight, nll * weight
        self.brier_sum += brier.sum()
        self.nll_sum += nll.sum()
        self.confmat += torch.bincount((target * c + pred)[valid], minlength=c * c).view(c, c)

    # -- merging -----------------------------------------------------------------------------
    def _config(self) -> tuple:
        return (type(self), self.num_classes, self.bins, self.ignore_index, self.head, self.kind, self.ece_map,
                self.class_maps, self.boundary_width, self.adaptive_resolution)

    def merge(self, other: CalibrationMetrics) -> CalibrationMetrics:
        """Add ``other``'s statistics to ``self`` in place (same configuration required); returns ``self``."""
        if not isinstance(other, CalibrationMetrics) or other._config() != self._config():
            raise ValueError("can only merge CalibrationMetrics with the same configuration"
                             " (num_classes, bins, ignore_index, head, kind, maps, boundary_width, ...)")
        self._combine(other.metric_state, incoming_first=False)
        self._update_count += other._update_count
        self._computed = None
        return self

    def _reduce_states(self, incoming_state: dict) -> None:
        """torchmetrics' hook behind ``forward()`` and ``merge_state()`` (incoming = earlier data)."""
        self._combine(incoming_state, incoming_first=True)

    def _combine(self, states: dict, incoming_first: bool) -> None:
        """Sum ``states`` into ours; per-image lists concatenate; lazily allocated maps may be empty."""
        for name in self._defaults:
            mine, theirs = getattr(self, name), states[name]
            if isinstance(mine, list) or isinstance(theirs, list):
                ours, other = _as_list(mine), [t.to(self.device) for t in _as_list(theirs)]
                setattr(self, name, other + ours if incoming_first else ours + other)
            elif theirs.numel() == 0:
                continue
            elif mine.numel() == 0:
                setattr(self, name, theirs.to(mine.device).clone())
            elif mine.shape != theirs.shape:
                raise ValueError(f"cannot merge state {name!r} of shapes {tuple(mine.shape)} and {tuple(theirs.shape)}"
                                 " (per-pixel maps of different image sizes)")
            else:
                setattr(self, name, mine + theirs.to(mine.device))

    def __add__(self, other: CalibrationMetrics) -> CalibrationMetrics:  # type: ignore[override]
        return self.clone().merge(other)

    def __radd__(self, other: object) -> CalibrationMetrics:  # type: ignore[override]
        if isinstance(other, int) and other == 0:  # sum([m1, m2, ...])
            return self.clone()
        return NotImplemented

    # -- results -----------------------------------------------------------------------------
    def compute(self) -> CalibrationResults:  # type: ignore[override]
        """All metrics as :class:`~segcal.metrics.calibration_results.CalibrationResults`."""
        bins = self.bins
        edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
        region = self._binned("region")
        top = region.sum(0)
        adaptive, bound, _ = equal_mass_ece(self._binned("fine"), bins)
        classwise = self._binned("classwise")
        num_pixels = int(top.total())
        per_pixel = num_pixels if num_pixels else float("nan")
        quality = quality_from_confusion(self.confmat)
        image_ece = dim_zero_cat(self.image_ece).cpu() if len(self.image_ece) else torch.zeros(0, dtype=torch.float64)
        fine = self._binned("fine")
        count, conf_sum, correct_sum = (t.double().cpu() for t in fine.tensors())
        tests = calibration_tests(count, conf_sum, correct_sum, *(float(getattr(self, name)) for name in TEST_SUMS))
        tests["smooth_ece"], tests["smooth_ece_sigma"] = smooth_ece(
            conf_sum / count.clamp_min(1e-300), conf_sum - correct_sum, count)
        return CalibrationResults(
            num_classes=self.num_classes, bins=bins, scheme="equal-width",
            adaptive_scheme=f"equal-mass from {self.adaptive_resolution} logit-spaced bins",
            head=self.head, kind=self.kind, ignore_index=self.ignore_index, boundary_width=self.boundary_width,
            num_images=int(self.num_images), num_pixels=num_pixels,
            ece=float(top.ece()), mce=float(top.mce()), rmsce=float(top.rmsce()),
            adaptive_ece=float(adaptive), adaptive_ece_bound=float(bound),
            mean_classwise_ece=float(classwise.ece().mean()),
            brier=float(self.brier_sum) / per_pixel, nll=float(self.nll_sum) / per_pixel,
            classwise_ece=classwise.ece().cpu(), classwise_mce=classwise.mce().cpu(),
            reliability=Reliability.from_stats(top, edges), class_reliability=Reliability.from_stats(classwise, edges),
            regions=_region_summary(region), image_ece=image_ece,
            segmentation={k: v.cpu() if v.ndim else float(v) for k, v in quality.items()}, tests=tests,
            **self._maps(),
        )

    def _maps(self) -> dict[str, torch.Tensor | None]:
        out: dict[str, torch.Tensor | None] = {"ece_map": None, "map_count": None, "class_ece_maps": None}
        if self.ece_map and self.map_count.numel():
            stats = self._binned("map")
            out["ece_map"], out["map_count"] = stats.ece().cpu(), stats.total().long().cpu()
            out["gap_map"], out["accuracy_map"] = stats.signed_gap().cpu(), stats.overall_accuracy().cpu()
        if self.class_maps and self.class_map_count.numel():
            out["class_ece_maps"] = self._binned("class_map").ece().cpu()
        return out
