"""The maths behind a CNN, worked out on a real image and a real backbone, for the Learn pages.

- `convolve`, `KERNELS`: a 3x3 kernel slid over a picture (what one convolution filter does).
- `output_size`, `same_padding`, `conv_layers`: floor((N + 2P - F) / S) + 1, checked against every
  convolution and pooling layer of a loaded network.
- `pool`: max and average pooling of a picture.
- `receptive_field`, `field_outline`: how far back into the image one unit of a layer can see.
- `residuals`: how large the residual branch F(x) is next to the shortcut x in each block.
- `depth_layers`: a few layers at growing depth, to show what pretrained features look like.
- `transfer_plans`: trainable vs frozen parameters for feature extraction and fine-tuning.
- `gradcam_parts`: Grad-CAM's channel weights, activation maps and map, from the Explain page's pass.

Every forward pass holds the model's lock and runs under `torch.inference_mode()` (except Grad-CAM,
which needs gradients); hooks are attached through `hooks.attached` and are gone when a call returns.
"""

import math
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from core import features, hooks, images, preprocessing
from core.errors import InvalidInputError
from core.models import LoadedModel
from core.registry import BackboneSpec

# ---------------------------------------------------------------------------------------------
# Convolution


@dataclass(frozen=True, eq=False)
class Kernel:
    """A named 3x3 filter and what it does, in plain words."""

    title: str
    weights: np.ndarray  # (3, 3) float32
    note: str
    scale: float = 1.0  # weights = scale * whole numbers (1/9 for the box blur): for display


def _kernel(title: str, rows: list[list[float]], note: str, scale: float = 1.0) -> Kernel:
    weights = np.asarray(rows, dtype=np.float32) * np.float32(scale)
    weights.setflags(write=False)
    return Kernel(title, weights, note, scale)


