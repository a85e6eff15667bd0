"""Shared fixtures: the offline Lite0 backbone, sample photos, and a tiny CNN for slow methods."""

import io
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from core import models, queueing, registry, runtime  # noqa: E402

runtime.configure_threads()
SAMPLES = ROOT / "assets" / "samples"
TINY = "tiny_cnn_for_tests"


def _tiny_cnn(pretrained: bool) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 10),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


if TINY not in registry.names():
    registry.register(
        registry.BackboneSpec(
            name=TINY, title="Tiny CNN (tests)", source="tests", build=_tiny_cnn, cam_layer="3", head="7",
            categories=tuple(f"class {i}" for i in range(10)), weights_file=None, input_size=(64, 64),
            resize_size=72,
        )
    )


TINY_VIT = "tiny_vit_for_tests"


def _tiny_vit(pretrained: bool) -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


if TINY_VIT not in registry.names():
    registry.register(
        registry.BackboneSpec(
            name=TINY_VIT, title="Tiny ViT (tests)", source="tests", build=_tiny_vit,
            cam_layer="encoder.layers.encoder_layer_1.ln_1", head="heads.head",
            categories=tuple(f"class {i}" for i in range(10)), weights_file=None, input_size=(64, 64),
            resize_size=72, fixed_size=True, reshape=registry.vit_tokens_to_grid, family="transformer",
        )
    )


@pytest.fixture(scope="session")
def tiny_vit() -> models.LoadedModel:
    return models.load(TINY_VIT, device="cpu")


@pytest.fixture(scope="session")
def lite0() -> models.LoadedModel:
    return models.load("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def tiny() -> models.LoadedModel:
    return models.load(TINY, device="cpu")


def sample(name: str) -> Image.Image:
    return Image.open(SAMPLES / f"{name}.jpg").convert("RGB")


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / f"{name}.jpg").read_bytes()


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


@pytest.fixture
def chelsea() -> Image.Image:
    return sample("chelsea")


@pytest.fixture
def gate(monkeypatch) -> queueing.SlotQueue:
    """A private heavy-work gate with `slots` set by the test (the process-wide one is left alone)."""
    from dashboard import cache  # here, not at the top: non-dashboard tests import this module too

    made = queueing.SlotQueue(1)
    monkeypatch.setattr(cache, "heavy_gate", lambda: made)
    return made


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The format of every real decode of pixels (Pillow's ImageFile.load with tiles left to decode) from now on."""
    from PIL import ImageFile

    seen: list[str] = []
    original = ImageFile.ImageFile.load

    def load(self):
        if self.tile:
            seen.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen
