"""Untrusted bytes -> a safe RGB picture, and heatmap overlays on it.

Every image a user gives us goes through `decode`: the UI, the CLI and the tests share this one path.
Limits are checked from the header, before any pixel is decoded.
"""

import dataclasses
import functools
import io
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import InvalidInputError

# HEIC/HEIF (iPhone photos) through the pillow-heif plugin; Pillow reads AVIF itself (since 11.2).
pillow_heif.register_heif_opener()

#: Formats we decode. Anything else (EPS, PSD, ICO, ...) is refused, whatever its file name says.
#: AVIF comes before HEIF: both accept the generic "mif1" brand, and only AVIF's opener refuses what is not its own.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "AVIF", "HEIF")
#: The same formats in words, for messages.
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF"
#: File name endings of those formats (lower-case), for zips, folders and uploaders.
SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"})
MAX_BYTES = 40 * 1024 * 1024
MAX_PIXELS = 40_000_000  # from the header, before decoding: 120 MB of RGB at most
MAX_ASPECT = 12.0  # a 60000 x 1 "image" would ask a resize for gigabytes
MIN_SIDE = 8
MAX_SIDE = 4096  # decoded photos larger than this are downscaled right away
BACKGROUND = (255, 255, 255)  # transparency is composited on white

#: What `Image.open` is asked to try. MPO is not in Pillow's registry of openers (the JPEG opener returns
#: MPO images itself), and naming it there raised KeyError('MPO') for every file that was not JPEG or PNG.
_OPENERS = tuple(name for name in FORMATS if name != "MPO")
#: ISO-BMFF major brands of HEIC/HEIF and AVIF files (bytes 8-12, after "ftyp").
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
                          b"miaf", b"avif", b"avis"})

#: PNG chunks that carry only metadata (text, colour profile): dropped when Pillow refuses to inflate them.
_PNG_METADATA = {b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"iCCP": "colour profile"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "plasma", "hot", "bone")


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for a model, with what was done to get it."""

    image: Image.Image  # mode "RGB"
    format: str  # what the bytes really were ("PNG", "JPEG", ...)
    original_size: tuple[int, int]  # (width, height) as stored in the file
    notes: tuple[str, ...] = ()  # things the user should know ("showing frame 1 of 12", ...)


def decode(data: bytes, *, max_side: int = MAX_SIDE) -> DecodedImage:
    """Decode untrusted bytes into an RGB image, or raise InvalidInputError saying why.

    Handles EXIF orientation, transparency (composited on white), palette, CMYK, grayscale,
    16-bit and float images (rescaled, not clipped), and animations (first frame, with a note).
    A PNG whose text or colour-profile chunks Pillow refuses (a zTXt "bomb") is decoded without them, with a note.

    Raises:
        InvalidInputError: empty, too large, not an image, an unsupported format, truncated or corrupt.
    """
    if not data:
        raise InvalidInputError(f"The file is empty (0 bytes). Choose a {FORMAT_NAMES} image.")
    if len(data) > MAX_BYTES:
        raise InvalidInputError(
            f"The file is {len(data) / 2**20:.1f} MB; images up to {MAX_BYTES // 2**20} MB are accepted."
        )
    try:
        return _decode(data, max_side)
    except _UnreadableMetadata:
        pass
    # Browsers show such a file: read the image without its metadata. The byte and pixel limits still apply,
    # and a failure now is about the image itself, with its own message.
    stripped, dropped = _without_png_metadata(data)
    decoded = _decode(stripped, max_side)
    note = f"PNG metadata dropped ({dropped}): too large or unreadable to read safely; the image itself is intact."
    return dataclasses.replace(decoded, notes=(*decoded.notes, note))


class _UnreadableMetadata(Exception):
    """Pillow refused a PNG for a chunk that only carries metadata (a zTXt/iTXt/iCCP "bomb", say)."""


def _decode(data: bytes, max_side: int) -> DecodedImage:
    notes: list[str] = []
    with _Decoding(data):
        image = _open(data)
        width, height = image.size
        fmt = image.format or "unknown"
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            image.seek(0)
            notes.append(f"Animated {fmt}: showing frame 1 of {frames}.")
        if fmt in ("JPEG", "MPO") and max(width, height) > max_side:
            image.draft("RGB", (max_side, max_side))  # decode big JPEGs at a reduced scale
        image.load()
        if image.info.get("bit_depth", 8) > 8:  # pillow-heif rescales 10- and 12-bit HEIC to 8 bits
            notes.append(f"High bit-depth image ({image.info['bit_depth']}-bit {fmt}) rescaled to 8 bits.")
        # Rotate before converting: the conversions for alpha and high bit depth build new images
        # that no longer carry the EXIF orientation.
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image, notes)
    if max(rgb.size) > max_side:
        before = rgb.size
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        notes.append(f"Downscaled from {before[0]}x{before[1]} to {rgb.size[0]}x{rgb.size[1]} pixels.")
    return DecodedImage(rgb, fmt, (width, height), tuple(notes))


def decoded_size(data: bytes, *, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(width, height) of `decode(data, max_side=max_side).image`, read from the header: no pixel is decoded.

    The same steps as `decode`: the JPEG draft scale, the EXIF orientation (5-8 swap the sides) and the
    downscale to `max_side`. Where the header does not tell (a PNG with metadata after its pixels, a file
    Pillow refuses to open), the image is decoded and its size returned, or decode's InvalidInputError raised.
    A file whose pixels are cut or corrupt behind a sound header is sized: decoding it raises later.
    """
    if not data or len(data) > MAX_BYTES:
        decode(data)  # its message
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_OPENERS) as image:
                width, height = image.size
                _check_header(width, height)
                if image.format == "PNG" and _late_png_metadata(data):
                    raise _UnreadableMetadata  # its EXIF is only read with the pixels
                if image.format in ("JPEG", "MPO") and max(width, height) > max_side:
                    image.draft("RGB", (max_side, max_side))
                width, height = image.size
                # Image's own getexif reads what the header gave (EXIF, XMP); PNG's would load the pixels first
                orientation = Image.Image.getexif(image).get(0x0112, 1)
    except InvalidInputError:
        raise
    except Exception:  # the decoder's own answer, or its message
        return decode(data, max_side=max_side).image.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return _thumbnail_size(width, height, max_side)