KERNELS: dict[str, Kernel] = {
    "identity": _kernel(
        "Identity", [[0, 0, 0], [0, 1, 0], [0, 0, 0]], "Copies the centre pixel: the image is unchanged."
    ),
    "edge": _kernel(
        "Edge (Laplacian)", [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
        "The centre minus its four neighbours: zero on flat areas, large where brightness changes in any direction.",
    ),
    "sobel_x": _kernel(
        "Sobel x", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
        "Right minus left: responds to vertical edges (brightness changing from left to right).",
    ),
    "sobel_y": _kernel(
        "Sobel y", [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
        "Below minus above: responds to horizontal edges.",
    ),
    "sharpen": _kernel(
        "Sharpen", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
        "The image plus its Laplacian edges: details stand out more.",
    ),
    "box_blur": _kernel(
        "Box blur", [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
        "The average of the 3x3 neighbourhood: smooths noise and detail.", scale=1 / 9,
    ),
    "gaussian_blur": _kernel(
        "Gaussian blur", [[1, 2, 1], [2, 4, 2], [1, 2, 1]],
        "A weighted average, the centre counting most: a softer blur than the box.", scale=1 / 16,
    ),
    "emboss": _kernel(
        "Emboss", [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
        "Bottom-right minus top-left, plus the pixel itself: edges look raised, lit from one side.",
    ),
}


def kernel_weights(kernel: str | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """(3, 3) float32 weights of a named kernel (a key of `KERNELS`) or of nine numbers given as 3x3.

    Raises:
        InvalidInputError: unknown name, wrong shape, or a value that is not a finite number.
    """
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            from core.errors import did_you_mean

            raise InvalidInputError(
                f"Unknown kernel '{kernel}'.{did_you_mean(kernel, KERNELS)} Available: {', '.join(KERNELS)}."
            )
        return KERNELS[kernel].weights
    try:
        weights = np.asarray(kernel, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError("A kernel must be 3x3 numbers.") from None
    if weights.shape != (3, 3):
        raise InvalidInputError(f"A kernel must be 3x3 numbers, got shape {weights.shape}.")
    if not np.isfinite(weights).all():
        raise InvalidInputError("Every kernel weight must be a finite number.")
    return weights


def convolve(image: np.ndarray | Image.Image, kernel: str | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Slide a 3x3 kernel over each channel of `image` separately: zero padding 1, stride 1.

    Like PyTorch's Conv2d this is a cross-correlation (the kernel is not flipped):
    out[i, j] = sum over u, v in {-1, 0, 1} of K[u + 1, v + 1] * image[i + u, j + v].

    Returns:
        float32 array of the image's shape ((H, W) or (H, W, C)), in the image's own units
        (0-255 for a uint8 picture), not clipped: edge kernels give negative values.
    """
    weights = kernel_weights(kernel)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise InvalidInputError(f"Expected an (H, W) or (H, W, C) image, got shape {array.shape}.")
    planes = array[..., None] if array.ndim == 2 else array
    padded = np.pad(planes, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))  # (H, W, C, 3, 3)
    out = np.einsum("hwcuv,uv->hwc", windows, weights, optimize=True).astype(np.float32)
    return out[..., 0] if array.ndim == 2 else out


def visible(result: np.ndarray, kernel: str | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A convolution result as a uint8 picture.

    Kernels whose weights add up to 1 keep brightness (blur, sharpen, emboss): clipped to 0-255.
    The others measure change (edges, weights adding up to about 0): the absolute response,
    scaled so that the strongest 1% is white (one extreme pixel would otherwise leave the rest black).
    """
    weights = kernel_weights(kernel)
    if abs(float(weights.sum()) - 1.0) < 1e-3:
        return np.clip(np.rint(result), 0, 255).astype(np.uint8)
    magnitude = np.abs(result)
    peak = float(np.percentile(magnitude, 99)) if magnitude.size else 0.0
    peak = peak if peak > 0 else (float(magnitude.max()) if magnitude.size else 0.0)
    scaled = magnitude * (255.0 / peak) if peak > 0 else magnitude
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def picture(image: Image.Image, spec: BackboneSpec, *, grey: bool = False) -> np.ndarray:
    """The whole image at the size the network gets it (see preprocessing.resize).

    Returns:
        (H, W, 3) uint8 RGB, or (H, W) uint8 luminance with `grey`.
    """
    resized = preprocessing.resize(image, spec)
    return np.asarray(resized.convert("L") if grey else resized, dtype=np.uint8).copy()


@dataclass(frozen=True, eq=False)
class Worked:
    """One output pixel of `convolve`, worked out by hand."""

    at: tuple[int, int]  # (row, column) of the output pixel
    patch: np.ndarray  # (3, 3) float32 input values under the kernel (0 where it hangs over the border)
    weights: np.ndarray  # (3, 3) float32 kernel
    value: float  # sum(patch * weights): equals convolve(...)[row, column]


def worked(plane: np.ndarray, kernel: str | np.ndarray | Sequence[Sequence[float]], *,
           at: tuple[int, int] | None = None) -> Worked:
    """The nine products behind one output pixel of `convolve` on a (H, W) plane (default: the centre)."""
    weights = kernel_weights(kernel)
    array = np.asarray(plane, dtype=np.float32)
    if array.ndim != 2:
        raise InvalidInputError(f"Expected one (H, W) plane, got shape {array.shape}.")
    row, column = at if at is not None else (array.shape[0] // 2, array.shape[1] // 2)
    if not (0 <= row < array.shape[0] and 0 <= column < array.shape[1]):
        raise InvalidInputError(f"Pixel {(row, column)} is outside the {array.shape[0]}x{array.shape[1]} image.")
    padded = np.pad(array, 1)
    patch = padded[row : row + 3, column : column + 3].copy()
    return Worked((int(row), int(column)), patch, weights, float((patch * weights).sum()))


# ---------------------------------------------------------------------------------------------
# Output size: floor((N + 2P - F) / S) + 1


def output_size(n: int, *, kernel: int, padding: int, stride: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length along one axis of a convolution or pooling window: floor((N + 2P - F') / S) + 1.

    F' = dilation * (kernel - 1) + 1 is the span of a dilated kernel. With `ceil_mode` (pooling
    only) the division rounds up, but, as in PyTorch, the last window must start inside the input
    or its left padding.

    Raises:
        InvalidInputError: a size below 1, negative padding, or a kernel wider than the padded input.
    """
    if int(padding) != padding or padding < 0:
        raise InvalidInputError(f"The padding P must be a whole number of at least 0, got {padding}.")
    return _size(n, kernel, 2 * padding, stride, dilation, ceil_mode, padding)


def same_padding(n: int, *, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding of TensorFlow's 'same' (timm's Conv2dSame), split as P // 2 before and the rest after.

    P = max((ceil(N / S) - 1) * S + F' - N, 0), which makes the output ceil(N / S) long.
    """
    span = dilation * (kernel - 1) + 1
    return max((math.ceil(n / stride) - 1) * stride + span - n, 0)


def _size(n: int, kernel: int, total_padding: int, stride: int, dilation: int, ceil_mode: bool, before: int) -> int:
    for name, value, low in (("input size N", n, 1), ("kernel F", kernel, 1), ("stride S", stride, 1),
                             ("dilation", dilation, 1), ("total padding", total_padding, 0)):
        if int(value) != value or value < low:
            raise InvalidInputError(f"The {name} must be a whole number of at least {low}, got {value}.")
    span = dilation * (kernel - 1) + 1
    room = n + total_padding - span
    if room < 0:
        raise InvalidInputError(
            f"A kernel spanning {span} pixels does not fit in an input of {n} padded to {n + total_padding}: "
            "use a smaller kernel or more padding."
        )
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + before:
        out -= 1
    return int(out)


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
            _size(n, k, p, s, d, ceil_mode, p // 2)
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
# Pooling


POOLING = ("max", "average")


def pool(image: np.ndarray, size: int, kind: str) -> np.ndarray:
    """Max or average of every non-overlapping size x size window (stride = size, no padding).

    Returns:
        (floor(H / size), floor(W / size)[, C]) array of the input's dtype (averages rounded
        for integer types); leftover rows and columns at the bottom and right are dropped.

    Raises:
        InvalidInputError: unknown kind, or a window larger than the image.
    """
    if kind not in POOLING:
        raise InvalidInputError(f"Unknown pooling '{kind}'. Choose one of: {', '.join(POOLING)}.")
    array = np.asarray(image)
    height, width = array.shape[:2]
    if int(size) != size or size < 1 or size > min(height, width):
        raise InvalidInputError(f"The window must be between 1 and {min(height, width)} pixels, got {size}.")
    rows, columns = height // size, width // size
    blocks = array[: rows * size, : columns * size].reshape(rows, size, columns, size, *array.shape[2:])
    if kind == "max":
        return blocks.max(axis=(1, 3))
    mean = blocks.astype(np.float64).mean(axis=(1, 3))
    return np.rint(mean).astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else mean.astype(array.dtype)


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


def field_outline(picture: np.ndarray, size: int, *, jump: int = 1) -> np.ndarray:
    """`picture` with the square of side `size` centred on it drawn in, plus the grid of units `jump` apart.

    Returns:
        (H, W, 3) uint8 copy; the part of the square outside the picture is cut off.
    """
    image = Image.fromarray(np.asarray(picture, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    cx, cy = width // 2, height // 2
    if jump > 1:  # where the neighbouring units of this layer sit, along the centre row and column
        for x in range(cx % jump, width, jump):
            draw.line([(x, cy - 3), (x, cy + 3)], fill=(255, 255, 255))
        for y in range(cy % jump, height, jump):
            draw.line([(cx - 3, y), (cx + 3, y)], fill=(255, 255, 255))
    half = size / 2
    box = [max(0, cx - half), max(0, cy - half), min(width - 1, cx + half - 1), min(height - 1, cy + half - 1)]
    draw.rectangle(box, outline=(255, 64, 0), width=3)
    draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(255, 64, 0))
    return np.asarray(image).copy()


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
    """`count` stage-level layers from shallow to deep, each the last one at its resolution.

    Stages are the children of the network, with stage containers (`features.STAGE_CONTAINERS`)
    opened up. For token models, whose outputs have no resolution of their own, the layers are
    spread evenly through the stages.
    """
    if count < 1:
        raise InvalidInputError(f"Show at least one depth, got count={count}.")
    stages = set(_stage_paths(model.module, ""))
    table = [info for info in features.layers(model, image) if info.cam_ready and info.name in stages]
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


def _stage_paths(module: nn.Module, prefix: str) -> list[str]:
    paths = []
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if name in features.STAGE_CONTAINERS and next(child.children(), None) is not None:
            paths += _stage_paths(child, path)
        else:
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Transfer learning


@dataclass(frozen=True)
class TransferPlan:
    """What trains and what stays frozen under one transfer-learning strategy, with a new head."""

    name: str  # "feature extraction", "fine-tune the last stage", "fine-tune everything"
    trainable: int  # parameters updated by training (the new head included)
    frozen: int  # parameters kept as pretrained
    trainable_stages: tuple[str, ...]  # stage paths that train, in network order; the head last

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


@dataclass(frozen=True)
class Transfer:
    head: str  # path of the final nn.Linear, replaced by a new one
    features: int  # its input size d: the length of the feature vector
    classes: int  # K, the classes of the new task
    new_head: int  # (d + 1) * K parameters: weights and biases
    last_stage: str  # first stage of the "last stage" plan
    plans: tuple[TransferPlan, ...]


def transfer_plans(model: LoadedModel, *, classes: int) -> Transfer:
    """Parameter counts of feature extraction vs fine-tuning, for a new head with `classes` outputs.

    The last stage of a CNN is every stage from the first one that already works at the final
    resolution (ResNet's `layer4`, EfficientNet's `blocks.5` onwards). Token models have no
    resolution, so their last stage is the last block that holds at least 5% of the backbone.

    Raises:
        InvalidInputError: fewer than 2 classes.
    """
    if int(classes) != classes or classes < 2:
        raise InvalidInputError(f"A classifier needs at least 2 classes, got {classes}.")
    head = hooks.find(model.module, model.spec.head)
    if not isinstance(head, nn.Linear):
        raise InvalidInputError(
            f"{model.spec.title}'s head '{model.spec.head}' is a {type(head).__name__}, not a Linear."
        )
    arch = features.architecture(model)
    head_params = sum(p.numel() for p in head.parameters())
    stages = []
    for stage in arch.stages:  # the backbone's stages: the head left out, also from a stage that holds it
        if stage.name == model.spec.head or stage.name.startswith(model.spec.head + "."):
            continue
        if model.spec.head.startswith(stage.name + "."):
            stage = features.Stage(stage.name, stage.params - head_params)
        if stage.params > 0:
            stages.append(stage)
    backbone = arch.total_params - head_params
    new_head = (head.in_features + 1) * int(classes)
    start = _last_stage(model, arch, stages, backbone)
    tail = stages[start:]
    tuned = sum(stage.params for stage in tail)
    plans = (
        TransferPlan("feature extraction", new_head, backbone, (model.spec.head,)),
        TransferPlan("fine-tune the last stage", new_head + tuned, backbone - tuned,
                     (*(stage.name for stage in tail), model.spec.head)),
        TransferPlan("fine-tune everything", new_head + backbone, 0,
                     (*(stage.name for stage in stages), model.spec.head)),
    )
    return Transfer(model.spec.head, head.in_features, int(classes), new_head, stages[start].name, plans)


def _last_stage(model: LoadedModel, arch: features.Architecture, stages: list, backbone: int) -> int:
    shapes = {row.name: row.output_shape for row in arch.rows}
    if model.spec.reshape is None:
        spatial = [(i, shapes[s.name][-2:]) for i, s in enumerate(stages)
                   if shapes.get(s.name) is not None and len(shapes[s.name]) == 4]
        if spatial:
            final = spatial[-1][1]
            return next(i for i, shape in spatial if shape == final)
    big = [i for i, stage in enumerate(stages) if stage.params >= 0.05 * backbone]
    return big[-1] if big else len(stages) - 1


# ---------------------------------------------------------------------------------------------
# Grad-CAM, piece by piece


@dataclass(frozen=True, eq=False)
class GradCamParts:
    """Grad-CAM's ingredients for one image and class: alpha_k, the maps A^k, and their weighted sum."""

    target: int  # class index c explained
    label: str
    layer: str
    weights: np.ndarray  # (K,) float32 alpha_k^c: each channel's gradient averaged over its h x w positions
    means: np.ndarray  # (K,) float32 mean activation of each channel over its h x w positions
    largest: tuple[int, ...]  # the `top` channels with the largest alpha_k, largest first
    channels: tuple[int, ...]  # the `top` channels adding most to the map (largest alpha_k * mean A^k), most first
    maps: np.ndarray  # (top, h, w) float32 activations A^k of `channels`, each scaled to [0, 1] by its own range
    peaks: np.ndarray  # (top,) float32 largest raw activation of each of `channels`
    coarse: np.ndarray  # (h, w) float32 ReLU(sum_k alpha_k A^k) at the layer's resolution, scaled to [0, 1]
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the network's input size: equals cams.raw_maps' "gradcam"
    overlay: np.ndarray  # (H, W, 3) uint8 the heatmap over the picture the network saw

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the layer: Z = h * w positions are averaged into each alpha_k."""
        return tuple(self.coarse.shape)

    @property
    def contributions(self) -> np.ndarray:
        """(K,) alpha_k * mean A^k: what each channel adds to the map's mean before the ReLU."""
        return self.weights * self.means


def gradcam_parts(
    model: LoadedModel, image: Image.Image, *, target: int | None = None, layer: str | None = None, top: int = 8
) -> GradCamParts:
    """Grad-CAM for `target` (default: the predicted class), with the pieces the formula combines.

    One forward and one backward pass through `cams`' shared pass, and pytorch-grad-cam's own
    GradCAM maths on its result: the heatmap is the one the Explain page shows.

    Raises:
        LayerNotFoundError, InvalidInputError.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from core import cams
    from core.predictions import probabilities

    if torch.is_inference_mode_enabled():
        raise RuntimeError("lessons.gradcam_parts needs gradients; call it outside torch.inference_mode().")
    if int(top) != top or top < 1:
        raise InvalidInputError(f"Show at least one channel, got top={top}.")
    layer = layer or model.spec.cam_layer
    module = hooks.find(model.module, layer)
    tensor = preprocessing.to_tensor(image, model.spec)
    if target is None:
        target = int(probabilities(model, tensor).argmax(dim=1)[0])
    target = cams.check_target(model, target)
    activations, grads = cams._shared_pass(model, tensor, module, layer, target, True)
    cam = cams._bare(cams.METHODS["gradcam"], module)
    cam.activations_and_grads = cams._Captured([activations], [grads])
    per_layer = cam.compute_cam_per_layer(tensor, [ClassifierOutputTarget(target)], False)
    heatmap = cam.aggregate_multi_layers(per_layer)[0].astype(np.float32)

    acts = activations[0].numpy()  # (K, h, w)
    weights = cam.get_cam_weights(tensor, module, None, activations.numpy(), grads.numpy())[0].astype(np.float32)
    means = acts.mean(axis=(1, 2)).astype(np.float32)
    count = min(int(top), len(weights))
    largest = np.argsort(-weights, kind="stable")[:count]
    order = np.argsort(-(weights * means), kind="stable")[:count]  # a large alpha on a silent channel adds nothing
    chosen = acts[order]
    low = chosen.min(axis=(1, 2), keepdims=True)
    span = chosen.max(axis=(1, 2), keepdims=True) - low
    maps = np.where(span > 0, (chosen - low) / np.maximum(span, 1e-12), 0.0).astype(np.float32)
    coarse = np.maximum((weights[:, None, None] * acts).sum(axis=0), 0.0)
    coarse = (coarse / coarse.max() if coarse.max() > 0 else coarse).astype(np.float32)
    seen = preprocessing.resize(image, model.spec)
    return GradCamParts(
        target=target, label=model.categories[target], layer=layer, weights=weights, means=means,
        largest=tuple(int(k) for k in largest), channels=tuple(int(k) for k in order), maps=maps,
        peaks=chosen.max(axis=(1, 2)).astype(np.float32),
        coarse=coarse, heatmap=heatmap, overlay=images.overlay(seen, heatmap),
    )
