"""Per-pixel misprediction classifier used by selective scaling (Wang, Gong & Wang, CVPR 2023).

Input: the model's log-probability vector at a pixel (log-softmax, or per-class log-sigmoid
for sigmoid heads), floored (:func:`segcal.calibrators.nll.floored_log_probs`). Output: a
logit for "the model's arg-max at this pixel is wrong". The MLP's first linear layer starts at the identity, so training
starts from the log-probabilities themselves. Mispredicted pixels are up-weighted in the
binary cross-entropy (``pos_weight``); training uses AdamW and keeps the epoch with the best
balanced accuracy on held-out validation pixels.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segcal.calibrators.nll import floored_log_probs
from segcal.calibrators.stream import Progress
from segcal.outputs import Head

PREDICT_CHUNK = 2**18
"""Pixels per forward pass when predicting, bounding activation memory."""


def misprediction_features(logits: torch.Tensor, head: Head) -> torch.Tensor:
    """Classifier input: floored log-probabilities with classes last.

    ``[P, C]`` → ``[P, C']`` or ``[N, C, H, W]`` → ``[N, H, W, C']``.
    """
    lp = floored_log_probs(logits, head)
    return lp.movedim(1, -1) if lp.ndim == 4 else lp


class MispredictionMLP(nn.Module):
    """``[P, C']`` features → ``[P]`` logits of P(wrong); first layer initialised to identity."""

    def __init__(self, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.identity = nn.Linear(num_classes, num_classes)
        with torch.no_grad():
            self.identity.weight.copy_(torch.eye(num_classes))
            self.identity.bias.zero_()
        self.head = nn.Sequential(
            nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.identity(features)).squeeze(-1)

    @torch.no_grad()
    def predict_wrong(self, features: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Boolean ``[P]``: P(wrong) > ``threshold``, computed in chunks of ``PREDICT_CHUNK`` pixels."""
        cut = torch.logit(torch.tensor(threshold)).item()
        flagged = [self(chunk) > cut for chunk in features.split(PREDICT_CHUNK)]
        return torch.cat(flagged) if flagged else features.new_zeros(0, dtype=torch.bool)


def detection_metrics(flagged: torch.Tensor, wrong: torch.Tensor) -> dict[str, float]:
    """Quality of ``flagged [P]`` as a detector of ``wrong [P]`` (both boolean).

    ``wrong_precision`` is the share of flagged pixels that are really wrong (the classifier's
    accuracy on the pixels it calls wrong); ``wrong_recall`` / ``correct_recall`` are the
    shares of wrong / correct pixels it labels as such; ``balanced_accuracy`` is their mean.
    """
    tp = (flagged & wrong).sum().item()
    fp = (flagged & ~wrong).sum().item()
    fn = (~flagged & wrong).sum().item()
    tn = (~flagged & ~wrong).sum().item()

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    wrong_recall, correct_recall = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": 0.5 * (wrong_recall + correct_recall),
        "wrong_precision": ratio(tp, tp + fp),
        "wrong_recall": wrong_recall,
        "correct_recall": correct_recall,
        "flagged_fraction": ratio(tp + fp, tp + tn + fp + fn),
        "wrong_fraction": ratio(tp + fn, tp + tn + fp + fn),
        "pixels": float(tp + tn + fp + fn),
    }


@dataclass
class MispredictionTraining:
    """Hyper-parameters of :func:`train_misprediction_classifier` (defaults documented there)."""

    hidden: int = 64
    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-6
    wrong_weight: float | None = None
    threshold: float = 0.5


def train_misprediction_classifier(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: MispredictionTraining,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> tuple[MispredictionMLP, dict[str, float], list[dict[str, float]]]:
    """Train the misprediction MLP on ``(features [P, C'], wrong [P] bool)`` pairs.

    Loss: binary cross-entropy with the wrong pixels weighted by ``cfg.wrong_weight``
    (default: #correct / #wrong of the training pixels, i.e. inverse class frequency, so
    both outcomes weigh the same in total). AdamW (``lr``, ``weight_decay`` 1e-6 as in the
    paper), initial weights and shuffled mini-batches of ``batch_size`` pixels drawn with
    ``generator``,
    ``epochs`` epochs. Returns the model of the epoch with the best validation balanced
    accuracy (first one on ties), its validation :func:`detection_metrics` (plus
    ``best_epoch``, 1-based, and the ``pos_weight`` used) and the per-epoch history.
    """
    x, wrong = train
    n_wrong = int(wrong.sum())
    n_correct = len(wrong) - n_wrong
    if n_wrong == 0 or n_correct == 0:
        kind = "wrong" if n_wrong == 0 else "correct"
        raise ValueError(
            f"the model has no {kind} pixels among the selective-scaling training pixels: the"
            " misprediction classifier needs both correct and wrong predictions"
        )
    pos_weight = cfg.wrong_weight if cfg.wrong_weight is not None else n_correct / n_wrong
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        model = MispredictionMLP(x.shape[1], cfg.hidden).to(x.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    target = wrong.float()
    weight_of_wrong = torch.tensor(pos_weight, device=x.device)
    epochs = range(1, cfg.epochs + 1)
    best: tuple[float, int, dict, dict[str, float]] | None = None
    history: list[dict[str, float]] = []
    for epoch in progress(epochs, "selective scaling: misprediction classifier") if progress else epochs:
        model.train()
        order = torch.randperm(len(target), generator=generator).to(x.device)
        for idx in order.split(cfg.batch_size):
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), target[idx], pos_weight=weight_of_wrong)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        metrics = detection_metrics(model.predict_wrong(val[0], cfg.threshold), val[1])
        metrics["epoch"] = float(epoch)
        history.append(metrics)
        score = metrics["balanced_accuracy"]
        score = -1.0 if score != score else score  # NaN (a one-outcome validation set) ranks last
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()), metrics)
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    val_metrics = {**best[3], "best_epoch": float(best[1]), "pos_weight": float(pos_weight)}
    return model, val_metrics, history
