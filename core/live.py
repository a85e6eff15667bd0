"""One camera frame at a time: top-3 classes and a heatmap overlay, cheap enough for live video on a CPU.

The frame is shrunk to the network's input size first, so every later step works on about 224 x 224 pixels,
whatever the camera sends; then ONE forward pass gives both the classes (its logits) and the CAM of the top
class (a backward pass from that score down to the target layer only), and the overlay is a small JPEG.
Only the one-pass methods are allowed (`methods(model)`): the shared-pass CAM methods and, on a transformer, the
attention methods read from every block on that one pass; the others cost a full backward pass or one forward
pass per channel, which is not video.
"""

import base64
import binascii
import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core import cams, images, predictions, preprocessing
from core.errors import InvalidInputError, UnknownMethodError
from core.models import LoadedModel
from core.predictions import Prediction

#: The methods fast enough for video (`Method.one_pass`): one forward pass and one backward pass, down to the target
#: layer (the Grad-CAM family) or through every attention block (rollout, grad_rollout, LeGrad on transformers).
METHODS = tuple(name for name, m in cams.METHODS.items() if m.one_pass)
TOP_K = 3
JPEG_QUALITY = 80
MAX_FRAME_BYTES = 4 * 1024 * 1024  # a camera frame, not a photo library
MAX_FRAME_SIDE = 1920


@dataclass(frozen=True)
class Timings:
    """Milliseconds per stage of one frame."""

    decode_ms: float  # bytes or array -> RGB image at the network's input size
    cam_ms: float  # ONE forward pass (its logits give the top-k too) + backward to the target layer + weighting
    overlay_ms: float  # colour map, blend and JPEG encoding

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.cam_ms + self.overlay_ms


@dataclass(frozen=True)
class LiveResult:
    predictions: tuple[Prediction, ...]  # most probable first
    method: str
    target: int  # the class the heatmap explains (the top-1 prediction)
    overlay_jpeg: bytes  # the heatmap over the shrunk frame, JPEG
    size: tuple[int, int]  # (width, height) of the overlay
    timings: Timings

    @property
    def overlay_data_uri(self) -> str:
        """The overlay as a data: URI, for an <img> in the browser."""
        return "data:image/jpeg;base64," + base64.b64encode(self.overlay_jpeg).decode("ascii")


def methods(model: LoadedModel) -> list[str]:
    """The one-pass methods that apply to `model`, in METHODS order (a transformer adds the attention methods)."""
    return cams.one_pass(model)


def check_method(name: str, model: LoadedModel | None = None) -> cams.Method:
    """`name` if it is fast enough for video, else an UnknownMethodError that says which ones are."""
    method = cams.check_method(name, model)
    if not method.one_pass:
        raise UnknownMethodError(
            f"{method.title} is too slow for live video ({method.cost}). "
            f"Choose a one-pass method: {', '.join(methods(model) if model is not None else METHODS)}."
        )
    return method


Frame = bytes | str | np.ndarray | Image.Image


def frame_bytes(text: str) -> bytes:
    """The bytes of a base64 frame as a browser sends it ("data:image/jpeg;base64,..." or bare base64)."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidInputError("A camera frame given as a data URI must be base64-encoded.")
    if len(text) * 3 // 4 > MAX_FRAME_BYTES:
        raise InvalidInputError(
            f"A camera frame of about {len(text) * 3 / 4 / 2**20:.1f} MB is too large; frames up to "
            f"{MAX_FRAME_BYTES // 2**20} MB are accepted. Send a smaller frame."
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("A camera frame given as text must be base64 (optionally a data URI).") from None


def frame_image(frame: Frame) -> Image.Image:
    """An RGB image from JPEG/PNG bytes (decoded safely), base64 text, an (H, W, 3) uint8 array or a PIL image."""
    if isinstance(frame, str):
        frame = frame_bytes(frame)
    if isinstance(frame, bytes | bytearray | memoryview):
        data = bytes(frame)
        if len(data) > MAX_FRAME_BYTES:
            raise InvalidInputError(
                f"A camera frame of {len(data) / 2**20:.1f} MB is too large; frames up to "
                f"{MAX_FRAME_BYTES // 2**20} MB are accepted. Send a smaller frame."
            )
        return images.decode(data, max_side=MAX_FRAME_SIDE).image
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InvalidInputError(
                f"A camera frame must be an (H, W, 3) uint8 RGB array, got shape {frame.shape} of {frame.dtype}."
            )
        if min(frame.shape[:2]) < images.MIN_SIDE or max(frame.shape[:2]) > images.MAX_SIDE:
            raise InvalidInputError(
                f"A camera frame of {frame.shape[1]}x{frame.shape[0]} pixels cannot be used: each side must be "
                f"between {images.MIN_SIDE} and {images.MAX_SIDE}."
            )
        return Image.fromarray(np.ascontiguousarray(frame), mode="RGB")
    raise InvalidInputError(
        "A camera frame must be JPEG or PNG bytes, base64 text, an RGB array or a PIL image, "
        f"got {type(frame).__name__}."
    )


def analyse(
    model: LoadedModel,
    frame: Frame,
    *,
    method: str = cams.DEFAULT_METHOD,
    top_k: int | None = None,
    opacity: float = 0.5,
    colormap: str = "jet",
    quality: int = JPEG_QUALITY,
) -> LiveResult:
    """Top-k classes and the `method` heatmap of the top-1 class for one camera frame.

    Thread-safe: core.cams holds the model's lock around the pass.

    Raises:
        InvalidInputError: unreadable or hostile bytes, a wrong array, bad opacity or colormap.
        UnknownMethodError: an unknown method, or one too slow for video.
    """
    check_method(method, model)
    top_k = min(TOP_K, len(model.categories)) if top_k is None else top_k  # the Shapes models know 4 classes
    if not 1 <= top_k <= len(model.categories):
        raise InvalidInputError(f"top_k must be between 1 and {len(model.categories)}, got {top_k}.")
    if colormap not in images.COLORMAPS:  # checked before any work
        raise InvalidInputError(f"Unknown colormap '{colormap}'. Choose one of: {', '.join(images.COLORMAPS)}.")
    if not 0.0 <= opacity <= 1.0:
        raise InvalidInputError(f"Opacity must be between 0 and 1, got {opacity}.")

    started = time.perf_counter()
    small = preprocessing.resize(frame_image(frame), model.spec)  # the network's input size, aspect kept
    decoded = time.perf_counter()
    probabilities, cam = cams.compute_top1(model, small, method=method)  # one pass: the classes and the map
    top = predictions.top(model, probabilities, top_k=top_k)[0]
    explained = time.perf_counter()
    buffer = io.BytesIO()
    Image.fromarray(cam.overlay(small, opacity=opacity, colormap=colormap)).save(buffer, format="JPEG", quality=quality)
    finished = time.perf_counter()

    timings = Timings((decoded - started) * 1e3, (explained - decoded) * 1e3, (finished - explained) * 1e3)
    return LiveResult(tuple(top), method, cam.target, buffer.getvalue(), small.size, timings)
