"""What the layers of a network output for an input, what its first filters look like, and how it is built.

- `layers` / `cam_layers`: every named module with its output shape; which layers CAMs can use.
- `feature_maps`: the most active channels of one layer, normalised, with a mosaic.
- `first_conv_filters`: the RGB filters of the first convolution, as tiles and a mosaic.
- `architecture`: a table of modules with the parameters each owns, totals, and parameters per stage
  (the stages of `core.stages`, the ones fine-tuning unfreezes).

Every forward pass holds the model's lock and runs under `torch.inference_mode()`; hooks come from
`hooks.capture` and are gone when the call returns, even if it raises.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from core import hooks, layout, preprocessing, stages
from core.errors import InvalidInputError, LayerNotFoundError
from core.models import LoadedModel

_GAP = 2  # pixels between the tiles of a mosaic
_MIN_TILE = 48  # tiles smaller than this are enlarged by an integer factor (nearest neighbour)


# ---------------------------------------------------------------------------------------------
# Layers and their output shapes


@dataclass(frozen=True)
class LayerInfo:
    name: str  # dotted path, usable as a CAM layer
    type: str  # module class name
    output_shape: tuple[int, ...] | None  # for the probe input, batch included; None if not a tensor
    params: int  # parameters owned by this module and its children
    cam_ready: bool  # a (B, C, H, W) map (after the spec's reshape for token models)


def layers(model: LoadedModel, image: Image.Image | None = None) -> list[LayerInfo]:
    """Every named module with its output shape for `image` (default: a grey image of the spec's size).

    One inference pass with temporary hooks, under the model's lock.
    """
    named = [(name, module) for name, module in model.module.named_modules() if name]
    outputs = _outputs(model, image, [name for name, _ in named])
    result = []
    for name, module in named:
        output = outputs.get(name)
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        ready = isinstance(output, Tensor) and _spatial(model, output) is not None
        result.append(LayerInfo(name, type(module).__name__, shape, sum(p.numel() for p in module.parameters()), ready))
    return result


def cam_layers(model: LoadedModel) -> list[str]:
    """Names of the layers a CAM can be computed on, in network order; the spec's default included."""
    names = [info.name for info in layers(model) if info.cam_ready]
    if model.spec.cam_layer not in names:
        names.append(model.spec.cam_layer)
    return names


# ---------------------------------------------------------------------------------------------
# Feature maps of one layer


@dataclass(frozen=True, eq=False)
class FeatureMaps:
    """The most active channels of one layer for one image."""

    layer: str
    output_shape: tuple[int, ...]  # the layer's raw output, batch included (tokens for ViT)
    map_shape: tuple[int, int, int]  # (C, h, w) after the spec's reshape: all channels of the layer
    channels: tuple[int, ...]  # channel indices, strongest mean activation first
    means: np.ndarray  # (n,) float32 mean activation of each of `channels`, descending
    maps: np.ndarray  # (n, h, w) float32, each channel min-max normalised to [0, 1] (a flat channel is 0)
    grid: np.ndarray  # (H, W, 3) uint8 grey mosaic of `maps`, row by row, white gaps between tiles


def feature_maps(model: LoadedModel, image: Image.Image, *, layer: str | None = None, limit: int = 16) -> FeatureMaps:
    """The `limit` channels of `layer` (default: the spec's CAM layer) with the highest mean activation.

    Token models' outputs are turned into (C, h, w) maps with the spec's reshape.

    Raises:
        LayerNotFoundError: no such layer, or its output is not a spatial map (a vector, a tuple, 1x1).
        InvalidInputError: `limit` below 1.
    """
    if limit < 1:
        raise InvalidInputError(f"Show at least one channel, got limit={limit}.")
    layer = layer or model.spec.cam_layer
    output = _outputs(model, image, [layer]).get(layer)
    if not isinstance(output, Tensor):
        what = "is not called by the forward pass" if output is None else f"returns a {type(output).__name__}"
        raise LayerNotFoundError(
            f"Layer '{layer}' {what}, not a feature map. Choose a layer marked as a spatial map, "
            f"e.g. '{model.spec.cam_layer}'."
        )
    spatial = _spatial(model, output)
    if spatial is None:
        raise LayerNotFoundError(
            f"Layer '{layer}' outputs shape {tuple(output.shape)}, not a spatial map (B, C, H, W) with H*W > 1. "
            f"Choose a convolutional or block layer, e.g. '{model.spec.cam_layer}'."
        )
    activations = spatial[0].float().cpu()  # (C, h, w)
    means = activations.mean(dim=(1, 2))
    strongest = torch.argsort(means, descending=True, stable=True)[:limit]
    chosen = activations[strongest]
    low = chosen.amin(dim=(1, 2), keepdim=True)
    span = chosen.amax(dim=(1, 2), keepdim=True) - low
    maps = torch.where(span > 0, (chosen - low) / span.clamp_min(1e-12), torch.zeros_like(chosen)).numpy()
    return FeatureMaps(
        layer=layer,
        output_shape=tuple(output.shape),
        map_shape=tuple(activations.shape),
        channels=tuple(strongest.tolist()),
        means=means[strongest].numpy().astype(np.float32),
        maps=maps.astype(np.float32),
        grid=_mosaic(np.repeat(maps[..., None], 3, axis=-1)),
    )


# ---------------------------------------------------------------------------------------------
# First-layer filters


@dataclass(frozen=True, eq=False)
class Filters:
    """The filters of the first convolution that reads the RGB image."""

    layer: str  # dotted path of the nn.Conv2d
    count: int  # number of filters (output channels)
    kernel_size: tuple[int, int]  # (height, width)
    tiles: np.ndarray  # (count, kh, kw, 3) float32 RGB, each filter min-max normalised to [0, 1]
    grid: np.ndarray  # (H, W, 3) uint8 mosaic of the tiles, enlarged (nearest neighbour), white gaps


def first_conv_filters(model: LoadedModel) -> Filters:
    """The first `nn.Conv2d` (in module order) whose filters have 3 input channels, as RGB tiles.

    Raises:
        LayerNotFoundError: the network has no such convolution.
    """
    for name, module in model.module.named_modules():
        if isinstance(module, nn.Conv2d) and module.weight.shape[1] == 3:
            break
    else:
        raise LayerNotFoundError(
            f"{model.spec.title} has no Conv2d reading the 3 RGB channels, so there are no colour filters to show."
        )
    weights = module.weight.detach().float().cpu()  # (count, 3, kh, kw)
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    span = weights.amax(dim=(1, 2, 3), keepdim=True) - low
    tiles = torch.where(span > 0, (weights - low) / span.clamp_min(1e-12), torch.full_like(weights, 0.5))
    tiles = tiles.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    return Filters(
        layer=name,
        count=int(weights.shape[0]),
        kernel_size=(int(weights.shape[2]), int(weights.shape[3])),
        tiles=tiles,
        grid=_mosaic(tiles),
    )


# ---------------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class ModuleRow:
    name: str  # dotted path; "" is the whole network
    type: str  # module class name
    output_shape: tuple[int, ...] | None  # for the probe input, batch included; None if not a tensor or not called
    params: int  # parameters this module owns itself (not its children's): the column sums to the total
    trainable: int  # of `params`, those with requires_grad


@dataclass(frozen=True)
class Architecture:
    name: str  # registry name
    title: str
    input_shape: tuple[int, ...]  # the probe tensor, (1, 3, H, W)
    rows: tuple[ModuleRow, ...]  # every module in network order, the root first
    total_params: int  # equals sum(p.numel() for p in module.parameters())
    trainable_params: int
    stages: tuple[stages.Stage, ...]  # the backbone's stages then the head; those without parameters left out


def architecture(model: LoadedModel, image: Image.Image | None = None) -> Architecture:
    """Modules, output shapes for `image` (default: a grey image of the spec's size), and parameter counts.

    Stages are `core.stages.of(model)` followed by the head: their parameters sum to the total.
    """
    image = image if image is not None else _grey(model)
    named = list(model.module.named_modules())
    outputs = _outputs(model, image, [name for name, _ in named])
    seen: set[int] = set()  # a parameter shared by two modules is counted once, at its first owner
    rows = []
    for name, module in named:
        owned = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in owned)
        output = outputs.get(name)
        rows.append(
            ModuleRow(
                name=name,
                type=type(module).__name__,
                output_shape=tuple(output.shape) if isinstance(output, Tensor) else None,
                params=sum(p.numel() for p in owned),
                trainable=sum(p.numel() for p in owned if p.requires_grad),
            )
        )
    with model.lock:
        parts = (*stages.of(model), stages.head(model.module, model.spec.head))
    return Architecture(
        name=model.spec.name,
        title=model.spec.title,
        input_shape=tuple(preprocessing.to_tensor(image, model.spec).shape),
        rows=tuple(rows),
        total_params=sum(row.params for row in rows),
        trainable_params=sum(row.trainable for row in rows),
        stages=tuple(part for part in parts if part.params > 0),
    )


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _grey(model: LoadedModel) -> Image.Image:
    height, width = model.spec.input_size
    return Image.new("RGB", (width, height), (128, 128, 128))


