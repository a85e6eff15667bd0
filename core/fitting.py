"""The epoch loop of a training run: train, validate, keep the best weights, stop early or on request.

It knows nothing of backbones, strategies or datasets: `fit` trains any network on batches it is given,
with one optimiser group per (name, parameters, learning rate). `training` builds those for each
strategy and turns the result into a `RunResult`.
"""

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import InvalidInputError

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)
OPTIMIZERS = ("sgd", "adam", "adamw")
ENDINGS = ("completed", "early stopping", "stopped", "diverged")
STOPPED_EARLY = ("Training stopped before the first epoch ended: there is no checkpoint to keep. Train again and "
                 "let at least one epoch finish.")


class Schedule(Protocol):
    """The settings the loop reads (`training.TrainConfig` has them all)."""

    optimizer: str  # one of OPTIMIZERS
    lr_head: float  # the default learning rate of the optimiser
    momentum: float
    weight_decay: float
    epochs: int
    clip_norm: float | None
    patience: int | None


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's batches, in training mode
    train_accuracy: float  # in [0, 1], over the same batches
    val_loss: float
    val_accuracy: float
    seconds: float  # this epoch, validation included
    best: bool  # the lowest validation loss so far (the checkpoint that is kept)



@dataclass(frozen=True)
class OptimizerGroup:
    name: str  # "head", "backbone" or "network"
    lr: float
    weight_decay: float
    params: int  # number of scalar parameters



@dataclass(frozen=True)
class Fitted:
    history: tuple[EpochStats, ...]
    best_epoch: int
    ended: str
    groups: tuple[OptimizerGroup, ...]
    seconds: float



def fit(
    network: nn.Module,
    groups: Sequence[tuple[str, Sequence[nn.Parameter], float]],
    train_batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    batches_per_epoch: int,
    val_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    config: Schedule,
    on_epoch: Callable[[EpochStats], None] | None,
    report: Progress,
    stop: Callable[[], bool],
    device: torch.device,
) -> Fitted:
    """The epochs: train, validate, keep the weights of the lowest validation loss, stop early or on request."""
    optim = optimizer(groups, config)
    params = [p for g in optim.param_groups for p in g["params"]]
    history: list[EpochStats] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    ended, waited = "completed", 0
    started = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            began = time.perf_counter()
            train_mode(network)
            total, correct, seen = 0.0, 0, 0
            for step, (x, y) in enumerate(train_batches(epoch), start=1):
                if stop():
                    ended = "stopped"
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optim.zero_grad(set_to_none=True)
                logits = network(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                if config.clip_norm is not None:
                    nn.utils.clip_grad_norm_(params, config.clip_norm)
                optim.step()
                total += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(dim=1) == y).sum())
                seen += len(y)
                report((epoch - 1 + step / max(batches_per_epoch, 1)) / config.epochs,
                       f"Epoch {epoch} of {config.epochs}: batch {step} of {batches_per_epoch}")
            if ended == "stopped":
                break
            train_loss = total / max(seen, 1)
            if not math.isfinite(train_loss):
                ended = "diverged"  # keep the best epoch so far; the message suggests a lower learning rate
                break
            val_loss, val_accuracy, _ = score(network, val_batches(), device)
            best = val_loss < best_loss
            if best:
                best_loss, best_epoch, waited = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                waited += 1
            stats = EpochStats(epoch, train_loss, correct / max(seen, 1), val_loss, val_accuracy,
                               time.perf_counter() - began, best)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if config.patience is not None and waited >= config.patience:
                ended = "early stopping"
                break
    finally:
        network.eval()
        optim.zero_grad(set_to_none=True)
    if best_state is None:
        if ended == "diverged":
            raise InvalidInputError("Training diverged in the first epoch (the loss became NaN or infinite). Lower "
                                    "the learning rate or turn on gradient clipping.")
        raise InvalidInputError(STOPPED_EARLY)
    network.load_state_dict(best_state)
    summary = tuple(OptimizerGroup(g["name"], float(g["lr"]), float(g["weight_decay"]),
                                   sum(p.numel() for p in g["params"])) for g in optim.param_groups)
    return Fitted(tuple(history), best_epoch, ended, summary, time.perf_counter() - started)



def optimizer(groups: Sequence[tuple[str, Sequence[nn.Parameter], float]], config: Schedule) -> torch.optim.Optimizer:
    """An optimiser with one parameter group per (name, parameters, learning rate); empty groups are left out.

    Each group keeps its name under the key "name".
    """
    param_groups = [
        {"params": list(params), "lr": lr, "weight_decay": config.weight_decay, "name": name}
        for name, params, lr in groups if len(params)
    ]
    if not param_groups:
        raise InvalidInputError("Nothing to train: every parameter is frozen.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr_head, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr_head)
    return torch.optim.AdamW(param_groups, lr=config.lr_head)



def train_mode(network: nn.Module) -> None:
    """Training mode, except batch norms whose parameters are frozen: their running statistics stay as trained."""
    network.train()
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()


@torch.no_grad()
def score(network: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predictions) in eval mode."""
    network.eval()
    total, correct, seen, predicted = 0.0, 0, 0, []
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = network(x).float()
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        guess = logits.argmax(dim=1)
        correct += int((guess == y).sum())
        seen += len(y)
        predicted.append(guess.cpu().numpy())
    return total / max(seen, 1), correct / max(seen, 1), np.concatenate(predicted).astype(np.int64)


def predict(network: nn.Module, batches, device) -> np.ndarray:
    return score(network, batches, device)[2]

