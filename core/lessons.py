"""What a loaded network does, measured layer by layer for the Learn pages.

- `conv_layers`: every convolution and pooling layer with the sizes it really saw, checked against
  `convolution.output_size` (the arithmetic itself, on plain arrays, is in `core.convolution`).
- `receptive_field`: how far back into the image one unit of a layer can see.
- `residuals`: how large the residual branch F(x) is next to the shortcut x in each block.
- `depth_layers`: a few stages at growing depth, to show what pretrained features look like.
- `transfer_plans`: trainable vs frozen parameters for feature extraction and fine-tuning: the numbers
  the Transfer learning page trains with (`training.parameter_summary` over `core.stages`).

Grad-CAM's pieces are in `core.gradcam`. Every forward pass holds the model's lock and runs under
`torch.inference_mode()`; hooks are attached through `hooks.attached` and are gone when a call returns.
"""

import math
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from core import features, hooks, preprocessing, stages, training
from core.convolution import same_padding, window_size
from core.errors import InvalidInputError
from core.heads import final_linear
from core.models import LoadedModel

# ---------------------------------------------------------------------------------------------
# Convolution and pooling layers of a network: floor((N + 2P - F) / S) + 1, measured


@dataclass(frozen=True)
class ConvCheck:
    """One convolution or pooling layer: its settings, the sizes it really saw, and the formula's size."""

    layer: str  # dotted path
    type: str  # module class name
    kind: str  # "conv" or "pool"
    kernel: tuple[int, int]  # (height, width)
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int]  # total padding (both sides together) per axis, as applied for this input
    channels: int  # output channels (feature maps)
    same: bool  # TensorFlow-style 'same' padding computed at run time: output = ceil(N / S)
    input_hw: tuple[int, int]  # measured (height, width) of the input
    output_hw: tuple[int, int]  # measured (height, width) of the output
    predicted_hw: tuple[int, int]  # from the formula, without running the layer

    @property
    def matches(self) -> bool:
        return self.predicted_hw == self.output_hw

    @property
    def padding_text(self) -> str:
        """The padding in words: "1", "(1, 2)", or "same: 0+1" (before+after) for run-time 'same' layers."""
        if self.same or any(p % 2 for p in self.padding):
            parts = [f"{p // 2}+{p - p // 2}" for p in self.padding]
            return ("same: " if self.same else "") + (parts[0] if parts[0] == parts[1] else f"{parts[0]} / {parts[1]}")
        half = (self.padding[0] // 2, self.padding[1] // 2)
        return str(half[0]) if half[0] == half[1] else str(half)


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def conv_layers(model: LoadedModel, image: Image.Image | None = None) -> list[ConvCheck]:
    """Every nn.Conv2d, MaxPool2d and AvgPool2d that runs on `image` (default: a grey picture), in call order.

    One inference pass under the model's lock records each layer's real input and output size;
    the predicted size comes from `output_size` with the layer's own settings (for timm's
    `Conv2dSame` / `MaxPool2dSame`, with the 'same' padding they compute for this input).
    """
    chosen = [(name, m) for name, m in model.module.named_modules() if isinstance(m, (nn.Conv2d, *_POOLS))]
    sizes = _called(model, image, chosen)
    checks = []
    for name, module in chosen:
        if name not in sizes:
            continue  # defined but not used by the forward pass
        (h, w), output_hw, _, channels = sizes[name]
        kernel, stride = _pair(module.kernel_size), _pair(module.stride)
        dilation = _pair(getattr(module, "dilation", 1))  # AvgPool2d has none
        ceil_mode = bool(getattr(module, "ceil_mode", False))
        same = isinstance(module, _dynamic_same())
        if same:
            padding = tuple(same_padding(n, kernel=k, stride=s, dilation=d)
                            for n, k, s, d in zip((h, w), kernel, stride, dilation))
        else:
            padding = _static_padding(module, kernel, dilation)
        predicted = tuple(
            window_size(n, k, p, s, d, ceil_mode, p // 2)
            for n, k, p, s, d in zip((h, w), kernel, padding, stride, dilation)
        )
        checks.append(ConvCheck(
            layer=name, type=type(module).__name__, kind="pool" if isinstance(module, _POOLS) else "conv",
            kernel=kernel, stride=stride, dilation=dilation, padding=padding, channels=channels, same=same,
            input_hw=(h, w), output_hw=output_hw, predicted_hw=predicted,
        ))
    return sorted(checks, key=lambda check: sizes[check.layer][2])


def _called(model: LoadedModel, image: Image.Image | None, chosen: list[tuple[str, nn.Module]]) -> dict:
    """{name: ((h, w) in, (h, w) out, call index, output channels)} for the first call of each module in one pass."""
    seen: dict[str, tuple] = {}

    def hook(name: str) -> Callable:
        def record(_module, args, output) -> None:
            if name not in seen and args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
                seen[name] = (tuple(args[0].shape[-2:]), tuple(output.shape[-2:]), len(seen), int(output.shape[1]))
        return record

    _probe(model, image, [(module, hook(name)) for name, module in chosen])
    return seen


def _probe(model: LoadedModel, image: Image.Image | None, attach: list[tuple[nn.Module, Callable]]) -> None:
    """Attach forward hooks, run one inference pass on `image`, and remove them all, even if it raises."""
    tensor = preprocessing.to_tensor(image if image is not None else _grey(model), model.spec).to(model.device)
    with model.lock, ExitStack() as stack, torch.inference_mode():
        for module, hook in attach:
            stack.enter_context(hooks.attached(module, hook))
        model.module(tensor)


def _grey(model: LoadedModel) -> Image.Image:
    height, width = model.spec.input_size
    return Image.new("RGB", (width, height), (128, 128, 128))


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple | list) else (int(value), int(value))


def _static_padding(module: nn.Module, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Total padding per axis of a layer whose padding is fixed (an int, a pair, 'same' or 'valid')."""
    padding = module.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":  # PyTorch's own 'same' (stride 1): d * (k - 1) in total, the odd pixel after
        return tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    return tuple(2 * p for p in _pair(padding))


#: timm's layers that pad at run time like TensorFlow's 'SAME' (EfficientNet-Lite's stride-2 layers): module, classes.
_TIMM_SAME = {
    "timm.layers.conv2d_same": ("Conv2dSame",),
    "timm.layers.pool2d_same": ("MaxPool2dSame", "AvgPool2dSame"),
    "timm.layers.std_conv": ("StdConv2dSame", "ScaledStdConv2dSame"),
}


def _dynamic_same() -> tuple[type, ...]:
    """The run-time 'same' classes, from timm's modules already imported (no network can use one otherwise)."""
    found = []
    for module_name, class_names in _TIMM_SAME.items():
        module = sys.modules.get(module_name)
        found += [getattr(module, name) for name in class_names if module is not None and hasattr(module, name)]
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Receptive field


class FieldStep(NamedTuple):
    layer: str
    rf: int  # side of the square of input pixels one output unit depends on (theoretical)
    jump: int  # input pixels between two neighbouring output units (the product of the strides so far)


def receptive_field(model: LoadedModel, image: Image.Image | None = None) -> list[FieldStep]:
    """The theoretical receptive field after each convolution and pooling layer, in call order.

    r = r_prev + (F' - 1) * j_prev and j = j_prev * S, starting from r = j = 1 at the input, with
    F' = dilation * (kernel - 1) + 1. It follows the main path: the 1x1 convolutions that only
    reshape a residual shortcut (ResNet's `downsample`) are left out. Networks with parallel
    branches (Inception) are read as one chain, which overstates their field. The *effective*
    field, where most of a unit's input really comes from, is much smaller (Luo et al., 2016).
    """
    shortcuts = {path for block in _residual_blocks(model.module) for path in block.shortcut_paths}
    steps, rf, jump = [], 1, 1
    for check in conv_layers(model, image):
        if any(check.layer == path or check.layer.startswith(path + ".") for path in shortcuts):
            continue
        span = check.dilation[0] * (check.kernel[0] - 1) + 1
        rf += (span - 1) * jump
        jump *= check.stride[0]
        steps.append(FieldStep(check.layer, rf, jump))
    return steps



# ---------------------------------------------------------------------------------------------
# Residual connections


class _Rule(NamedTuple):
    types: tuple[str, ...]  # block class names
    flag: str | None  # attribute saying whether the block adds its input (None: it always does)
    branch: str  # submodule whose output is F(x), the residual branch
    shortcut: str | None  # submodule that reshapes x on the shortcut (None: x itself)


#: How each family of residual block spells F(x) and its shortcut.
_RULES = (
    _Rule(("BasicBlock",), None, "bn2", "downsample"),  # torchvision ResNet: y = relu(F(x) + shortcut(x))
    _Rule(("Bottleneck",), None, "bn3", "downsample"),
    _Rule(("InvertedResidual", "DepthwiseSeparableConv"), "has_skip", "drop_path", None),  # timm: y = F(x) + x
    _Rule(("InvertedResidual",), "use_res_connect", "block", None),  # torchvision MobileNet
    _Rule(("MBConv", "FusedMBConv"), "use_res_connect", "stochastic_depth", None),  # torchvision EfficientNet
    _Rule(("CNBlock",), None, "stochastic_depth", None),  # torchvision ConvNeXt
)


class _Block(NamedTuple):
    path: str
    module: nn.Module
    rule: _Rule
    skip: bool

    @property
    def shortcut_paths(self) -> tuple[str, ...]:
        if self.rule.shortcut and getattr(self.module, self.rule.shortcut, None) is not None:
            return (f"{self.path}.{self.rule.shortcut}",)
        return ()


def _residual_blocks(module: nn.Module) -> list[_Block]:
    blocks = []
    for path, child in module.named_modules():
        for rule in _RULES:
            if type(child).__name__ in rule.types and isinstance(getattr(child, rule.branch, None), nn.Module) and (
                rule.flag is None or hasattr(child, rule.flag)
            ):
                blocks.append(_Block(path, child, rule, rule.flag is None or bool(getattr(child, rule.flag))))
                break
    return blocks


@dataclass(frozen=True, eq=False)
class ResidualBlock:
    """One block that adds its input back, measured on one image."""

    block: str  # dotted path
    type: str  # class name
    shortcut: str  # "identity" or the path of the layer that reshapes x (ResNet's downsample)
    shortcut_norm: float  # L2 norm of what the shortcut adds (x, or downsample(x))
    branch_norm: float  # L2 norm of F(x)
    shortcut_map: np.ndarray  # (h, w) float32 mean |shortcut| over channels
    branch_map: np.ndarray  # (h, w) float32 mean |F(x)| over channels
    sum_map: np.ndarray  # (h, w) float32 mean |F(x) + shortcut| over channels (before any final ReLU)

    @property
    def ratio(self) -> float:
        """||F(x)|| / ||x||: how much the block changes what flows through it."""
        return self.branch_norm / self.shortcut_norm if self.shortcut_norm > 0 else math.inf


@dataclass(frozen=True, eq=False)
class Residuals:
    blocks: tuple[ResidualBlock, ...]  # blocks with a skip connection, in network order
    plain: tuple[str, ...]  # blocks of a residual kind that do not add their input (stride or width changes)


def residuals(model: LoadedModel, image: Image.Image | None = None) -> Residuals:
    """F(x) and x at every residual block for `image` (default: a grey picture), from one inference pass.

    Values are reduced inside the hooks, before the block's in-place additions and ReLUs can
    overwrite them.
    """
    found = _residual_blocks(model.module)
    store: dict[str, dict[str, Tensor]] = {block.path: {} for block in found}

    def keep(path: str, part: str) -> Callable:
        def record(_module, args, output) -> None:
            value = args[0] if part == "input" else output
            if isinstance(value, Tensor) and part not in store[path]:
                store[path][part] = value.detach().float().clone()
        return record

    attach = []
    for block in found:
        if not block.skip:
            continue
        attach.append((block.module, keep(block.path, "input")))
        attach.append((getattr(block.module, block.rule.branch), keep(block.path, "branch")))
        for path in block.shortcut_paths:
            attach.append((hooks.find(model.module, path), keep(block.path, "shortcut")))
    _probe(model, image, attach)
    measured = []
    for block in found:
        parts = store[block.path]
        if not block.skip or "branch" not in parts or "input" not in parts:
            continue
        shortcut = parts.get("shortcut", parts["input"])
        branch = parts["branch"]
        if branch.shape != shortcut.shape:
            continue
        measured.append(ResidualBlock(
            block=block.path, type=type(block.module).__name__,
            shortcut=block.shortcut_paths[0] if block.shortcut_paths else "identity",
            shortcut_norm=float(shortcut.norm()), branch_norm=float(branch.norm()),
            shortcut_map=_mean_abs(shortcut), branch_map=_mean_abs(branch), sum_map=_mean_abs(shortcut + branch),
        ))
    return Residuals(tuple(measured), tuple(block.path for block in found if not block.skip))


def _mean_abs(value: Tensor) -> np.ndarray:
    return value[0].abs().mean(dim=0).cpu().numpy().astype(np.float32)




# ---------------------------------------------------------------------------------------------
# Pretrained features through depth


def depth_layers(model: LoadedModel, image: Image.Image | None = None, *, count: int = 4) -> list[str]:
    """`count` stages (`core.stages`) from shallow to deep, each the last one at its resolution.

    For token models, whose outputs have no resolution of their own, the stages are spread evenly.
    """
    if count < 1:
        raise InvalidInputError(f"Show at least one depth, got count={count}.")
    ends = {stage.name for stage in stages.of(model)}
    table = [info for info in features.layers(model, image) if info.cam_ready and info.name in ends]
    if not table:
        return [model.spec.cam_layer]
    if model.spec.reshape is None:
        last_at: dict[tuple[int, ...], str] = {}
        for info in table:
            last_at.pop(info.output_shape[-2:], None)
            last_at[info.output_shape[-2:]] = info.name
        names = list(last_at.values())
    else:
        names = [info.name for info in table]
    if len(names) <= count:
        return names
    picks = sorted({round(i * (len(names) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [len(names) - 1]
    return [names[i] for i in picks]


# ---------------------------------------------------------------------------------------------
# Transfer learning


@dataclass(frozen=True)
class TransferPlan:
    """What trains and what stays frozen under one transfer-learning strategy, with a new head."""

    name: str  # "feature extraction", "fine-tune the last stage", "fine-tune everything"
    strategy: str  # the training strategy it is ("feature-extraction" or "fine-tune")
    unfreeze: int | None  # the last N stages it unfreezes (None: all), as the Transfer learning page says it
    trainable: int  # parameters updated by training (the new head included)
    frozen: int  # parameters kept as pretrained
    trainable_stages: tuple[str, ...]  # the stages that train, in network order; the head last
    modules: tuple[str, ...]  # the modules those stages cover, e.g. ("conv_head", "bn2", "classifier")

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


#: (plan, training strategy, last N stages unfrozen): the choices the Learn page explains.
PLANS = (("feature extraction", "feature-extraction", 0), ("fine-tune the last stage", "fine-tune", 1),
         ("fine-tune everything", "fine-tune", None))


@dataclass(frozen=True)
class Transfer:
    head: str  # path of the final nn.Linear, replaced by a new one
    features: int  # its input size d: the length of the feature vector
    classes: int  # K, the classes of the new task
    new_head: int  # (d + 1) * K parameters: weights and biases
    last_stage: str  # the stage "fine-tune the last stage" trains
    plans: tuple[TransferPlan, ...]


def transfer_plans(model: LoadedModel, *, classes: int) -> Transfer:
    """Parameter counts of feature extraction vs fine-tuning, for a new linear head with `classes` outputs.

    Each plan is `training.parameter_summary` for the same choice on the Transfer learning page, so the
    two pages name the same stages (`core.stages`) and the same counts.

    Raises:
        InvalidInputError: fewer than 2 classes, or a head that is not a Linear.
    """
    if int(classes) != classes or classes < 2:
        raise InvalidInputError(f"A classifier needs at least 2 classes, got {classes}.")
    with model.lock:
        head = final_linear(model)
    plans = []
    for name, strategy, unfreeze in PLANS:
        summary = training.parameter_summary(model, strategy, unfreeze, classes=int(classes))
        chosen = [group for group in summary.groups if group.trainable]
        plans.append(TransferPlan(
            name, strategy, unfreeze, summary.trainable, summary.frozen,
            (*(group.name for group in chosen[:-1]), model.spec.head),
            tuple(module for group in chosen for module in group.modules),
        ))
    last = plans[1].trainable_stages
    return Transfer(model.spec.head, head.in_features, int(classes), (head.in_features + 1) * int(classes),
                    last[0] if len(last) > 1 else model.spec.head, tuple(plans))