def _outputs(model: LoadedModel, image: Image.Image | None, paths: list[str]) -> dict[str, object]:
    """The outputs of the modules at `paths` for one forward pass on `image` (detached tensors)."""
    tensor = preprocessing.to_tensor(image if image is not None else _grey(model), model.spec).to(model.device)
    with model.lock, hooks.capture(model.module, paths) as captured, torch.inference_mode():
        model.module(tensor)
    return dict(captured)


def _spatial(model: LoadedModel, output: Tensor) -> Tensor | None:
    """`output` as a (B, C, H, W) map with H*W > 1 (after the spec's reshape for token layouts), else None."""
    try:
        output = layout.to_maps(model.spec, output)
    except (RuntimeError, ValueError):
        return None
    if output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
        return output
    return None


def _mosaic(tiles: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) floats in [0, 1] -> (H, W, 3) uint8, row by row, tiles enlarged to >= _MIN_TILE px.

    About square: ceil(sqrt(n)) columns, or a few more when that fills the last row (32 tiles: 8 x 4).
    """
    count, height, width, _ = tiles.shape
    scale = max(1, math.ceil(_MIN_TILE / max(height, width)))
    columns = math.ceil(math.sqrt(count))
    columns = next((c for c in range(columns, 2 * columns) if count % c == 0), columns)  # no ragged last row
    rows = math.ceil(count / columns)
    tile_h, tile_w = height * scale, width * scale
    grid = np.full(
        (rows * tile_h + (rows - 1) * _GAP, columns * tile_w + (columns - 1) * _GAP, 3), 255, dtype=np.uint8
    )
    pixels = np.rint(np.clip(tiles, 0.0, 1.0) * 255.0).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    for index, tile in enumerate(pixels):
        top, left = divmod(index, columns)
        top, left = top * (tile_h + _GAP), left * (tile_w + _GAP)
        grid[top : top + tile_h, left : left + tile_w] = tile
    return grid
