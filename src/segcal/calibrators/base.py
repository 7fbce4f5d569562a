"""The calibrator interface shared by every recalibration method (scikit-learn style).

``Calibrator(**hyper_parameters).fit(stream)`` consumes a calibration stream once (see
:mod:`segcal.calibrators.stream`), keeps a bounded seeded sample of it (see
:mod:`segcal.calibrators.sampling`) and fits; ``calibrator(logits)`` (= ``transform``) maps
logits ``[N, C, H, W]`` to calibrated logits of the same shape, in float32, for the same
head (read probabilities with :func:`segcal.outputs.to_probs`). ``state_dict()`` is a
plain dict (hyper-parameters, fitted tensors on the CPU, fit diagnostics) that
:func:`segcal.calibrators.registry.load_calibrator` turns back into a calibrator.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from segcal.calibrators.sampling import PixelSample, distributed
from segcal.calibrators.stream import CalibrationStream, Progress
from segcal.estimator import Estimator
from segcal.outputs import Head, as_tensor


class Calibrator(Estimator, ABC):
    """Base class: ``fit(stream)`` → self, ``transform(logits[, images])`` → calibrated logits.

    Subclasses define ``method`` (the registry name), :meth:`_collect` (what to keep of the
    stream), :meth:`_fit_sample`, :meth:`_transform`, :meth:`_params` and
    :meth:`_load_params`. Constructor arguments are stored under their own names
    (:meth:`get_params` reads them back, as in scikit-learn); fitted attributes end in ``_``:
    ``num_channels_``, ``info_`` (fit diagnostics) and the method's own.
    """

    method: ClassVar[str]
    preserves_argmax: ClassVar[bool] = True
    """Whether calibrated logits always keep the predicted class (then segmentation quality is unchanged)."""

    def __init__(self, head: Head = "softmax", ignore_index: int = 255, seed: int = 0) -> None:
        if head not in ("softmax", "sigmoid"):
            raise ValueError(f"head must be 'softmax' or 'sigmoid', got {head!r}")
        self.head = head
        self.ignore_index = ignore_index
        self.seed = seed

    def fit(
        self,
        stream: Iterable,
        *,
        progress: Progress | None = None,
        device: torch.device | str | None = None,
    ) -> Calibrator:
        """Fit on a stream of ``(logits, labels[, images])`` batches; returns ``self``.

        ``progress(iterable, description)`` wraps the stream and the training epochs (e.g. a
        rich progress bar); ``device`` is where the sample is kept and the fit runs (default:
        the device of each batch). Under ``torch.distributed`` every rank passes its share of
        the stream and the samples are pooled (see :mod:`segcal.calibrators.sampling`).
        ``ValueError`` on malformed batches (shapes, NaN/inf
        logits, labels out of range), an empty stream, no valid pixel, or a single class.
        """
        self._fitted = False
        batches = CalibrationStream(stream, self.head, self.ignore_index, device, progress)
        sample = self._collect(batches)
        if distributed():  # every rank fits on the pooled sample: the same parameters everywhere
            batches.all_reduce()
            sample.gather()
        batches.check_usable()
        assert batches.class_counts is not None
        self.info_ = {"images": batches.num_images, "class_pixels": batches.class_counts.tolist()}
        self._fit_sample(sample, progress)
        self.num_channels_ = batches.num_channels
        self._fitted = True
        return self

    def transform(self, logits: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated logits ``[N, C, H, W]`` (float32) from logits ``[N, C, H, W]``."""
        self.check_is_fitted()
        logits = as_tensor(logits, "logits")
        if logits.ndim != 4 or logits.shape[1] != self.num_channels_:
            raise ValueError(f"logits must have shape [N, {self.num_channels_}, H, W], got {tuple(logits.shape)}")
        if not torch.isfinite(logits).all():
            raise ValueError("logits contains NaN or inf values")
        with torch.no_grad():
            return self._transform(logits.float(), images)

    def __call__(self, logits: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.transform(logits, images)

    def state_dict(self) -> dict[str, Any]:
        """``{"method", "config", "num_channels", "params", "info"}``; tensors are CPU copies."""
        self.check_is_fitted()
        return {"method": self.method, "config": self.get_params(), "num_channels": self.num_channels_,
                "params": _cpu_copy(self._params()), "info": dict(self.info_)}

    def load_state_dict(self, state: dict[str, Any]) -> Calibrator:
        """Restore hyper-parameters and fitted parameters from :meth:`state_dict`; returns ``self``."""
        if state.get("method") != self.method:
            raise ValueError(f"state is for method {state.get('method')!r}, not {self.method!r}")
        self.set_params(**state["config"])
        self.info_ = dict(state.get("info", {}))
        self._load_params(state["params"], int(state["num_channels"]))
        self.num_channels_ = int(state["num_channels"])
        self._fitted = True
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Calibrator:
        """A fitted calibrator of this class rebuilt from :meth:`state_dict`."""
        return cls(**state["config"]).load_state_dict(state)

    @abstractmethod
    def _collect(self, batches: CalibrationStream) -> Any:
        """Consume the validated batches, returning the bounded sample to fit on."""

    @abstractmethod
    def _fit_sample(self, sample: Any, progress: Progress | None) -> None:
        """Fit the parameters on the sample (the stream was checked usable)."""

    @abstractmethod
    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """Calibrated float32 logits for validated float32 ``logits [N, C, H, W]``."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Fitted parameters (tensors, numbers, nested tensor dicts)."""

    @abstractmethod
    def _load_params(self, params: dict[str, Any], num_channels: int) -> None:
        """Inverse of :meth:`_params`."""


def _cpu_copy(obj: Any) -> Any:
    """Detached CPU copies of the tensors in nested dicts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    return obj


class PixelCalibrator(Calibrator):
    """A calibrator fitted on a seeded reservoir of single pixels (:class:`PixelSample`).

    Each image offers at most ``pixels_per_image`` random valid pixels; at most
    ``max_pixels`` of them are kept (uniformly). Subclasses implement :meth:`_fit_pixels`.
    """

    def __init__(
        self,
        head: Head = "softmax",
        ignore_index: int = 255,
        seed: int = 0,
        pixels_per_image: int = 4096,
        max_pixels: int = 2**19,
    ) -> None:
        super().__init__(head, ignore_index, seed)
        if pixels_per_image < 1 or max_pixels < 1:
            raise ValueError(
                f"pixels_per_image and max_pixels must be ≥ 1, got {pixels_per_image} and {max_pixels}"
            )
        self.pixels_per_image = pixels_per_image
        self.max_pixels = max_pixels

    def _collect(self, batches: CalibrationStream) -> PixelSample:
        sample = PixelSample(self.pixels_per_image, self.max_pixels, self.seed)
        for batch in batches:
            sample.add(batch.logits, batch.labels, self.ignore_index)
        return sample

    def _fit_sample(self, sample: PixelSample, progress: Progress | None) -> None:
        logits, labels, image_ids = sample.tensors()
        self.info_["pixels"] = len(labels)
        self._fit_pixels(logits, labels, image_ids, progress)

    @abstractmethod
    def _fit_pixels(
        self, logits: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor, progress: Progress | None
    ) -> None:
        """Fit on sampled pixels: ``logits [P, C]``, ``labels [P]`` (all valid), ``image_ids [P]``."""
