"""Token layouts: a layer's output as (B, C, H, W) feature maps. The one place the spec's `reshape` is applied.

A backbone spec says how its tokens are laid out with `BackboneSpec.reshape` (ViT: (B, 1 + H*W, C) with a class
token; torchvision's Swin: channels-last (B, H, W, C)). Not every layer of a token model is laid out that way
(a patch-embedding convolution already outputs (B, C, H, W)), so whether a given output needs the reshape is
read from its shape, here. CAMs, feature maps and concepts all turn a layer's output into maps through this module.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from core import hooks
from core.errors import LayerNotFoundError
from core.models import LoadedModel
from core.registry import BackboneSpec

Reshape = Callable[[Tensor], Tensor]


def is_tokens(spec: BackboneSpec, output: Tensor) -> bool:
    """Whether `output` is laid out as tokens or channels-last, so the spec's reshape makes it maps."""
    if spec.reshape is None:
        return False
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


def layer_maps(model: LoadedModel, module: nn.Module, tensor: Tensor) -> tuple[Tensor, Reshape | None]:
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
