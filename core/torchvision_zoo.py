"""Every torchvision classification builder as a backbone spec, from its DEFAULT weights enum (no download).

Categories, parameters, multiply-adds (`_ops`), acc@1, crop and resize sizes, interpolation, mean and std come
from the weights enum; `fixed_size` from its `min_size` (a network whose smallest input is its crop, ViT, Swin
and MaxViT, takes nothing else); the head, family and prefix tokens from assets/catalogue.json (read once on the
meta device by scripts/build_catalogue.py; derived here on the meta device when the file has no row). The
CAM layer, stages and token reshape are left for `core.layers` to find in the built network.
"""

import re
import warnings
from functools import cache, partial

from torch import nn

from core import catalogue, network_facts
from core.backbone_spec import BackboneSpec
from core.errors import WeightsUnavailableError
from core.weights_cache import hub_weights_path

SOURCE = "torchvision"


@cache
def names() -> tuple[str, ...]:
    """torchvision's classification builders (`list_models(module=torchvision.models)`), sorted."""
    from torchvision import models

    return tuple(sorted(models.list_models(module=models)))


def has(name: str) -> bool:
    return name in names()


def _weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def title(weights) -> str:
    """A display name from the weights enum's class: ResNet18_Weights -> "ResNet-18", MNASNet0_5 -> "MNASNet-0.5"."""
    text = type(weights).__name__.removesuffix("_Weights")
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=[A-Z]{2})(?=\d)", "-", text)  # ResNet18, VGG16
    text = re.sub(r"(?<!\d)(\d)_(\d)", r"\1.\2", text)  # 0_5 -> 0.5, 1_6GF -> 1.6GF
    text = re.sub(r"_(?=V\d)", "", text)  # MobileNet_V3 -> MobileNetV3
    return text.replace("_", "-")


def facts(name: str) -> dict:
    """The catalogue's row for `name`, or the same facts read from a meta-device build when it has none."""
    row = catalogue.row(SOURCE, name)
    if row is None:
        found = network_facts.torchvision_facts(name)
        row = dict(zip(catalogue.TORCHVISION_COLUMNS, catalogue.torchvision_row(found), strict=True))
    return row


def spec(name: str) -> BackboneSpec:
    """The spec of builder `name`, from metadata alone."""
    weights = _weights(name)
    preset, meta = weights.transforms(), weights.meta
    crop = preset.crop_size[0]
    row = facts(name)
    metrics = meta.get("_metrics", {})
    return BackboneSpec(
        name=name,
        title=title(weights),
        source=SOURCE,
        build=partial(build, name),
        head=row["head"],
        categories=tuple(meta["categories"]),
        weights_file=hub_weights_path(weights.url),
        weights_url=weights.url,
        input_size=(crop, crop),
        resize_size=preset.resize_size[0],
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
        fixed_size=tuple(meta.get("min_size", (1, 1))) == (crop, crop),
        params=meta.get("num_params"),
        gmacs=meta.get("_ops"),  # torchvision's `_ops` counts one multiply-add as one operation
        top1=metrics.get("ImageNet-1K", {}).get("acc@1"),
        family=row["family"],
        prefix_tokens=row["prefix_tokens"],
        label_set=next(iter(metrics), "").lower(),
    )


def build(name: str, pretrained: bool) -> nn.Module:
    """The network of builder `name`: random weights, or the DEFAULT weights through the builder itself.

    The builder applies what its weights need (Inception's and GoogLeNet's `transform_input`, their
    auxiliary classifiers), so nothing here depends on the architecture.

    Raises:
        WeightsUnavailableError: the weights are not in torch's hub cache and cannot be downloaded.
    """
    from torchvision.models import get_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "the default weight initialisation will change"
        if not pretrained:
            return get_model(name, weights=None)
        weights = _weights(name)
        try:
            return get_model(name, weights=weights, progress=False)
        except Exception as error:  # URLError, socket errors, hash mismatch, partial files
            path = hub_weights_path(weights.url)
            raise WeightsUnavailableError(
                f"Pretrained weights for {name} are not on this machine and could not be downloaded "
                f"({type(error).__name__}: {error}). Download {weights.url} on a machine with internet and put "
                f"the file '{path.name}' in the folder {path.parent}, or choose 'architecture only (random weights)'."
            ) from None
