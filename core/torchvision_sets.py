"""torchvision's labelled sets (need the internet the first time): opening one, reading its targets, and its
images as a lazy sequence of RGB pictures. core.datasets turns them into a Dataset."""

from collections.abc import Callable, Sequence
from pathlib import Path

NAMES = ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "STL10", "Imagenette")


def open_set(name: str, root: Path, *, train: bool, download: bool):
    """The torchvision dataset `name` (one of NAMES) in `root`, downloaded when missing and `download`.

    Raises whatever torchvision raises (URLError, RuntimeError("Dataset not found"), ...).
    """
    import torchvision.datasets as tvd

    builders: dict[str, Callable] = {
        "CIFAR10": lambda: tvd.CIFAR10(root, train=train, download=download),
        "CIFAR100": lambda: tvd.CIFAR100(root, train=train, download=download),
        "MNIST": lambda: tvd.MNIST(root, train=train, download=download),
        "FashionMNIST": lambda: tvd.FashionMNIST(root, train=train, download=download),
        "STL10": lambda: tvd.STL10(root, split="train" if train else "test", download=download),
        "Imagenette": lambda: _imagenette(tvd, root, train, download),
    }
    return builders[name]()


def targets(dataset) -> Sequence[int]:
    """The class index of every item, read without decoding the images where torchvision keeps them apart."""
    for attribute in ("targets", "labels"):
        values = getattr(dataset, attribute, None)
        if values is not None:
            return [int(v) for v in values]
    samples = getattr(dataset, "_samples", None)
    if samples is not None:
        return [int(label) for _, label in samples]
    return [int(dataset[i][1]) for i in range(len(dataset))]


class Images(Sequence):
    """A torchvision set's images, converted to RGB on access."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset[self.indices[index]][0].convert("RGB")


def _imagenette(tvd, root: Path, train: bool, download: bool):
    split = "train" if train else "val"
    try:
        return tvd.Imagenette(root, split=split, size="160px", download=download)
    except RuntimeError as error:
        if "already exists" in str(error):  # torchvision refuses to download over an existing folder
            return tvd.Imagenette(root, split=split, size="160px", download=False)
        raise
