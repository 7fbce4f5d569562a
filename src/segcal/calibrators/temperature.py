"""Temperature scaling (Guo et al., 2017) and its per-class variant, vector scaling.

Calibrated logits are ``z / T`` with one temperature ``T > 0`` (``"temperature"``) or one
per output channel ``T_c`` (``"vector"``), fitted by minimising the NLL of the calibration
pixels over ``log T`` with L-BFGS (strong-Wolfe line search). Both heads are supported:
softmax (cross-entropy) and sigmoid (per-channel binary cross-entropy, including the
one-channel binary head). One ``T`` never changes the arg-max; per-class ``T_c`` can.
"""
from __future__ import annotations

import math

import torch

from segcal.calibrators.base import PixelCalibrator
from segcal.calibrators.diagnostics import check_objective, check_temperatures
from segcal.calibrators.nll import mean_nll
from segcal.calibrators.stream import Progress
from segcal.outputs import Head

LOG_T_BOUND = math.log(1e4)
"""Temperatures are kept in ``[1e-4, 1e4]`` while optimising, so separable data cannot overflow."""


def fit_log_temperature(
    logits: torch.Tensor, labels: torch.Tensor, head: Head = "softmax", per_class: bool = False, max_iter: int = 100
) -> torch.Tensor:
    """``log T`` minimising the NLL of ``labels [P]`` under ``logits [P, C] / T``.

    Returns a tensor ``[1]`` (one temperature) or ``[C]`` (``per_class``), on ``logits.device``. For a two-class
    softmax only the scaled logit difference matters, and when the two logits mirror each other the two
    temperatures are not identifiable (a free fit drifts one to its bound). They are then fitted as a shared
    ``log T`` and an asymmetry ``a`` (``log T_c = log T ∓ a``, starting at ``a = 0``), which the data move only
    as far as they identify it.
    """
    c = logits.shape[1]
    pair = per_class and head == "softmax" and c == 2
    free = torch.zeros(c if per_class else 1, device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [free], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def full(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[0] - x[1], x[0] + x[1]]) if pair else x

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = mean_nll(logits / full(free).clamp(-LOG_T_BOUND, LOG_T_BOUND).exp(), labels, head)
        loss.backward()
        return loss

    optimizer.step(closure)
    result = full(free.detach()).clamp(-LOG_T_BOUND, LOG_T_BOUND)
    if not torch.isfinite(result).all():
        raise ValueError("temperature fit diverged (non-finite log T); check the calibration logits")
    return result


class TemperatureScaling(PixelCalibrator):
    """One temperature ``T`` shared by all classes and pixels: logits → logits / T.

    Hyper-parameters: ``head``, ``ignore_index``, ``seed``, ``pixels_per_image`` and
    ``max_pixels`` (pixel sampling, see :mod:`segcal.calibrators.sampling`), ``max_iter``
    (L-BFGS iterations). After fitting, ``temperature_`` is ``[1]`` and ``info`` holds the
    NLL of the sampled pixels before and after scaling (``info_``).
    """

    method = "temperature"
    per_class = False

    def __init__(
        self,
        head: Head = "softmax",
        ignore_index: int = 255,
        seed: int = 0,
        pixels_per_image: int = 4096,
        max_pixels: int = 2**19,
        max_iter: int = 100,
    ) -> None:
        super().__init__(head, ignore_index, seed, pixels_per_image, max_pixels)
        if max_iter < 1:
            raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
        self.max_iter = max_iter

    @property
    def temperature_(self) -> torch.Tensor:
        """Fitted temperature(s): ``[1]`` for temperature scaling, ``[C]`` for vector scaling."""
        self.check_is_fitted()
        return self.log_temperature_.exp()

    def _fit_pixels(
        self, logits: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor, progress: Progress | None
    ) -> None:
        self.log_temperature_ = fit_log_temperature(logits, labels, self.head, self.per_class, self.max_iter)
        scale = self.log_temperature_.exp()
        self.info_["nll_before"] = float(mean_nll(logits, labels, self.head))
        self.info_["nll_after"] = float(mean_nll(logits / scale, labels, self.head))
        self.info_["temperature"] = scale.tolist()
        check_temperatures(self.method, scale, math.exp(LOG_T_BOUND))
        check_objective(self.method, "NLL", self.info_["nll_before"], self.info_["nll_after"])

    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        t = self.temperature_.to(logits.device)
        return logits / t.view(1, -1, 1, 1)

    def _params(self) -> dict[str, torch.Tensor]:
        return {"log_temperature": self.log_temperature_}

    def _load_params(self, params: dict, num_channels: int) -> None:
        log_t = torch.as_tensor(params["log_temperature"], dtype=torch.float32).flatten()
        expected = num_channels if self.per_class else 1
        if log_t.numel() != expected or not torch.isfinite(log_t).all():
            raise ValueError(f"log_temperature must hold {expected} finite values, got {log_t.tolist()}")
        self.log_temperature_ = log_t


class VectorScaling(TemperatureScaling):
    """One temperature per output channel ``T_c``: logits[:, c] → logits[:, c] / T_c.

    Same hyper-parameters as :class:`TemperatureScaling`; ``temperature_`` is ``[C]``. With a
    softmax head unequal ``T_c`` can change the arg-max (equal ones cannot).
    """

    method = "vector"
    preserves_argmax = False
    per_class = True
