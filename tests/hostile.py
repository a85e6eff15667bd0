"""Hostile and odd image files, built in memory, for the decoder and the CLI.

Each case is a `Case(name, data, expect, ...)`:

* expect == "ok": `core.images.decode(data)` must return an RGB image of `size` and `check(decoded)`
  must pass (it asserts specific pixel values, notes, ...).
* expect == "refused": decode must raise `InvalidInputError` whose message contains `match`
  (case-insensitive): the words that tell the user what was wrong.

Nothing touches the disk or the network; building every case takes well under a second or two.
`cases()` builds them once and caches the list; `by_name(name)` picks one.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

OK = "ok"
REFUSED = "refused"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str  # OK or REFUSED
    size: tuple[int, int] | None = None  # (width, height) of the decoded image, for OK cases
    check: Callable | None = field(default=None, repr=False)  # check(decoded) -> None, asserts
    match: str = ""  # for REFUSED cases: a word or phrase the message must contain
    suffix: str = ".jpg"  # the file name a user would give it (the CLI tests write it so)

    def __repr__(self) -> str:  # short ids in pytest output
        return f"Case({self.name}, {len(self.data)} bytes, {self.expect})"


# ---------------------------------------------------------------------------------------------
# Helpers


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes, *, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def raw_png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, color_type: int = 0,
            extra: bytes = b"") -> bytes:
    """A PNG assembled chunk by chunk: IHDR (declaring any size), `extra` chunks, one IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def halves(width: int, height: int, left, right, mode: str = "RGB") -> Image.Image:
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def px(decoded, x: int, y: int) -> tuple[int, int, int]:
    return decoded.image.getpixel((x, y))


def near(actual, expected, tolerance: int = 0) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_near(actual, expected, tolerance: int = 0, what: str = "") -> None:
    assert near(actual, expected, tolerance), f"{what}: got {actual}, expected {expected} +- {tolerance}"


def assert_grey(decoded, x: int, y: int, low: int, high: int) -> None:
    r, g, b = px(decoded, x, y)
    assert r == g == b, f"({x},{y}) should be grey, got {(r, g, b)}"
    assert low <= r <= high, f"({x},{y}) = {r}, expected within [{low}, {high}]"


RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# ---------------------------------------------------------------------------------------------
# Refused: not an image, or not one we open


