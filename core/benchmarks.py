"""Speed and size of backbones: forward latency with a sound method, parameters, multiply-adds."""

import statistics
import time
from functools import lru_cache

import torch

from core.models import LoadedModel


def latency_ms(model: LoadedModel, tensor: torch.Tensor, *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of one inference forward pass, in milliseconds (CUDA synchronised).

    Holds the model's lock, so a concurrent session's work does not land inside a timed region.
    """
    batch = tensor.to(model.device)
    times = []
    with model.lock, torch.inference_mode():
        for index in range(warmup + repeats):
            _synchronize(model.device)
            started = time.perf_counter()
            model.module(batch)
            _synchronize(model.device)
            if index >= warmup:
                times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def gmacs(model: LoadedModel) -> float:
    """Multiply-adds per image at the spec's input size, in billions.

    torchvision's metadata (`_ops`, one multiply-add = one operation) when it has it, otherwise
    counted with torch.utils.flop_counter (which counts two FLOPs per multiply-add).
    """
    if model.spec.gmacs is not None:
        return float(model.spec.gmacs)
    return _counted_gmacs(model.name, model.pretrained, model)


@lru_cache(maxsize=32)
def _counted_gmacs(name: str, pretrained: bool, model: LoadedModel) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    height, width = model.spec.input_size
    dummy = torch.zeros(1, 3, height, width, device=model.device)
    counter = FlopCounterMode(display=False)
    with model.lock, torch.inference_mode(), counter:
        model.module(dummy)
    return counter.get_total_flops() / 2 / 1e9


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
