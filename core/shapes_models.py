"""The two small offline models the project trains on the built-in shapes set: "Shapes CNN" and "Shapes ViT".

Their weights ship in assets/shapes_models/ as safetensors, beside a JSON that says how they were made;
scripts/train_shapes_models.py trains them again. The shapes set has a ground-truth mask per image, so every
explanation method can be scored on both architectures offline (heat inside the mask, pointing game).
`register()` adds the two backbones to core.registry; it is idempotent.
"""

from collections import OrderedDict
from pathlib import Path

from torch import nn

from core import registry
from core.datasets import SHAPES
from core.errors import WeightsUnavailableError

FOLDER = Path(__file__).resolve().parents[1] / "assets" / "shapes_models"
CLASSES = SHAPES[:4]  # datasets.shapes' default classes
SIZE = 64  # the models see the 128 px shapes resized to 64 px
MEAN = STD = (0.5, 0.5, 0.5)


def cnn() -> nn.Module:
    """Four 3x3 conv blocks (16, 32, 64, 64 channels), global average pooling, a Linear head; 8x8 last map."""
    layers, channels = [], 3
    for i, width in enumerate((16, 32, 64, 64)):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(*layers), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        classifier=nn.Linear(channels, len(CLASSES)),
    ))


def vit() -> nn.Module:
    """torchvision's VisionTransformer at 64 px: 8x8 tokens, 4 blocks of width 64 with 4 heads, a class token.

    A hybrid ViT (Dosovitskiy et al. 2021, section 3.1): the tokens are embedded by the Shapes CNN's first three
    conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool; each token sees 22 px around its 8 px patch) and a 1x1
    projection, instead of one 8x8 linear projection. The training script starts that stem from the trained
    Shapes CNN: from scratch, both the plain patchify ViT and a stride-2 convolutional stem stayed near chance
    (loss ln 4) for the 10-40 epochs a loaded 2-core CPU can afford. Which token informs the class is still
    decided by the four attention blocks alone, so the attention maps mean what they mean in any ViT.
    """
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=SIZE, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=len(CLASSES))
    model.conv_proj = nn.Sequential(OrderedDict(stem=cnn().features[:12], project=nn.Conv2d(64, 64, 1)))
    return model


ARCHITECTURES = {"shapes_cnn": cnn, "shapes_vit": vit}


def weights_file(name: str) -> Path:
    return FOLDER / f"{name}.safetensors"


def _build(name: str, pretrained: bool) -> nn.Module:
    model = ARCHITECTURES[name]()
    if pretrained:
        path = weights_file(name)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"The trained weights of {name} are missing: expected {path}. Train them again with "
                f"`python scripts/train_shapes_models.py`, or choose 'architecture only (random weights)'."
            )
        from safetensors.torch import load_file

        model.load_state_dict(load_file(path))
    return model


def _build_cnn(pretrained: bool) -> nn.Module:
    return _build("shapes_cnn", pretrained)


def _build_vit(pretrained: bool) -> nn.Module:
    return _build("shapes_vit", pretrained)


def specs() -> tuple[registry.BackboneSpec, registry.BackboneSpec]:
    common = dict(source="project", categories=CLASSES, input_size=(SIZE, SIZE),
                  resize_size=SIZE, mean=MEAN, std=STD)
    blocks = tuple(f"features.{i}" for i in (2, 6, 10, 14))  # the ReLU ending each conv block
    return (
        registry.BackboneSpec(name="shapes_cnn", title="Shapes CNN", build=_build_cnn, cam_layer=blocks[-1],
                              head="classifier", weights_file=weights_file("shapes_cnn"), stages=blocks, **common),
        registry.BackboneSpec(name="shapes_vit", title="Shapes ViT", build=_build_vit,
                              cam_layer="encoder.layers.encoder_layer_3.ln_1", head="heads.head",
                              weights_file=weights_file("shapes_vit"), fixed_size=True,
                              reshape=registry.vit_tokens_to_grid, family="transformer",
                              stages=tuple(f"encoder.layers.encoder_layer_{i}" for i in (0, 1, 2))
                              + ("encoder.layers.encoder_layer_3.ln_1",), **common),
    )


def register() -> None:
    """Add "Shapes CNN" and "Shapes ViT" to the registry (a second call does nothing)."""
    for spec in specs():
        if spec.name not in registry.names():
            registry.register(spec)
