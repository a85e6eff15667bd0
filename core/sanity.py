"""Sanity checks for explanations (Adebayo et al. 2018): randomise the model, or the class, and watch.

Cascading model randomisation re-initialises the classifier head, then the stages from the deepest
one down, on a *copy* of the network: the shared, cached model is never touched.
"""

import copy
from dataclasses import replace

import torch
from torch import nn

from core import hooks
from core.errors import InvalidInputError
from core.models import LoadedModel


def cascade(model: LoadedModel) -> list[str]:
    """The layers randomised by each step of the cascade: the head, then the stages deepest first."""
    order = [model.spec.head, *reversed(model.spec.stages)]
    return list(dict.fromkeys(order))  # a stage may repeat the head's path: keep each once


def randomized(model: LoadedModel, steps: int, *, seed: int = 0) -> LoadedModel:
    """A copy of `model` whose first `steps` cascade layers have fresh random weights.

    steps = 0 returns an untouched copy; steps = len(cascade(model)) randomises head and every stage.
    """
    layers = cascade(model)
    if not 0 <= steps <= len(layers):
        raise InvalidInputError(f"Randomisation steps must be between 0 and {len(layers)}, got {steps}.")
    with model.lock:
        module = copy.deepcopy(model.module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path in layers[:steps]:
            for sub in hooks.find(module, path).modules():
                _reinitialise(sub, generator)
    module.eval()
    module.requires_grad_(False)
    return replace(model, module=module, pretrained=False, lock=type(model.lock)())


def random_target(model: LoadedModel, *, avoid: int, seed: int = 0) -> int:
    """A class index other than `avoid`, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        index = int(torch.randint(len(model.categories), (1,), generator=generator))
        if index != avoid:
            return index


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    for name, parameter in module.named_parameters(recurse=False):
        if parameter.ndim >= 2:
            fan_in = parameter[0].numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        elif name == "weight":  # norm layers' scale
            parameter.fill_(1.0)
        else:
            parameter.zero_()
