"""PNGs whose pixels are fine but whose metadata chunks Pillow refuses to read, for tests/hostile.py's `cases()`.

A zTXt/iTXt/iCCP chunk that inflates past `PngImagePlugin.MAX_TEXT_CHUNK` (a "text bomb", a few KB on disk),
text chunks that together pass `MAX_TEXT_MEMORY`, a zTXt with an unknown compression method. Browsers show
these files: we decode the picture, drop the metadata and say so in a note. Combined with a real problem in
the image (a pixel bomb, a cut-off or garbled IDAT), the file is refused for that problem, in its words.
"""

from __future__ import annotations

import struct
import zlib

from PIL import Image, PngImagePlugin

from tests.hostile import OK, REFUSED, Case, assert_near, encode, halves, png_chunk, px, raw_png

RED, BLUE = (255, 0, 0), (0, 0, 255)
#: What the note says; the refused cases' messages must not mention Pillow's limits.
NOTE = "PNG metadata dropped"


def inflating_to(size: int) -> bytes:
    """A zlib stream of `size` zero bytes (about size / 1000 bytes on disk)."""
    return zlib.compress(bytes(size), 9)


def ztxt(keyword: bytes, size: int, *, method: int = 0) -> bytes:
    return png_chunk(b"zTXt", keyword + b"\x00" + bytes([method]) + inflating_to(size))


def itxt(keyword: bytes, size: int) -> bytes:
    # keyword, NUL, compression flag 1, method 0, language tag, NUL, translated keyword, NUL, text
    return png_chunk(b"iTXt", keyword + b"\x00\x01\x00en\x00\x00" + inflating_to(size))


def iccp(size: int) -> bytes:
    return png_chunk(b"iCCP", b"Bomb profile\x00\x00" + inflating_to(size))


def insert(png: bytes, chunk: bytes, *, after_idat: bool = False) -> bytes:
    """`png` with `chunk` right after IHDR, or just before IEND."""
    at = png.rindex(b"IEND") - 4 if after_idat else 8 + 8 + 13 + 4
    return png[:at] + chunk + png[at:]


def _check(size: tuple[int, int], dropped: str):
    def check(decoded):
        assert decoded.format == "PNG" and decoded.original_size == size
        assert_near(px(decoded, 1, 1), RED, 0, "left")
        assert_near(px(decoded, size[0] - 2, size[1] - 2), BLUE, 0, "right")
        assert any(NOTE in n and dropped in n for n in decoded.notes), decoded.notes

    return check


def cases() -> list[Case]:
    over = PngImagePlugin.MAX_TEXT_CHUNK + 1024
    png = encode(halves(64, 48, RED, BLUE), "PNG")
    many = b"".join(ztxt(b"Comment%d" % i, PngImagePlugin.MAX_TEXT_CHUNK - 1)
                    for i in range(PngImagePlugin.MAX_TEXT_MEMORY // PngImagePlugin.MAX_TEXT_CHUNK + 2))
    ok = [
        ("png_ztxt_bomb", insert(png, ztxt(b"Comment", over)), "1 text chunk"),
        ("png_ztxt_bomb_after_idat", insert(png, ztxt(b"Comment", over), after_idat=True), "1 text chunk"),
        ("png_itxt_xmp_bomb", insert(png, itxt(b"XML:com.adobe.xmp", over)), "1 text chunk"),
        ("png_iccp_bomb", insert(png, iccp(over)), "1 colour profile chunk"),
        ("png_text_chunks_over_text_memory", insert(png, many), "text chunks"),
        ("png_ztxt_unknown_compression", insert(png, ztxt(b"Comment", 100, method=7)), "1 text chunk"),
        # an ordinary text chunk next to the bomb goes too: the note counts both
        ("png_ztxt_bomb_and_plain_text", insert(insert(png, ztxt(b"Comment", over)),
                                                png_chunk(b"tEXt", b"Author\x00Ms Smith")), "2 text chunks"),
    ]
    built = [Case(name, data, OK, (64, 48), _check((64, 48), dropped), suffix=".png") for name, data, dropped in ok]

    # The EXIF orientation lives in the eXIf chunk, which is not dropped: the picture is still turned upright.
    exif = Image.Exif()
    exif[0x0112] = 6

    def check_rotated(decoded):
        assert decoded.original_size == (40, 20)
        assert_near(px(decoded, 10, 3), RED, 0, "top")
        assert_near(px(decoded, 10, 36), BLUE, 0, "bottom")
        assert any(NOTE in n for n in decoded.notes), decoded.notes

    rotated = insert(encode(halves(40, 20, RED, BLUE), "PNG", exif=exif), ztxt(b"Comment", over))
    built.append(Case("png_ztxt_bomb_exif_orientation_6", rotated, OK, (20, 40), check_rotated, suffix=".png"))

    # Refused for the image, never for the text: a pixel bomb, a cut-off file, a garbled IDAT.
    pixel_bomb = raw_png(30000, 30000, zlib.compress(bytes(64 * 30001), 9))
    pixel_bomb_49mp = raw_png(7000, 7000, zlib.compress(bytes(64 * 7001), 9))  # under Pillow's own limit
    idat_at = png.index(b"IDAT")
    (idat_len,) = struct.unpack(">I", png[idat_at - 4: idat_at])
    garbled = png[: idat_at - 4] + png_chunk(b"IDAT", bytes(range(256)) * (idat_len // 256 + 1)) \
        + png[idat_at + 4 + idat_len + 4:]
    bomb = ztxt(b"Comment", over)
    built += [
        Case("png_ztxt_bomb_and_pixel_bomb_30000x30000", insert(pixel_bomb, bomb), REFUSED, match="megapixels",
             suffix=".png"),
        Case("png_itxt_bomb_and_pixel_bomb_7000x7000", insert(pixel_bomb_49mp, itxt(b"XML:com.adobe.xmp", over)),
             REFUSED, match="megapixels", suffix=".png"),
        Case("png_ztxt_bomb_and_pixel_bomb_after_idat", insert(pixel_bomb, bomb, after_idat=True), REFUSED,
             match="megapixels", suffix=".png"),
        Case("png_ztxt_bomb_and_truncated", insert(png, bomb)[: len(png) + len(bomb) - 40], REFUSED,
             match="truncated", suffix=".png"),
        Case("png_ztxt_bomb_and_garbled_idat", insert(garbled, bomb), REFUSED, match="corrupt", suffix=".png"),
    ]
    return built
