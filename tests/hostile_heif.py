"""HEIC/HEIF (iPhone photos, through pillow-heif) and AVIF (Pillow) files, ordinary and hostile, for
tests/hostile.py's `cases()`: the same Case records, the same expectations as every other format.

Hostile ones are real files edited in place: cut short, a huge or thin size declared in the `ispe`
(and `clap`) boxes the decoders read before any pixel, a brand changed, a wrong file name.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from core import images  # registers pillow-heif's opener, so Pillow can write HEIF here too
from tests.hostile import OK, REFUSED, Case, assert_near, encode, halves, px

RED, BLUE = (255, 0, 0), (0, 0, 255)
assert "HEIF" in images.FORMATS and "AVIF" in images.FORMATS


def declare_size(data: bytes, width: int, height: int) -> bytes:
    """The file with `width` x `height` written into its `ispe` box and, when there is one, its `clap` box
    (the crop HEIC encoders add; libheif reports the cropped size)."""
    edited = bytearray(data)
    at = edited.find(b"ispe")
    struct.pack_into(">II", edited, at + 8, width, height)  # after the box type: version/flags, width, height
    at = edited.find(b"clap")
    if at != -1:
        struct.pack_into(">IIII", edited, at + 4, width, 1, height, 1)  # width N/D, height N/D
    return bytes(edited)


def ten_bit_heic(array16: np.ndarray) -> bytes:
    """A 10-bit HEIC (as iPhones save HDR photos) from an (H, W, 3) uint16 array."""
    import pillow_heif

    height, width = array16.shape[:2]
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(width, height), data=np.ascontiguousarray(array16).tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=95)
    return buffer.getvalue()


def _check_halves(decoded, tolerance: int = 40):
    width, height = decoded.image.size
    assert_near(px(decoded, 2, 2), RED, tolerance, "left")
    assert_near(px(decoded, width - 3, height - 3), BLUE, tolerance, "right")


def _check_rotated(decoded):
    # stored 40x20 (red left, blue right), EXIF orientation 6 -> shown 20x40, red on top
    assert decoded.original_size in ((40, 20), (20, 40))  # libheif applies the rotation while decoding
    assert_near(px(decoded, 10, 3), RED, 40, "top")
    assert_near(px(decoded, 10, 36), BLUE, 40, "bottom")


def cases() -> list[Case]:
    picture = halves(64, 48, RED, BLUE)
    heic = encode(picture, "HEIF", quality=90)
    avif = encode(picture, "AVIF", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = halves(40, 20, RED, BLUE)
    rgba = halves(64, 48, (255, 0, 0, 255), (0, 0, 255, 0), mode="RGBA")

    def check_rgba(decoded):
        assert_near(px(decoded, 2, 2), RED, 40, "opaque left")
        assert_near(px(decoded, 60, 40), (255, 255, 255), 40, "transparent right, on white")

    deep = np.zeros((48, 64, 3), np.uint16)
    deep[:, :32] = (65535, 0, 0)
    deep[:, 32:] = (32768, 32768, 32768)  # mid-grey: rescaled (128), not clipped to white

    def check_ten_bit(decoded):
        assert any("10-bit" in note for note in decoded.notes), decoded.notes
        assert_near(px(decoded, 4, 4), RED, 12, "red")
        assert_near(px(decoded, 60, 40), (128, 128, 128), 12, "mid-grey")

    def check_heif(decoded):
        assert decoded.format == "HEIF"
        _check_halves(decoded)

    def check_avif(decoded):
        assert decoded.format == "AVIF"
        _check_halves(decoded)

    heic_mif1 = heic[:8] + b"mif1" + heic[12:]  # the generic brand: AVIF's opener is tried first and must let go
    avif_mif1 = avif[:8] + b"mif1" + avif[12:]
    return [
        Case("plain_heic", heic, OK, (64, 48), check_heif, suffix=".heic"),
        Case("plain_avif", avif, OK, (64, 48), check_avif, suffix=".avif"),
        Case("heic_mif1_brand", heic_mif1, OK, (64, 48), check_heif, suffix=".heif"),
        Case("avif_mif1_brand", avif_mif1, OK, (64, 48), check_avif, suffix=".avif"),
        Case("heic_named_jpg", heic, OK, (64, 48), check_heif, suffix=".jpg"),
        Case("jpeg_named_heic", encode(picture, "JPEG", quality=95), OK, (64, 48), _check_halves, suffix=".heic"),
        Case("exif_orientation_6_heic", encode(stored, "HEIF", quality=95, exif=exif.tobytes()), OK, (20, 40),
             _check_rotated, suffix=".heic"),
        Case("exif_orientation_6_avif", encode(stored, "AVIF", quality=95, exif=exif.tobytes()), OK, (20, 40),
             _check_rotated, suffix=".avif"),
        Case("rgba_heic_transparent", encode(rgba, "HEIF", quality=95), OK, (64, 48), check_rgba, suffix=".heic"),
        Case("rgba_avif_transparent", encode(rgba, "AVIF", quality=95), OK, (64, 48), check_rgba, suffix=".avif"),
        Case("heic_10bit", ten_bit_heic(deep), OK, (64, 48), check_ten_bit, suffix=".heic"),
        # hostile
        Case("truncated_heic", heic[: len(heic) * 3 // 4], REFUSED, match="truncated", suffix=".heic"),
        Case("heic_header_only", heic[:40], REFUSED, match="truncated", suffix=".heic"),
        Case("heic_ftyp_only", heic[:32], REFUSED, match="truncated", suffix=".heic"),
        Case("truncated_avif", avif[: len(avif) * 3 // 4], REFUSED, match="truncated", suffix=".avif"),
        Case("avif_header_only", avif[:40], REFUSED, match="truncated", suffix=".avif"),
        Case("heic_declares_7000x7000", declare_size(heic, 7000, 7000), REFUSED, match="megapixels", suffix=".heic"),
        Case("heic_declares_30000x30000", declare_size(heic, 30000, 30000), REFUSED, match="megapixels",
             suffix=".heic"),
        Case("avif_declares_7000x7000", declare_size(avif, 7000, 7000), REFUSED, match="megapixels", suffix=".avif"),
        Case("heic_declares_9000x100", declare_size(heic, 9000, 100), REFUSED, match="aspect ratio", suffix=".heic"),
        Case("avif_declares_9000x100", declare_size(avif, 9000, 100), REFUSED, match="aspect ratio", suffix=".avif"),
        Case("heic_declares_4x4", declare_size(heic, 4, 4), REFUSED, match="at least", suffix=".heic"),
        # the image box declares a huge size but the crop a small one: libheif's own limit refuses it
        Case("heic_ispe_60000x60000_under_small_crop",
             heic[:heic.find(b"ispe") + 8] + struct.pack(">II", 60000, 60000) + heic[heic.find(b"ispe") + 16:],
             REFUSED, match="decode", suffix=".heic"),
        Case("text_named_heic", b"IMG_0001.HEIC could not be attached.\n" * 20, REFUSED, match="not an image",
             suffix=".heic"),
        Case("mp4_named_heic", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(200), REFUSED,
             match="not an image", suffix=".heic"),
    ]