def _thumbnail_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size `Image.thumbnail((side, side))` gives a width x height image (Pillow's rounding)."""
    if side >= width and side >= height:
        return width, height
    aspect = width / height
    if 1 >= aspect:  # x / y >= aspect with x == y == side
        x = side * aspect
        return max(min(math.floor(x), math.ceil(x), key=lambda n: abs(aspect - n / side)), 1), side
    y = side / aspect
    return side, max(min(math.floor(y), math.ceil(y), key=lambda n: 0 if n == 0 else abs(aspect - side / n)), 1)


def decode_stored(data: bytes) -> Image.Image:
    """The first frame of `data` as stored (its own mode, no EXIF rotation, full size), loaded once: what a
    mask file is read as. The same formats, limits and messages as `decode`.

    Raises:
        InvalidInputError: empty, too large, not an image, an unsupported format, truncated or corrupt.
    """
    if not data or len(data) > MAX_BYTES:
        decode(data)  # its message
    def first_frame(raw: bytes) -> Image.Image:
        with _Decoding(raw):
            image = _open(raw)
            image.seek(0)
            image.load()
            return image

    try:
        return first_frame(data)
    except _UnreadableMetadata:
        return first_frame(_without_png_metadata(data)[0])


class _Decoding:
    """Decoder failures of `data` -> InvalidInputError (or _UnreadableMetadata for a PNG's metadata chunk)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> None:
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        # Pillow only *warns* for decompression bombs below 2x its limit: make that an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)

    def __exit__(self, kind, error, trace) -> bool:
        self.warnings.__exit__(None, None, None)
        if error is None or isinstance(error, InvalidInputError | _UnreadableMetadata):
            return False
        data = self.data
        if isinstance(error, UnidentifiedImageError):
            if _has_png_metadata(data):  # Pillow's PNG opener refused a chunk (a zTXt of unknown compression, ...)
                raise _UnreadableMetadata from None
            if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:  # HEIC or AVIF whose header libheif/libavif refused
                raise InvalidInputError(
                    "This HEIC or AVIF file is truncated or corrupt: its header cannot be read."
                ) from None
            raise InvalidInputError(f"This file is not an image we can read (expected {FORMAT_NAMES}).") from None
        if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
            raise InvalidInputError(
                f"The image is too large to decode safely (more than {MAX_PIXELS / 1e6:.0f} megapixels)."
            ) from None
        if isinstance(error, OSError | ValueError | SyntaxError | EOFError | IndexError | KeyError | TypeError
                      | MemoryError | RuntimeError):
            # Pillow's decoders fail with several exception families (libheif's with RuntimeError too); all mean
            # "corrupt or truncated". Their messages can span lines: one line of at most 160 characters is kept.
            if isinstance(error, ValueError | SyntaxError) and _has_png_metadata(data):
                # e.g. "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK": decode() retries without it
                raise _UnreadableMetadata from None
            detail = " ".join(str(error).split())[:160]
            if "security limit" in detail.lower():  # libheif refused to allocate what the file declares
                raise InvalidInputError(
                    "The image declares a size too large to decode safely (over the decoder's limit).") from None
            raise InvalidInputError(f"The image file is corrupt or truncated and cannot be decoded ({detail}).") from None
        return False



def _open(data: bytes) -> Image.Image:
    """Pillow's lazy image of `data` (only our formats), its size checked from the header."""
    image = Image.open(io.BytesIO(data), formats=_OPENERS)
    _check_header(*image.size)
    return image


def _late_png_metadata(data: bytes) -> bool:
    """Whether a PNG has chunks other than pixels after its first IDAT (Pillow reads those only with the pixels)."""
    seen = False
    for _, _, kind in _png_chunks(data):
        if kind == b"IDAT":
            seen = True
        elif seen and kind != b"IEND":
            return True
    return False


def _png_chunks(data: bytes):
    """(start, end, type) of each whole chunk of a PNG, in order; stops at IEND or where the file is cut."""
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind, end = data[at + 4: at + 8], at + 12 + length
        if end > len(data):
            return
        yield at, end, kind
        if kind == b"IEND":
            return
        at = end


def _has_png_metadata(data: bytes) -> bool:
    return data.startswith(_PNG_SIGNATURE) and any(kind in _PNG_METADATA for _, _, kind in _png_chunks(data))


def _without_png_metadata(data: bytes) -> tuple[bytes, str]:
    """The PNG without its text and colour-profile chunks, and what was dropped in words ("2 text chunks")."""
    kept, dropped, last = [data[: len(_PNG_SIGNATURE)]], {}, len(_PNG_SIGNATURE)
    for start, end, kind in _png_chunks(data):
        if kind in _PNG_METADATA:
            dropped[_PNG_METADATA[kind]] = dropped.get(_PNG_METADATA[kind], 0) + 1
        else:
            kept.append(data[start:end])
        last = end
    kept.append(data[last:])  # whatever follows (a cut-off chunk): the decoder judges it as before
    words = ", ".join(f"{count} {what} chunk{'s' if count > 1 else ''}" for what, count in dropped.items())
    return b"".join(kept), words


def _check_header(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidInputError(f"The image is {width}x{height} pixels; each side must be at least {MIN_SIDE}.")
    if width * height > MAX_PIXELS:
        raise InvalidInputError(
            f"The image is {width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"at most {MAX_PIXELS / 1e6:.0f} megapixels are accepted. Downscale it first."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise InvalidInputError(
            f"The image is {width}x{height}: an aspect ratio over {MAX_ASPECT:.0f}:1 cannot be classified. "
            "Crop it to the object first."
        )


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        array = _rescale(array, mode)
        notes.append(f"High bit-depth image ({mode}) rescaled to 8 bits.")
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return image.convert("RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _rescale(array: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float pixels to uint8 without clipping them to black or white."""
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    # The range comes from the finite values only: NaN/inf become the darkest value, not a fake 0.
    low, high = float(array[finite].min()), float(array[finite].max())
    array = np.where(finite, array, low)
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = array * 255.0
    elif mode != "F" and low >= 0 and high <= 65535 and mode.startswith("I;16"):
        scaled = array / 257.0
    elif high > low:
        scaled = (array - low) / (high - low) * 255.0
    else:
        scaled = np.zeros_like(array)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: Long side of the pictures the dashboard shows on screen (see `fit`). A 12-MP phone photo is 4032 px wide,
#: three times what a page shows (a page column is at most 730 CSS px, 1460 device px on a high-DPI screen):
#: its heatmap and overlay at full size cost seconds and 100 MB for nothing. Under 1460, so that Streamlit
#: sends the picture as it is instead of resizing and encoding it again.
DISPLAY_SIDE = 1440


def display_size(size: tuple[int, int], max_side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(width, height) of a picture of `size` scaled down so its long side is at most `max_side` (never up)."""
    width, height = size
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, max_side: int = DISPLAY_SIDE) -> Image.Image:
    """The picture at `display_size` (the image itself when it is small enough), RGB."""
    size = display_size(image.size, max_side)
    if size == image.size:
        return image.convert("RGB") if image.mode != "RGB" else image
    # reducing_gap: Pillow first shrinks by the largest integer factor that stays above the target (a fast box
    # filter), then resamples the rest with Lanczos: 0.08 s instead of 0.2 s for a 12-MP photo
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS, reducing_gap=1.0)



@dataclass(frozen=True)
class Picture:
    """An image as pages show it: at most DISPLAY_SIDE px long, with what the whole decode said."""

    image: Image.Image  # RGB at display_size(full_size)
    full_size: tuple[int, int]  # (width, height) of the decoded image the models see
    format: str
    notes: tuple[str, ...]


def picture(decoded: DecodedImage) -> Picture:
    """The decoded image at display size (`fit`), remembering its full size, format and notes."""
    return Picture(fit(decoded.image), decoded.image.size, decoded.format, decoded.notes)


def thumbnail(image: Image.Image, side: int = 96) -> np.ndarray:
    """(side, side, 3) uint8 preview: the whole image, letterboxed on white."""
    return np.asarray(ImageOps.pad(image.convert("RGB"), (side, side), color=BACKGROUND))


def mean_picture(pictures, side: int) -> Image.Image:
    """The pixel-wise mean of `pictures`, each resized to a (side, side) square first."""
    stack = [np.asarray(p.convert("RGB").resize((side, side)), dtype=np.float32) for p in pictures]
    return Image.fromarray(np.mean(stack, axis=0).round().astype(np.uint8))


def mean_heatmap(heatmaps, side: int) -> np.ndarray:
    """(side, side) float32 mean of (H, W) maps of any sizes, each resized to the square first."""
    heat = np.zeros((side, side), np.float32)
    count = 0
    for heatmap in heatmaps:
        square = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize((side, side))
        heat += np.asarray(square, dtype=np.float32)
        count += 1
    return heat / max(count, 1)


def overlay(
    image: Image.Image, heatmap: np.ndarray, *, opacity: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a heatmap over the image at the image's own size.

    Args:
        heatmap: (H, W) float in [0, 1], at the image's size.
        opacity: weight of the heatmap, 0 (image only) to 1 (heatmap only).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if colormap not in COLORMAPS:
        raise InvalidInputError(f"Unknown colormap '{colormap}'. Choose one of: {', '.join(COLORMAPS)}.")
    if not 0.0 <= opacity <= 1.0:
        raise InvalidInputError(f"Opacity must be between 0 and 1, got {opacity}.")
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != rgb.shape[:2]:
        raise InvalidInputError(f"Heatmap shape {heatmap.shape} does not match the image's {rgb.shape[:2]}.")
    # A plain weighted blend. (pytorch-grad-cam's show_cam_on_image divides the result by its maximum,
    # which turned a dark image white at opacity 0 and a black one into NaN; and 255 * 1.01 wrapped
    # round in uint8, painting the hottest spot blue.) NaN counts as cold, values are clipped to [0, 1].
    heat = np.clip(np.nan_to_num(heatmap, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    level = np.rint(heat * 255.0).astype(np.uint8)
    # Both inputs of the blend are 8-bit, so it is a lookup: table[pixel, colour] holds the float32 blend of
    # every pair, computed once per opacity, and the picture costs one gather instead of float maths per pixel.
    pair = rgb.astype(np.uint16) << 8
    pair |= _palette(colormap)[level]
    return _blend_table(float(opacity)).take(pair)


@functools.lru_cache(maxsize=len(COLORMAPS))
def _palette(colormap: str) -> np.ndarray:
    """(256, 3) uint8 RGB: OpenCV's colormap applied to every level 0..255."""
    import cv2  # imported lazily: pytorch-grad-cam needs it anyway, but decode() must stay light

    levels = np.arange(256, dtype=np.uint8).reshape(256, 1)
    code = getattr(cv2, f"COLORMAP_{colormap.upper()}")
    palette = cv2.cvtColor(cv2.applyColorMap(levels, code), cv2.COLOR_BGR2RGB).reshape(256, 3)
    palette.flags.writeable = False
    return palette


@functools.lru_cache(maxsize=64)
def _blend_table(opacity: float) -> np.ndarray:
    """(65536,) uint8: entry (pixel << 8) | colour is round(255 * ((1 - opacity) * pixel/255 + opacity * colour/255))
    in float32, the same arithmetic the per-pixel blend did, so the overlay is unchanged bit for bit."""
    pixel = (np.arange(256, dtype=np.float32) / 255.0)[:, None]
    colour = (np.arange(256, dtype=np.float32) / 255.0)[None, :]
    blend = (1.0 - opacity) * pixel + opacity * colour
    table = np.clip(np.rint(blend * 255.0), 0, 255).astype(np.uint8).ravel()
    table.flags.writeable = False
    return table


def to_png(array: np.ndarray, *, compress_level: int = 6) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array (lossless at every level; 1 is fastest, 9 smallest)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def to_jpeg(array: np.ndarray, *, quality: int = 88) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 array: what a page sends the browser to show (a PNG of a photo is 5x larger)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# Truncated files must fail loudly, never decode half an image silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False
