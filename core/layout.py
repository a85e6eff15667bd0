"""Token layouts: a layer's output as (B, C, H, W) feature maps. The one place the spec's `reshape` is applied.

A backbone spec says how its tokens are laid out with `BackboneSpec.reshape` (ViT: (B, 1 + H*W, C) with a class
token; torchvision's Swin: channels-last (B, H, W, C)). Not every layer of a token model is laid out that way
(a patch-embedding convolution already outputs (B, C, H, W)), so whether a given output needs the reshape is
read from its shape, here. CAMs, feature maps and concepts all turn a layer's output into maps through this module.

The reshapes `core.layers.find` reads from a network are records of this module: `Tokens(prefix, aspect)` (class,
distillation and register tokens dropped, non-square grids) and `ChannelsLast()`; each says which outputs it
applies to (`applies`), so a spec whose reshape is one of them needs no shape guess here.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from core import hooks
from core.errors import LayerNotFoundError
from core.registry import BackboneSpec

if TYPE_CHECKING:  # core.models builds specs through core.layers, which reads layouts from here
    from core.models import LoadedModel

Reshape = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Tokens:
    """(B, prefix + h*w, C) tokens -> (B, C, h, w): the `prefix` leading tokens (class, distillation, register
    tokens) dropped, the rest row by row. `aspect` is the (h, w) grid `core.layers.find` saw; at another input
    size the grid keeps its aspect ratio (a square grid stays square)."""

    prefix: int
    aspect: tuple[int, int]

    def grid(self, count: int) -> tuple[int, int] | None:
        """The (h, w) grid of `count` tokens, or None when they do not make one."""
        patches = count - self.prefix
        height, width = self.aspect
        if patches == height * width:
            return height, width
        unit = math.gcd(height, width)
        a, b = height // unit, width // unit
        scale = math.isqrt(max(patches, 0) // (a * b)) if patches > 0 else 0
        return (scale * a, scale * b) if scale > 0 and scale * scale * a * b == patches else None

    def applies(self, output: Tensor) -> bool:
        return output.ndim == 3 and self.grid(output.shape[1]) is not None

    def __call__(self, tokens: Tensor) -> Tensor:
        grid = self.grid(tokens.shape[1])
        if grid is None:
            raise LayerNotFoundError(
                f"{tokens.shape[1]} tokens do not make a {self.aspect[0]}x{self.aspect[1]}-shaped grid after "
                f"{self.prefix} prefix token(s): choose another layer."
            )
        return tokens[:, self.prefix:, :].reshape(tokens.shape[0], *grid, tokens.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ChannelsLast:
    """(B, H, W, C) maps (Swin, MaxViT and ConvNeXt-style blocks) -> (B, C, H, W). Applies to a 4-d output whose
    last dimension is its largest, the channels (a channels-first output beside it keeps its layout)."""

    def applies(self, output: Tensor) -> bool:
        return output.ndim == 4 and output.shape[3] > max(output.shape[1], output.shape[2])

    def __call__(self, maps: Tensor) -> Tensor:
        return maps.permute(0, 3, 1, 2)


def is_tokens(spec: BackboneSpec, output: Tensor) -> bool:
    """Whether `output` is laid out as tokens or channels-last, so the spec's reshape makes it maps."""
    if spec.reshape is None:
        return False
    if hasattr(spec.reshape, "applies"):  # a layout record (Tokens, ChannelsLast) says which outputs it reshapes
        return spec.reshape.applies(output)
    if output.ndim == 3:
        return True
    # (B, H, W, C) with a square input: H == W, and C differs from H (Swin's stages)
    return output.ndim == 4 and output.shape[1] == output.shape[2] != output.shape[3]


def reshape_for(spec: BackboneSpec, output: Tensor) -> Reshape | None:
    """The reshape that makes `output` (B, C, H, W) maps: the spec's for token layouts, None when it already is."""
    return spec.reshape if is_tokens(spec, output) else None


def to_maps(spec: BackboneSpec, output: Tensor) -> Tensor:
    """`output` as (B, C, H, W) maps (reshaped when laid out as tokens; other shapes are returned as they are)."""
    reshape = reshape_for(spec, output)
    return reshape(output) if reshape is not None else output


def layer_maps(model: "LoadedModel", module: nn.Module, tensor: Tensor) -> tuple[Tensor, Reshape | None]:
    """The output of `module` for `tensor` (one inference pass, holding the model's lock) as maps, and the
    reshape that made them (None: the layer already outputs maps), for a library that reshapes by itself.

    Raises:
        LayerNotFoundError: the layer does not output a tensor.
    """
    store: dict[str, object] = {}

    def keep(_module, _args, output):
        store["out"] = output

    with model.lock, hooks.attached(module, keep), torch.inference_mode():
        model.module(tensor.to(model.device))
    output = store["out"]
    if not isinstance(output, Tensor):
        raise LayerNotFoundError("This layer does not output a tensor: choose another layer.")
    reshape = reshape_for(model.spec, output)
    return (reshape(output) if reshape is not None else output), reshape
