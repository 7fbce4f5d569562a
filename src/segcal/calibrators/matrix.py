"""Matrix scaling (Guo et al., 2017) and Dirichlet calibration (Kull et al., NeurIPS 2019).

Both map each pixel's output channels through one affine map fitted by minimising the NLL of the sampled
calibration pixels (L-BFGS, strong-Wolfe line search)::

    matrix:     z' = W z + b                 (z: the logits)
    dirichlet:  z' = W log p + b             (log p: floored log-probabilities of a softmax head)
                z' = W [log p, log(1 − p)] + b   (sigmoid head: per channel; one channel = beta calibration)

``W`` is ``[C, C]`` (``[C, 2C]`` for a sigmoid Dirichlet map), ``b`` ``[C]``, starting from the map that returns
the model's own logits (``W = I``; ``[I, −I]`` for the sigmoid features). The usual ODIR regularisation keeps
the map near a per-class scaling on small calibration sets: ``off_diagonal`` times the mean square of the
weights off that diagonal pattern, plus ``intercept`` times the mean square of ``b``. The objective is convex in
``(W, b)``, so the fit is the unique optimum whenever a regulariser is on. Neither keeps the arg-max in general
(``preserves_argmax`` is false).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segcal.calibrators.base import PixelCalibrator
from segcal.calibrators.diagnostics import check_objective
from segcal.calibrators.nll import LOGP_FLOOR, floored_log_probs, mean_nll
from segcal.calibrators.stream import Progress
from segcal.outputs import Head


def odir_penalty(weight: torch.Tensor, bias: torch.Tensor, diagonal: torch.Tensor, off_diagonal: float,
                 intercept: float) -> torch.Tensor:
    """``off_diagonal · mean square of the weights outside the bool pattern ``diagonal`` + intercept · mean square
    of the biases``."""
    penalty = weight.new_zeros(())
    off = ~diagonal
    if off_diagonal and bool(off.any()):
        penalty = penalty + off_diagonal * weight[off].pow(2).mean()
    if intercept:
        penalty = penalty + intercept * bias.pow(2).mean()
    return penalty


def fit_affine(features: torch.Tensor, labels: torch.Tensor, head: Head, init: torch.Tensor,
               off_diagonal: float = 0.0, intercept: float = 0.0, max_iter: int = 200
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [C, F], b [C])`` minimising ``NLL(features @ Wᵀ + b) + ODIR penalty`` for ``features [P, F]``,
    starting from ``W = init``, ``b = 0`` (its nonzero entries are the "diagonal" the penalty spares)."""
    features = features.double()
    diagonal = init != 0
    weight = init.double().to(features.device).clone().requires_grad_(True)
    bias = torch.zeros(init.shape[0], dtype=torch.float64, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = mean_nll(features @ weight.T + bias, labels, head)
        loss = loss + odir_penalty(weight, bias, diagonal.to(weight.device), off_diagonal, intercept)
        loss.backward()
        return loss

    optimizer.step(closure)
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise ValueError("affine calibration fit diverged (non-finite weights); raise off_diagonal / intercept")
    return weight.detach().float(), bias.detach().float()


class MatrixScaling(PixelCalibrator):
    """Affine map of the logits, ``z' = W z + b``.

    Hyper-parameters: ``head``, ``ignore_index``, ``seed``, ``pixels_per_image``, ``max_pixels`` (pixel sampling,
    as for temperature scaling), ``max_iter`` (L-BFGS iterations), ``off_diagonal`` and ``intercept`` (ODIR
    weights, 0 = unregularised). Fitted: ``weight_ [C, C]``, ``bias_ [C]``; ``info_`` holds the NLL of the sampled
    pixels before and after.
    """

    method = "matrix"
    preserves_argmax = False

    def __init__(self, head: Head = "softmax", ignore_index: int = 255, seed: int = 0, pixels_per_image: int = 4096,
                 max_pixels: int = 2**19, max_iter: int = 200, off_diagonal: float = 0.0,
                 intercept: float = 0.0) -> None:
        super().__init__(head, ignore_index, seed, pixels_per_image, max_pixels)
        if max_iter < 1:
            raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
        if off_diagonal < 0 or intercept < 0:
            raise ValueError(f"off_diagonal and intercept must be ≥ 0, got {off_diagonal} and {intercept}")
        self.max_iter, self.off_diagonal, self.intercept = max_iter, off_diagonal, intercept

    def _features(self, logits: torch.Tensor) -> torch.Tensor:
        """What the affine map acts on: the logits (classes on dim 1)."""
        return logits

    def _identity(self, channels: int) -> torch.Tensor:
        """The weights that give back the model's logits (the start of the fit)."""
        return torch.eye(channels)

    def _fit_pixels(self, logits: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor,
                    progress: Progress | None) -> None:
        features = self._features(logits)
        self.weight_, self.bias_ = fit_affine(features, labels, self.head, self._identity(logits.shape[1]),
                                              self.off_diagonal, self.intercept, self.max_iter)
        self.info_["nll_before"] = float(mean_nll(logits, labels, self.head))
        self.info_["nll_after"] = float(mean_nll(features @ self.weight_.T + self.bias_, labels, self.head))
        check_objective(self.method, "NLL", self.info_["nll_before"], self.info_["nll_after"])

    def _transform(self, logits: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        features = self._features(logits)
        w, b = self.weight_.to(logits.device), self.bias_.to(logits.device)
        return torch.einsum("ij,njhw->nihw", w, features) + b.view(1, -1, 1, 1)

    def _params(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_, "bias": self.bias_}

    def _load_params(self, params: dict, num_channels: int) -> None:
        weight = torch.as_tensor(params["weight"], dtype=torch.float32)
        bias = torch.as_tensor(params["bias"], dtype=torch.float32).flatten()
        expected = tuple(self._identity(num_channels).shape)
        if tuple(weight.shape) != expected or bias.numel() != num_channels:
            raise ValueError(f"weight must be {list(expected)} and bias [{num_channels}], got "
                             f"{list(weight.shape)} and {list(bias.shape)}")
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError("weight and bias must be finite")
        self.weight_, self.bias_ = weight, bias


class DirichletCalibration(MatrixScaling):
    """Affine map of the log-probabilities, ``z' = W log p + b`` (Kull et al., 2019), with ODIR regularisation
    on by default (``off_diagonal = intercept = 1e-3``). Same hyper-parameters as :class:`MatrixScaling`. With a
    sigmoid head the features are ``[log p_c, log(1 − p_c)]`` of every channel and ``W`` is ``[C, 2C]``: for a
    one-channel head this is beta calibration (Kull et al., 2017).
    """

    method = "dirichlet"

    def __init__(self, head: Head = "softmax", ignore_index: int = 255, seed: int = 0, pixels_per_image: int = 4096,
                 max_pixels: int = 2**19, max_iter: int = 200, off_diagonal: float = 1e-3,
                 intercept: float = 1e-3) -> None:
        super().__init__(head, ignore_index, seed, pixels_per_image, max_pixels, max_iter, off_diagonal, intercept)

    def _features(self, logits: torch.Tensor) -> torch.Tensor:
        if self.head == "sigmoid":
            z = logits.float()
            return torch.cat([F.logsigmoid(z), F.logsigmoid(-z)], 1).clamp_min(-LOGP_FLOOR)
        return floored_log_probs(logits, self.head)

    def _identity(self, channels: int) -> torch.Tensor:
        eye = torch.eye(channels)
        return torch.cat([eye, -eye], 1) if self.head == "sigmoid" else eye
