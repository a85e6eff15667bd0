"""Two small CNNs trained from scratch, the baselines a transfer-learning run is compared with.

`BASELINES` says how to build each and where its layers are; `baseline_spec` gives a trained
baseline the spec the rest of `core` reads (CAMs, predictions, export).
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from core.registry import BackboneSpec

def small_cnn(num_classes: int) -> nn.Module:
    """Two 3x3 convolutions (16 and 32 channels) with ReLU and max pooling, then a Linear on a 4x4 pooled map."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()),
            pool2=nn.MaxPool2d(2),
        )),
        pool=nn.AdaptiveAvgPool2d(4),
        flatten=nn.Flatten(),
        classifier=nn.Linear(32 * 16, num_classes),
    ))


def deeper_cnn(num_classes: int) -> nn.Module:
    """Four conv -> batch norm -> ReLU blocks (32-64-128-128 channels), global pooling, dropout, a Linear."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(OrderedDict(
        features=nn.Sequential(OrderedDict(
            block1=block(3, 32), pool1=nn.MaxPool2d(2),
            block2=block(32, 64), pool2=nn.MaxPool2d(2),
            block3=block(64, 128), pool3=nn.MaxPool2d(2), drop3=nn.Dropout2d(0.1),
            block4=block(128, 128),
        )),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        dropout=nn.Dropout(0.3),
        classifier=nn.Linear(128, num_classes),
    ))


@dataclass(frozen=True)
class Baseline:
    """A from-scratch architecture: how to build it and where its layers are."""

    name: str
    title: str
    build: Callable[[int], nn.Module]  # build(num_classes)
    cam_layer: str  # the last convolution block
    head: str
    stages: tuple[str, ...]


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("small_cnn", "Small CNN (2 conv layers, from scratch)", small_cnn, "features.conv2", "classifier",
                 ("features.conv1", "features.conv2")),
        Baseline("deeper_cnn", "Deeper CNN (batch norm, dropout, from scratch)", deeper_cnn, "features.block4",
                 "classifier", tuple(f"features.block{i}" for i in range(1, 5))),
    )
}



def no_builder(pretrained: bool) -> nn.Module:
    """The `build` of a trained model's spec: there is nothing to download or rebuild from."""
    raise RuntimeError("A trained model has no builder: rebuild it from its export with core.checkpoints.load.")


def baseline_spec(name: str, classes: Sequence[str], size: int) -> BackboneSpec:
    """The spec of a from-scratch baseline: inputs `size` x `size`, scaled to [-1, 1]."""
    baseline = BASELINES[name]
    return BackboneSpec(
        name=name, title=baseline.title, source="trained here", build=no_builder, cam_layer=baseline.cam_layer,
        head=baseline.head, categories=tuple(classes), weights_file=None, input_size=(size, size), resize_size=size,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", fixed_size=True, stages=baseline.stages,
    )

