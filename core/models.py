"""Turning a backbone name into a ready, shareable network."""

import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from core import layers, registry, shapes_models
from core.errors import DeviceError
from core.registry import BackboneSpec
from core.runtime import resolve_device


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network in eval mode with frozen parameters, safe to share between threads.

    Every forward pass on `module` must hold `lock`: CAM methods attach hooks for the length of a
    call, and two threads on one module would see each other's hooks. core's own functions take
    the lock themselves (it is re-entrant).
    """

    spec: BackboneSpec
    module: nn.Module
    device: torch.device
    pretrained: bool
    params: int
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def categories(self) -> tuple[str, ...]:
        return self.spec.categories

    @property
    def label(self) -> str:
        """Display name, with a warning when the weights are random."""
        return self.spec.title if self.pretrained else f"{self.spec.title} (random weights: meaningless predictions)"


def load(name: str, *, device: str = "auto", pretrained: bool = True) -> LoadedModel:
    """Build the named backbone, move it to `device`, put it in eval mode and freeze it.

    Raises:
        UnknownModelError: the name is not registered.
        WeightsUnavailableError: pretrained weights are not on disk and cannot be downloaded;
            the message names the file and the folder to put it in.
        DeviceError: CUDA requested without a GPU, or out of GPU memory.
    """
    spec = registry.get(name)
    target = resolve_device(device)
    module = spec.build(pretrained)
    module.eval()
    module.requires_grad_(False)
    spec = layers.complete(spec, module)  # a CAM layer and stages the registry left empty, read from the network
    try:
        module.to(target)
        if target.type == "cuda":
            module.to(memory_format=torch.channels_last)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise DeviceError(f"Not enough GPU memory to load {spec.title}. Close other models or use the CPU.") from None
    params = sum(p.numel() for p in module.parameters())
    return LoadedModel(spec=spec, module=module, device=target, pretrained=pretrained, params=params)


def weights_available(name: str) -> bool:
    """Whether `load(name)` with pretrained weights works offline (the file, or the hub cache entry, is here)."""
    return registry.weights_here(registry.get(name))


shapes_models.register()  # the project's own offline backbones (assets/shapes_models) beside the zoo's
