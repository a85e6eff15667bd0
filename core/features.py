"""What the layers of a network output for an input: names, types, shapes; which layers CAMs can use."""

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from core import preprocessing
from core.models import LoadedModel


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
    if image is None:
        height, width = model.spec.input_size
        image = Image.new("RGB", (width, height), (128, 128, 128))
    tensor = preprocessing.to_tensor(image, model.spec).to(model.device)
    named = [(name, module) for name, module in model.module.named_modules() if name]
    outputs: dict[str, object] = {}
    handles = []
    with model.lock:
        try:
            for name, module in named:
                handles.append(module.register_forward_hook(_recorder(outputs, name)))
            with torch.inference_mode():
                model.module(tensor)
        finally:
            for handle in handles:
                handle.remove()
    from core.cams import layer_needs_reshape

    result = []
    for name, module in named:
        output = outputs.get(name)
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        ready = False
        if isinstance(output, Tensor):
            if layer_needs_reshape(model, output):
                try:
                    output = model.spec.reshape(output)
                except (RuntimeError, ValueError):
                    output = None
            ready = isinstance(output, Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1
        result.append(LayerInfo(name, type(module).__name__, shape, sum(p.numel() for p in module.parameters()), ready))
    return result


def cam_layers(model: LoadedModel) -> list[str]:
    """Names of the layers a CAM can be computed on, in network order; the spec's default included."""
    names = [info.name for info in layers(model) if info.cam_ready]
    if model.spec.cam_layer not in names:
        names.append(model.spec.cam_layer)
    return names


def _recorder(outputs: dict[str, object], name: str):
    def record(_module, _args, output) -> None:
        outputs[name] = output

    return record