def _refused() -> list[Case]:
    rng = np.random.default_rng(1234)
    noise = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    jpeg = encode(noise, "JPEG", quality=90)  # noise: most of the file is scan data, cut below
    png = encode(noise, "PNG")

    # Corrupt PNGs: one with a wrong IHDR CRC, one whose IDAT is not a zlib stream (CRC recomputed).
    ihdr_end = 8 + 8 + 13 + 4
    bad_crc = bytearray(png)
    bad_crc[ihdr_end - 1] ^= 0xFF
    idat_at = png.index(b"IDAT")
    (idat_len,) = struct.unpack(">I", png[idat_at - 4: idat_at])
    garbled = bytes(rng.integers(0, 256, idat_len, dtype=np.uint8))
    bad_idat = png[: idat_at - 4] + png_chunk(b"IDAT", garbled) + png[idat_at + 4 + idat_len + 4:]

    # PSD (Photoshop) header and a 16x16 RGB raw body: Pillow could open it, we must not.
    psd = (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 16, 16, 8, 3) + struct.pack(">III", 0, 0, 0)
           + struct.pack(">H", 0) + bytes(3 * 16 * 16))
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
           b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'

    # Decompression bombs: huge sizes declared in the header, a few KB on disk. The IDAT holds the
    # real zero rows of the first 64 lines (a decoder would happily go on inflating).
    bomb_rows = zlib.compress(bytes(64 * (30000 + 1)), 9)
    bomb = raw_png(30000, 30000, bomb_rows)
    bomb_49mp = raw_png(7000, 7000, zlib.compress(bytes(64 * 7001), 9))  # under Pillow's own limit
    gif_bomb = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
                + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00;")
    wide = encode(Image.new("L", (60000, 1), 128), "PNG")
    wide_8 = encode(Image.new("L", (60000, 8), 128), "PNG")

    return [
        Case("zero_bytes", b"", REFUSED, match="empty"),
        Case("random_garbage", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), REFUSED, match="not an image"),
        Case("text_named_jpg", b"Dear colleague,\nplease find the photo attached.\n" * 20, REFUSED,
             match="not an image"),
        Case("html_named_png", b"<!DOCTYPE html><html><body><img src=x></body></html>", REFUSED,
             match="not an image", suffix=".png"),
        Case("svg_named_png", svg, REFUSED, match="not an image", suffix=".png"),
        Case("jpeg_magic_only", b"\xff\xd8\xff", REFUSED, match="not an image"),
        Case("truncated_jpeg", jpeg[: len(jpeg) // 2], REFUSED, match="truncated"),
        Case("jpeg_without_eoi_and_scan", jpeg[: jpeg.index(b"\xff\xda")], REFUSED, match="truncated"),
        Case("truncated_png", png[: len(png) * 2 // 3], REFUSED, match="truncated", suffix=".png"),
        Case("png_header_only", png[:40], REFUSED, match="", suffix=".png"),
        Case("png_bad_crc", bytes(bad_crc), REFUSED, match="", suffix=".png"),
        Case("png_bad_idat", bad_idat, REFUSED, match="corrupt", suffix=".png"),
        Case("png_bomb_30000x30000", bomb, REFUSED, match="megapixels", suffix=".png"),
        Case("png_bomb_7000x7000", bomb_49mp, REFUSED, match="megapixels", suffix=".png"),
        Case("gif_bomb_65535x65535", gif_bomb, REFUSED, match="megapixels", suffix=".gif"),
        Case("png_60000x1", wide, REFUSED, match="60000x1", suffix=".png"),
        Case("png_60000x8_aspect", wide_8, REFUSED, match="aspect ratio", suffix=".png"),
        Case("png_1x1", encode(Image.new("RGB", (1, 1), RED), "PNG"), REFUSED, match="at least", suffix=".png"),
        Case("png_zero_width", raw_png(0, 16, zlib.compress(b"")), REFUSED, match="", suffix=".png"),
        Case("eps_named_jpg", eps, REFUSED, match="not an image"),
        Case("psd_named_jpg", psd, REFUSED, match="not an image"),
        Case("ico_named_jpg", encode(Image.new("RGB", (32, 32), RED), "ICO"), REFUSED, match="not an image"),
        Case("ppm_named_jpg", encode(Image.new("RGB", (32, 32), RED), "PPM"), REFUSED, match="not an image"),
        Case("over_40mb", b"\xff\xd8\xff\xe0" + bytes(41 * 2**20), REFUSED, match="MB"),
    ]


# ---------------------------------------------------------------------------------------------
# Decoded: odd modes, transparency, orientation, animation, size


def _check_size_and_corners(expected_left, expected_right, tolerance=0):
    def check(decoded):
        w, h = decoded.image.size
        assert_near(px(decoded, 2, h // 2), expected_left, tolerance, "left")
        assert_near(px(decoded, w - 3, h // 2), expected_right, tolerance, "right")

    return check


def _ok() -> list[Case]:
    cases: list[Case] = []
    rgb = halves(64, 48, RED, BLUE)

    # Ordinary files in every accepted format.
    for fmt, suffix, kwargs, tol in (
        ("JPEG", ".jpg", {"quality": 95}, 12),
        ("PNG", ".png", {}, 0),
        ("WEBP", ".webp", {"lossless": True}, 0),
        ("WEBP", ".webp", {"quality": 90}, 24),
        ("BMP", ".bmp", {}, 0),
        ("GIF", ".gif", {}, 0),
        ("TIFF", ".tif", {}, 0),
        ("TIFF", ".tif", {"compression": "tiff_deflate"}, 0),
    ):
        lossy = "quality" in kwargs
        name = f"plain_{fmt.lower()}{'_lossy' if lossy and fmt == 'WEBP' else ''}"
        name += "_deflate" if kwargs.get("compression") else ""

        def check(decoded, fmt=fmt, tol=tol):
            assert decoded.format == fmt, decoded.format
            assert decoded.notes == (), decoded.notes
            _check_size_and_corners(RED, BLUE, tol)(decoded)

        cases.append(Case(name, encode(rgb, fmt, **kwargs), OK, (64, 48), check, suffix=suffix))

    # CMYK JPEG (print workflows): colours must come out right, not inverted.
    cmyk = halves(64, 48, (0, 255, 255, 0), (255, 255, 0, 0), mode="CMYK")  # red | blue
    cases.append(Case("cmyk_jpeg", encode(cmyk, "JPEG", quality=95), OK, (64, 48),
                      _check_size_and_corners(RED, BLUE, 40)))

    # 16-bit grayscale gradient: must be rescaled (mid value mid-grey), not clipped to white.
    gradient16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (32, 1))
    png16 = encode(Image.fromarray(gradient16), "PNG")

    def check16(decoded):
        assert_grey(decoded, 0, 8, 0, 0)
        assert_grey(decoded, 255, 8, 255, 255)
        assert_grey(decoded, 128, 8, 120, 136)
        assert_grey(decoded, 64, 8, 56, 72)
        assert any("rescaled" in n for n in decoded.notes), decoded.notes

    cases.append(Case("gray16_png_gradient", png16, OK, (256, 32), check16, suffix=".png"))

    # A dark 16-bit image (values 0..1000, as from a 12-bit sensor): still not white, not clipped.
    dark16 = np.tile(np.linspace(0, 1000, 64).round().astype(np.uint16), (16, 1))

    def check_dark16(decoded):
        values = np.asarray(decoded.image)[..., 0]
        assert values.max() < 255, "a dark 16-bit image must not be clipped to white"

    cases.append(Case("gray16_png_dark", encode(Image.fromarray(dark16), "PNG"), OK, (64, 16),
                      check_dark16, suffix=".png"))

    # 16-bit RGB PNG (48 bits per pixel), hand-made: Pillow reads the high bytes.
    row = b"\x00" + (struct.pack(">HHH", 65535, 0, 0) * 8 + struct.pack(">HHH", 0, 0, 65535) * 8)
    png48 = raw_png(16, 16, zlib.compress(row * 16), bit_depth=16, color_type=2)
    cases.append(Case("rgb48_png", png48, OK, (16, 16), _check_size_and_corners(RED, BLUE), suffix=".png"))

    # 32-bit float TIFFs (mode F): [0, 1] maps to [0, 255]; other ranges are min-max rescaled.
    unit = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (32, 1))
    wide_range = np.tile(np.linspace(-5.0, 100.0, 256, dtype=np.float32), (32, 1))
    with_nan = unit.copy()
    with_nan[:, :32] = np.nan
    with_nan[0, 100] = np.inf
    with_nan[1, 100] = -np.inf
    offset_nan = np.tile(np.linspace(50.0, 100.0, 256, dtype=np.float32), (32, 1))
    offset_nan[:4] = np.nan  # the NaNs must not pull the range down to a fake 0
    all_nan = np.full((16, 16), np.nan, np.float32)

    def check_unit(decoded):
        assert_grey(decoded, 0, 8, 0, 0)
        assert_grey(decoded, 255, 8, 255, 255)
        assert_grey(decoded, 128, 8, 122, 134)

    def check_wide(decoded):
        assert_grey(decoded, 0, 8, 0, 0)  # -5 -> black
        assert_grey(decoded, 255, 8, 255, 255)  # 100 -> white
        assert_grey(decoded, 128, 8, 122, 134)  # 47.7 -> mid-grey (not clipped to 255)
        assert_grey(decoded, 12, 8, 6, 18)  # about 0.0: dark, not clipped to black... nor white

    def check_nan(decoded):
        array = np.asarray(decoded.image)
        assert array.dtype == np.uint8 and np.isfinite(array).all()
        assert_grey(decoded, 255, 8, 250, 255)
        assert_grey(decoded, 128, 8, 115, 140)
        assert len(np.unique(array[8, 32:, 0])) > 100, "the finite gradient must survive the NaNs"

    def check_offset_nan(decoded):
        assert_grey(decoded, 0, 16, 0, 0)  # 50, the smallest finite value -> black
        assert_grey(decoded, 255, 16, 255, 255)
        assert_grey(decoded, 128, 16, 122, 134)

    def check_all_nan(decoded):
        assert np.asarray(decoded.image).min() >= 0  # any finite picture; no crash

    for name, array, check in (
        ("float_tiff_unit", unit, check_unit),
        ("float_tiff_range_-5_100", wide_range, check_wide),
        ("float_tiff_nan_inf", with_nan, check_nan),
        ("float_tiff_50_100_with_nan", offset_nan, check_offset_nan),
        ("float_tiff_all_nan", all_nan, check_all_nan),
    ):
        data = encode(Image.fromarray(array), "TIFF")
        cases.append(Case(name, data, OK, (array.shape[1], array.shape[0]), check, suffix=".tif"))

    # 32-bit integer TIFF (mode I) with negative values.
    int32 = np.tile(np.linspace(-100000, 100000, 64).round().astype(np.int32), (16, 1))

    def check_int32(decoded):
        assert_grey(decoded, 0, 8, 0, 0)
        assert_grey(decoded, 63, 8, 255, 255)
        assert_grey(decoded, 32, 8, 120, 136)

    cases.append(Case("int32_tiff_signed", encode(Image.fromarray(int32), "TIFF"), OK, (64, 16),
                      check_int32, suffix=".tif"))

    # Palette PNG with a transparent index: transparent area -> white.
    palette = Image.new("P", (64, 48), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (3 * 254))
    palette.paste(1, (32, 0, 64, 48))
    cases.append(Case("palette_png_transparent", encode(palette, "PNG", transparency=0), OK, (64, 48),
                      _check_size_and_corners(WHITE, RED), suffix=".png"))
    # Same palette, no transparency: index 0 stays black.
    cases.append(Case("palette_png_opaque", encode(palette, "PNG"), OK, (64, 48),
                      _check_size_and_corners(BLACK, RED), suffix=".png"))

    # RGBA with fully transparent pixels whose colour channels are black: white, not black.
    rgba = halves(64, 48, (0, 0, 0, 0), (0, 0, 255, 255), mode="RGBA")
    rgba.paste((255, 0, 0, 128), (0, 0, 64, 8))  # a half-transparent red strip on top

    def check_rgba(decoded):
        _check_size_and_corners(WHITE, BLUE)(decoded)
        assert_near(px(decoded, 10, 2), (255, 127, 127), 2, "half-transparent red on white")

    cases.append(Case("rgba_png_transparent", encode(rgba, "PNG"), OK, (64, 48), check_rgba, suffix=".png"))
    cases.append(Case("rgba_webp_transparent", encode(rgba, "WEBP", lossless=True), OK, (64, 48), check_rgba,
                      suffix=".webp"))

    # LA (grey + alpha): transparent -> white, opaque black stays black.
    la = halves(64, 48, (0, 0), (0, 255), mode="LA")
    cases.append(Case("la_png", encode(la, "PNG"), OK, (64, 48), _check_size_and_corners(WHITE, BLACK),
                      suffix=".png"))

    # Plain grey (L) and 1-bit.
    cases.append(Case("gray_l_png", encode(halves(64, 48, 77, 200, mode="L"), "PNG"), OK, (64, 48),
                      _check_size_and_corners((77,) * 3, (200,) * 3), suffix=".png"))
    cases.append(Case("gray_l_jpeg", encode(halves(64, 48, 77, 200, mode="L"), "JPEG", quality=95), OK, (64, 48),
                      _check_size_and_corners((77,) * 3, (200,) * 3, 6)))
    cases.append(Case("bilevel_1bit_png", encode(halves(64, 48, 0, 1, mode="1"), "PNG"), OK, (64, 48),
                      _check_size_and_corners(BLACK, WHITE), suffix=".png"))
    cases.append(Case("bilevel_1bit_tiff_g4", encode(halves(64, 48, 0, 1, mode="1"), "TIFF", compression="group4"),
                      OK, (64, 48), _check_size_and_corners(BLACK, WHITE), suffix=".tif"))

    # EXIF orientation 6 ("rotate 90 clockwise to display"): stored 40x20 (red left, blue right)
    # -> shown 20x40 with red on top, blue below.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = halves(40, 20, RED, BLUE)

    def check_rotated(decoded):
        assert decoded.original_size == (40, 20)
        assert_near(px(decoded, 10, 3), RED, 40, "top")
        assert_near(px(decoded, 10, 36), BLUE, 40, "bottom")

    cases.append(Case("exif_orientation_6_jpeg", encode(stored, "JPEG", quality=95, exif=exif), OK, (20, 40),
                      check_rotated))
    # Orientation in a PNG with transparency (eXIf chunk): the alpha path must keep the rotation.
    stored_rgba = halves(40, 20, (255, 0, 0, 255), (0, 0, 255, 255), mode="RGBA")
    stored_rgba.paste((0, 0, 0, 0), (0, 0, 4, 4))
    cases.append(Case("exif_orientation_6_rgba_png", encode(stored_rgba, "PNG", exif=exif), OK, (20, 40),
                      check_rotated, suffix=".png"))
    # Orientation on a 16-bit PNG: the rescale path must keep the rotation too.
    stored16 = np.zeros((20, 40), np.uint16)
    stored16[:, 20:] = 65535

    def check_rotated16(decoded):
        assert_grey(decoded, 10, 3, 0, 0)
        assert_grey(decoded, 10, 36, 255, 255)

    cases.append(Case("exif_orientation_6_gray16_png", encode(Image.fromarray(stored16), "PNG",
                                                               exif=exif), OK, (20, 40), check_rotated16,
                      suffix=".png"))
    # A corrupt EXIF block must not make a good JPEG unreadable.
    good = encode(stored, "JPEG", quality=95)
    app1 = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 40
    bad_exif = good[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + good[2:]
    cases.append(Case("corrupt_exif_jpeg", bad_exif, OK, (40, 20), _check_size_and_corners(RED, BLUE, 40)))

    # Animated GIF, red / green / blue frames: frame 1 shown, with a note saying so.
    frames = [Image.new("RGB", (32, 24), colour) for colour in (RED, GREEN, BLUE)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    def check_animated(decoded):
        assert_near(px(decoded, 16, 12), RED, 0, "frame 1")
        assert any("3" in n and "frame" in n for n in decoded.notes), decoded.notes

    cases.append(Case("animated_gif_3_frames", gif, OK, (32, 24), check_animated, suffix=".gif"))
    webp_anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    # (copies: saving as MPO leaves JPEG encoder settings on the images it saved)
    mpo = encode(frames[0].copy(), "MPO", save_all=True, append_images=[frames[1].copy()])

    def check_mpo(decoded):
        assert decoded.format == "MPO"
        assert_near(px(decoded, 16, 12), RED, 4, "image 1")
        assert any("2" in n and "frame" in n for n in decoded.notes), decoded.notes

    cases.append(Case("mpo_2_images", mpo, OK, (32, 24), check_mpo))
    cases.append(Case("animated_webp_3_frames", webp_anim, OK, (32, 24), check_animated, suffix=".webp"))
    # A GIF whose first frame is transparent in its left half.
    gif_t = Image.new("P", (32, 24), 0)
    gif_t.putpalette([0, 0, 0, 0, 0, 255] + [0] * (3 * 254))
    gif_t.paste(1, (16, 0, 32, 24))
    cases.append(Case("gif_transparent", encode(gif_t, "GIF", transparency=0), OK, (32, 24),
                      _check_size_and_corners(WHITE, BLUE), suffix=".gif"))
    # Multi-page TIFF: page 1 shown.
    tiff_pages = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    cases.append(Case("multipage_tiff", tiff_pages, OK, (32, 24), check_animated, suffix=".tif"))

    # A big photo: 5000x3000 JPEG is downscaled to 4096 on its long side, with a note.
    yy, xx = np.mgrid[0:3000, 0:5000]
    big = np.stack([(xx * 255 // 4999), (yy * 255 // 2999), np.full_like(xx, 128)], -1).astype(np.uint8)
    big_jpeg = encode(Image.fromarray(big), "JPEG", quality=80)

    def check_big(decoded):
        assert decoded.original_size == (5000, 3000)
        assert any("4096" in n and "5000" in n for n in decoded.notes), decoded.notes
        assert_near(px(decoded, 4095, 2457), (255, 255, 128), 12, "bottom right")
        assert_near(px(decoded, 0, 0), (0, 0, 128), 12, "top left")

    cases.append(Case("big_jpeg_5000x3000", big_jpeg, OK, (4096, 2458), check_big))
    # An 8.5:1 strip: allowed (under 12:1), not downscaled.
    cases.append(Case("png_1020x120_strip", encode(halves(1020, 120, RED, BLUE), "PNG"), OK, (1020, 120),
                      _check_size_and_corners(RED, BLUE), suffix=".png"))
    # The smallest accepted image.
    cases.append(Case("png_8x8", encode(halves(8, 8, RED, BLUE), "PNG"), OK, (8, 8), None, suffix=".png"))
    return cases


@functools.cache
def cases() -> tuple[Case, ...]:
    from tests import hostile_heif, hostile_png_text  # HEIC and AVIF, PNG text bombs: import this module's helpers

    built = tuple(_refused() + _ok() + hostile_heif.cases() + hostile_png_text.cases())
    names = [c.name for c in built]
    assert len(names) == len(set(names)), "case names must be unique"
    return built


def by_name(name: str) -> Case:
    for case in cases():
        if case.name == name:
            return case
    raise KeyError(name)


if __name__ == "__main__":  # python tests/hostile.py: build them all and say how long it took
    import time

    start = time.perf_counter()
    built = cases()
    print(f"{len(built)} cases in {time.perf_counter() - start:.2f} s")
    for case in built:
        print(f"  {case.name:32s} {case.expect:8s} {len(case.data):>9d} bytes")
