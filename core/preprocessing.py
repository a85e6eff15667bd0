"""Pixels -> tensors, as each backbone expects them: the one place that resizes and normalises network inputs.

Three uses, one set of rules (the spec's `interpolation`, `mean`, `std`, `input_size` and `fixed_size`):

- one image to explain or classify (`to_tensor`): the whole image, nothing cropped away. CNNs get it with
  its shorter side at the spec's input size (aspect kept); fixed-size networks (ViT, Swin) get it resized
  to their square. Heatmaps at the tensor's size therefore map back onto the whole image by a plain resize.
- a dataset in batches (`Squares`, `square`): every picture resized whole to one square, as uint8 pixels
  (a quarter of the bytes between processes) that `normalise` turns into the network's units, on the
  device if need be.
- training (`Augment`): the same square, optionally augmented with torchvision's transforms.v2
  (RandomResizedCrop, RandomHorizontalFlip) drawn from the caller's seeded generator. Without
  augmentation (validation, test) it is exactly the batch path.
"""

import functools
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

from core.errors import InvalidInputError
from core.registry import BackboneSpec

MAX_STRETCH = 4.0  # the longer side of a CNN input is at most this many times the shorter side
CROP_SCALE = (0.5, 1.0)  # training's random resized crop keeps 50-100 % of the area ...
CROP_RATIO = (3 / 4, 4 / 3)  # ... at an aspect ratio in this range

# spec.interpolation -> (Pillow's filter, torchvision's mode); anything else is bilinear
_FILTERS = {
    "bilinear": (Image.Resampling.BILINEAR, v2.InterpolationMode.BILINEAR),
    "bicubic": (Image.Resampling.BICUBIC, v2.InterpolationMode.BICUBIC),
}
INTERPOLATIONS = tuple(_FILTERS)
_TORCH_RNG = threading.Lock()  # transforms.v2 draws from torch's global generator: one borrower at a time


def _unlocked_in_child() -> None:
    """A DataLoader worker forked while another thread held the lock must not start with it held."""
    global _TORCH_RNG
    _TORCH_RNG = threading.Lock()


os.register_at_fork(after_in_child=_unlocked_in_child)


def _filter(spec: BackboneSpec) -> Image.Resampling:
    return _FILTERS.get(spec.interpolation, _FILTERS["bilinear"])[0]


def input_size(image_size: tuple[int, int], spec: BackboneSpec) -> tuple[int, int]:
    """(height, width) of the tensor the network gets for an image of (width, height)."""
    if spec.fixed_size:
        return spec.input_size
    width, height = image_size
    short = spec.input_size[0]
    aspect = min(max(width, height) / min(width, height), MAX_STRETCH)
    long = int(round(short * aspect))
    return (short, long) if width >= height else (long, short)


def resize(image: Image.Image, spec: BackboneSpec) -> Image.Image:
    """The whole image at the network's input size (no crop)."""
    height, width = input_size(image.size, spec)
    return image.convert("RGB").resize((width, height), _filter(spec))


def pixels(picture: Image.Image) -> Tensor:
    """(3, H, W) uint8 RGB pixels of a picture (a channels-last view, as DataLoader workers pass it)."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


@functools.lru_cache(maxsize=64)
def _moments(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1))


def normalise(pixels: Tensor, spec: BackboneSpec) -> Tensor:
    """float32 in the network's units from uint8 pixels (3, H, W) or (B, 3, H, W), on their device:
    scaled to [0, 1], then (x - mean) / std per channel. The input is not modified."""
    mean, std = _moments(tuple(spec.mean), tuple(spec.std), pixels.device)
    return pixels.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)


def to_tensor(image: Image.Image, spec: BackboneSpec) -> Tensor:
    """(1, 3, H, W) float32 of the whole image at `input_size`, normalised with the spec's mean and std."""
    return normalise(pixels(resize(image, spec)), spec).contiguous().unsqueeze(0)


