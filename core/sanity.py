"""Sanity checks for explanations (Adebayo et al. 2018): randomise the model, or the class, and watch.

Cascading model randomisation re-initialises the classifier head, then the stages from the deepest
one down (`core.stages`: every parameter a stage owns, so the last step leaves nothing pretrained), on
a *copy* of the network: the shared, cached model is never touched.
"""

import copy
from dataclasses import replace

import torch
from torch import nn

from core import stages
from core.errors import InvalidInputError
from core.models import LoadedModel


def cascade(model: LoadedModel) -> list[str]:
    """What each step of the cascade randomises: the head, then the stages (by name) deepest first."""
    return [model.spec.head, *(stage.name for stage in reversed(stages.of(model)))]


def randomized(model: LoadedModel, steps: int, *, seed: int = 0) -> LoadedModel:
    """A copy of `model` whose first `steps` cascade layers have fresh random weights.

    steps = 0 returns an untouched copy; steps = len(cascade(model)) randomises head and every stage.
    """
    with model.lock:
        order = [stages.head(model.module, model.spec.head), *reversed(stages.of(model))]
        if not 0 <= steps <= len(order):
            raise InvalidInputError(f"Randomisation steps must be between 0 and {len(order)}, got {steps}.")
        module = copy.deepcopy(model.module)
    parameters = dict(module.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for step in order[:steps]:
            for name in step.parameters:
                _reinitialise(name.rpartition(".")[2], parameters[name], generator)
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


def _reinitialise(name: str, parameter: nn.Parameter, generator: torch.Generator) -> None:
    if parameter.ndim >= 2:
        fan_in = parameter[0].numel()
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    elif name == "weight":  # norm layers' scale
        parameter.fill_(1.0)
    else:
        parameter.zero_()
