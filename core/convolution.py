"""Convolution arithmetic on plain arrays, for the Learn pages: no network involved.

- `convolve`, `KERNELS`, `worked`: a 3x3 kernel slid over a picture (what one convolution filter does),
  and the nine products behind one output pixel.
- `output_size`, `same_padding`, `window_size`: floor((N + 2P - F) / S) + 1, and TensorFlow's 'same'.
- `pool`: max and average pooling of a picture.
- `field_outline`: a receptive field drawn on a picture.

`core.lessons` checks these formulas against the layers of a loaded network.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from core import preprocessing
from core.errors import InvalidInputError, did_you_mean
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
    return window_size(n, kernel, 2 * padding, stride, dilation, ceil_mode, padding)


def same_padding(n: int, *, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding of TensorFlow's 'same' (timm's Conv2dSame), split as P // 2 before and the rest after.

    P = max((ceil(N / S) - 1) * S + F' - N, 0), which makes the output ceil(N / S) long.
    """
    span = dilation * (kernel - 1) + 1
    return max((math.ceil(n / stride) - 1) * stride + span - n, 0)


def window_size(n: int, kernel: int, total_padding: int, stride: int, dilation: int, ceil_mode: bool, before: int) -> int:
    """`output_size` with the padding given as a total over both sides, `before` of it on the leading side."""
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

