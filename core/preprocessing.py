"""Pixels <-> tensors, as each backbone expects them, without cropping anything away.

The whole image is explained: CNNs get the full picture with its shorter side at the spec's
input size (aspect kept); fixed-size networks (ViT, Swin) get it resized to their square.
Heatmaps at the tensor's size therefore map back onto the whole image by a plain resize.
"""

import numpy as np
import torch
from PIL import Image

from core.registry import BackboneSpec

MAX_STRETCH = 4.0  # the longer side of a CNN input is at most this many times the shorter side

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


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
    return image.convert("RGB").resize((width, height), _FILTERS.get(spec.interpolation, Image.Resampling.BILINEAR))


def to_tensor(image: Image.Image, spec: BackboneSpec) -> torch.Tensor:
    """(1, 3, H, W) float32, normalised with the spec's mean and std."""
    array = np.asarray(resize(image, spec), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


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