def side(spec: BackboneSpec, size: int | None = None) -> int:
    """The square side a dataset is resized to: `size`, or the spec's input size.

    Raises:
        InvalidInputError: a fixed-size network (ViT, Swin) asked for another size.
    """
    own = spec.input_size[0]
    size = own if size is None else int(size)
    if spec.fixed_size and (size, size) != tuple(spec.input_size):
        raise InvalidInputError(f"{spec.title} only takes {own} px images, got {size} px; use {own}.")
    return size


def square(picture: Image.Image, spec: BackboneSpec, size: int | None = None) -> Tensor:
    """(3, S, S) uint8 pixels of the whole picture resized to the square `side(spec, size)` (no crop)."""
    size = side(spec, size)
    return pixels(picture.convert("RGB").resize((size, size), _filter(spec)))


class Squares(TorchDataset):
    """A dataset's pictures as (3, S, S) squares (`square`): uint8 pixels, or normalised float32 when
    `normalised` (what a network takes directly)."""

    def __init__(self, pictures: Sequence[Image.Image], spec: BackboneSpec, size: int | None = None,
                 *, normalised: bool = False) -> None:
        self.pictures, self.spec, self.size, self.normalised = pictures, spec, side(spec, size), normalised

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> Tensor:
        square_pixels = square(self.pictures[index], self.spec, self.size)
        return normalise(square_pixels, self.spec) if self.normalised else square_pixels


class Augment:
    """Training inputs: (3, S, S) normalised float32 squares, augmented with torchvision's transforms.v2.

    `crop`: a RandomResizedCrop of 50-100 % of the area at an aspect of 3/4-4/3, resized to the square
    with the spec's interpolation (instead of resizing the whole picture). `flip`: a horizontal flip half
    of the time. Neither (validation, test): exactly `normalise(square(...))`, and `rng` is not used.

    The random draws come from `rng` (a numpy Generator the caller seeds, per DataLoader worker too): one
    seed per picture runs the transforms on torch's global generator, whose state is restored afterwards,
    so the same seed gives the same batches and the rest of the program's random numbers are untouched.
    """

    def __init__(self, spec: BackboneSpec, size: int | None = None, *, crop: bool = False, flip: bool = False) -> None:
        self.spec, self.size, self.crop = spec, side(spec, size), crop
        steps = []
        if crop:
            mode = _FILTERS.get(spec.interpolation, _FILTERS["bilinear"])[1]
            steps.append(v2.RandomResizedCrop((self.size, self.size), scale=CROP_SCALE, ratio=CROP_RATIO,
                                              interpolation=mode))
        if flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        self.transform = v2.Compose(steps) if steps else None

    @property
    def random(self) -> bool:
        """Whether the output depends on the generator (False for validation and test)."""
        return self.transform is not None

    def __call__(self, picture: Image.Image, rng: np.random.Generator) -> Tensor:
        picture = picture.convert("RGB")
        if not self.crop:
            picture = picture.resize((self.size, self.size), _filter(self.spec))
        if self.transform is not None:
            seed = int(rng.integers(2**63))
            with _TORCH_RNG:
                state = torch.get_rng_state()
                try:
                    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's stays as it is
                    picture = self.transform(picture)
                finally:
                    torch.set_rng_state(state)
        return normalise(pixels(picture), self.spec)


def describe(spec: BackboneSpec) -> str:
    """The preprocessing in words, for the UI and the README."""
    if spec.fixed_size:
        size = f"resize the whole image to {spec.input_size[1]}x{spec.input_size[0]}"
    else:
        size = (
            f"resize the whole image so its shorter side is {spec.input_size[0]} px, keeping the aspect "
            f"(longer side at most {MAX_STRETCH:.0f}x), no crop"
        )
    mean = ", ".join(f"{m:.3f}" for m in spec.mean)
    std = ", ".join(f"{s:.3f}" for s in spec.std)
    return f"{size}; {spec.interpolation} interpolation; scale to [0, 1]; normalise mean=({mean}) std=({std})."
