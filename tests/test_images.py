"""core.images: every hostile or odd file from tests/hostile.py, overlays and PNG output."""

import io
import re
import struct
import time

import numpy as np
import pytest
from PIL import Image

from core import images
from core.errors import CoreError, InvalidInputError
from tests import hostile
from tests.conftest import sample, sample_bytes

CASES = hostile.cases()
# One decode, accepted or refused, must cost less CPU than this. CPU time of this process, not wall
# time: other jobs on a 2-core CI machine must not make the test flaky (these are cost bounds, not
# benchmarks; a decompression bomb that slipped through would cost tens of seconds).
SLOW_S = 2.0


def test_cases_build_quickly_and_cover_both_outcomes():
    hostile.cases.cache_clear()
    built = hostile.cases()
    assert {c.expect for c in built} == {hostile.OK, hostile.REFUSED}
    assert len(built) >= 40


def _assert_human_message(message: str) -> None:
    """One line of prose for a person: no traceback, no exception class names, no Python reprs."""
    assert message and "\n" not in message, repr(message)
    assert message[0].isupper() and message.rstrip().endswith("."), repr(message)
    assert len(message) <= 300, repr(message)
    for leak in ("Traceback", 'File "', "Error:", "Exception", "KeyError", "<", ">", "\\x"):
        assert leak not in message, f"{leak!r} in {message!r}"


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == hostile.REFUSED], ids=lambda c: c.name)
def test_refused(case):
    start = time.process_time()
    with pytest.raises(InvalidInputError) as caught:
        images.decode(case.data)
    elapsed = time.process_time() - start
    message = str(caught.value)
    _assert_human_message(message)
    assert case.match.lower() in message.lower(), f"expected {case.match!r} in {message!r}"
    assert isinstance(caught.value, CoreError)
    # raised `from None` (or directly): no chained Pillow traceback reaches the user
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert elapsed < SLOW_S, f"{case.name} took {elapsed:.2f} s"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns, and still decodes: fine
@pytest.mark.parametrize("case", [c for c in CASES if c.expect == hostile.OK], ids=lambda c: c.name)
def test_decoded(case):
    start = time.process_time()
    decoded = images.decode(case.data)
    elapsed = time.process_time() - start
    assert isinstance(decoded, images.DecodedImage)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == case.size
    assert decoded.format in images.FORMATS
    assert all(isinstance(n, str) and n and "\n" not in n for n in decoded.notes)
    array = np.asarray(decoded.image)
    assert array.dtype == np.uint8 and array.shape == (case.size[1], case.size[0], 3)
    if case.check is not None:
        case.check(decoded)
    assert elapsed < SLOW_S, f"{case.name} took {elapsed:.2f} s"


def test_required_cases_are_present():
    names = {c.name for c in CASES}
    for required in (
        "zero_bytes", "random_garbage", "text_named_jpg", "truncated_jpeg", "truncated_png", "png_bad_crc",
        "png_bad_idat", "png_bomb_30000x30000", "png_60000x1", "png_1x1", "eps_named_jpg", "psd_named_jpg",
        "cmyk_jpeg", "gray16_png_gradient", "float_tiff_unit", "float_tiff_range_-5_100", "float_tiff_nan_inf",
        "palette_png_transparent", "rgba_png_transparent", "la_png", "gray_l_png", "bilevel_1bit_png",
        "exif_orientation_6_jpeg", "animated_gif_3_frames", "plain_webp", "plain_bmp", "plain_tiff", "plain_gif",
        "big_jpeg_5000x3000",
    ):
        assert required in names, required
    bomb = hostile.by_name("png_bomb_30000x30000")
    assert len(bomb.data) < 8 * 1024 and bomb.data[12:16] == b"IHDR"
    assert struct.unpack(">II", bomb.data[16:24]) == (30000, 30000)


def test_heic_and_avif_cases_are_present():
    names = {c.name for c in CASES}
    for required in (
        "plain_heic", "plain_avif", "heic_named_jpg", "jpeg_named_heic", "exif_orientation_6_heic",
        "exif_orientation_6_avif", "heic_10bit", "truncated_heic", "truncated_avif", "heic_declares_30000x30000",
        "avif_declares_7000x7000", "heic_declares_9000x100", "text_named_heic",
    ):
        assert required in names, required


def test_png_text_bomb_cases_are_present():
    names = {c.name for c in CASES}
    for required in (
        "png_ztxt_bomb", "png_ztxt_bomb_after_idat", "png_itxt_xmp_bomb", "png_iccp_bomb",
        "png_text_chunks_over_text_memory", "png_ztxt_bomb_exif_orientation_6",
        "png_ztxt_bomb_and_pixel_bomb_30000x30000", "png_ztxt_bomb_and_truncated", "png_ztxt_bomb_and_garbled_idat",
    ):
        assert required in names, required
    # small on disk, over Pillow's limit once inflated: what the fix is about
    bomb = hostile.by_name("png_ztxt_bomb").data
    assert len(bomb) < 16 * 1024
    with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):
        Image.open(io.BytesIO(bomb)).load()


def test_a_png_text_bomb_is_decoded_without_its_metadata_like_a_browser_shows_it():
    decoded = images.decode(hostile.by_name("png_ztxt_bomb").data)
    assert decoded.format == "PNG" and decoded.image.size == (64, 48)
    assert [n for n in decoded.notes if "metadata" in n] == [
        "PNG metadata dropped (1 text chunk): too large or unreadable to read safely; the image itself is intact."
    ]
    assert images.decode(hostile.by_name("plain_png").data).notes == ()
    # an ordinary text chunk is no reason for a note
    ordinary = hostile.encode(Image.new("RGB", (16, 16), (1, 2, 3)), "PNG", pnginfo=_text_info())
    assert images.decode(ordinary).notes == ()


def _text_info():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a short note", zip=True)
    return info


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == hostile.REFUSED and c.name.startswith("png_")
                                  and "bomb_and" in c.name], ids=lambda c: c.name)
def test_a_text_bomb_on_a_bad_image_is_refused_for_the_image_not_the_text(case):
    with pytest.raises(InvalidInputError) as caught:
        images.decode(case.data)
    message = str(caught.value)
    assert "MAX_TEXT" not in message and "text" not in message.lower() and "metadata" not in message.lower()


def test_a_heic_photo_is_downscaled_like_any_other():
    big = hostile.encode(Image.new("RGB", (1200, 900), (10, 200, 30)), "HEIF", quality=60)
    decoded = images.decode(big, max_side=512)
    assert decoded.format == "HEIF" and decoded.original_size == (1200, 900) and decoded.image.size == (512, 384)
    assert any("Downscaled" in n for n in decoded.notes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cats", "coffee"])
def test_realistic_phone_heic_and_avif_match_the_jpeg(request, name):
    # /work/shared/realistic/make_inputs.py: 12-MP photos saved as JPEG (EXIF orientation 1, 6, ...), HEIC, AVIF
    from tests import realistic

    phones = realistic.inputs(request.config) / "phones"
    reference = np.asarray(images.decode((phones / f"{name}_orientation1.jpg").read_bytes()).image, np.float32)
    for orientation in (6, 8):  # stored sideways, shown upright: the same picture as orientation 1
        turned = images.decode((phones / f"{name}_orientation{orientation}.jpg").read_bytes())
        assert np.abs(np.asarray(turned.image, np.float32) - reference).mean() < 6
    for suffix, fmt in ((".heic", "HEIF"), (".avif", "AVIF")):
        decoded = images.decode((phones / f"{name}{suffix}").read_bytes())
        assert decoded.format == fmt and decoded.image.size == (4032, 3024) == decoded.original_size
        assert np.abs(np.asarray(decoded.image, np.float32) - reference).mean() < 6, suffix


def test_samples_decode_at_their_size():
    decoded = images.decode(sample_bytes("chelsea"))
    assert decoded.format == "JPEG" and decoded.image.size == (451, 300) == decoded.original_size
    assert decoded.notes == ()
    assert np.array_equal(np.asarray(decoded.image), np.asarray(sample("chelsea")))


def test_max_side_argument_downscales_with_a_note():
    decoded = images.decode(sample_bytes("chelsea"), max_side=200)
    assert max(decoded.image.size) == 200 and decoded.original_size == (451, 300)
    assert any("Downscaled" in n for n in decoded.notes)


def test_file_extension_does_not_matter():
    # decode sees bytes only: a PNG is a PNG whatever it was called
    png = hostile.by_name("plain_png").data
    assert images.decode(png).format == "PNG"


def test_not_an_image_message_names_the_formats():
    with pytest.raises(InvalidInputError, match=re.escape("JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF")):
        images.decode(hostile.by_name("psd_named_jpg").data)


# ---------------------------------------------------------------------------------------------
# overlay


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return sample("chelsea")


def _ramp(width: int, height: int) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))


@pytest.mark.parametrize("colormap", images.COLORMAPS)
def test_overlay_shape_and_dtype(photo, colormap):
    out = images.overlay(photo, _ramp(*photo.size), opacity=0.5, colormap=colormap)
    assert out.shape == (photo.size[1], photo.size[0], 3) and out.dtype == np.uint8


@pytest.mark.parametrize("image", [
    Image.new("RGB", (40, 30), (60, 60, 60)),  # dark and flat: must not be brightened
    Image.new("RGB", (40, 30), (0, 0, 0)),  # black: must not become NaN
    sample("chelsea"),
], ids=["dark", "black", "photo"])
def test_overlay_opacity_zero_is_the_image(image):
    out = images.overlay(image, _ramp(*image.size), opacity=0.0)
    assert np.abs(out.astype(int) - np.asarray(image).astype(int)).max() <= 1


def test_overlay_opacity_one_is_the_colormap(photo):
    out = images.overlay(photo, np.ones((photo.size[1], photo.size[0]), np.float32), opacity=1.0, colormap="jet")
    hot = out[0, 0]
    assert (out == hot).all() and hot[0] > 100 and hot[1] < 30 and hot[2] < 30  # jet's hot end is red


def test_overlay_is_monotonic_in_opacity(photo):
    heat = _ramp(*photo.size)
    base = np.asarray(photo).astype(int)
    diffs = [np.abs(images.overlay(photo, heat, opacity=o).astype(int) - base).mean() for o in (0.0, 0.3, 0.7, 1.0)]
    assert diffs == sorted(diffs) and diffs[0] < 1 < diffs[1]


def test_overlay_tolerates_heatmap_overshoot_and_nan():
    image = Image.new("RGB", (16, 12), (128, 128, 128))
    hottest = images.overlay(image, np.ones((12, 16), np.float32), opacity=1.0)[0, 0]
    heat = np.full((12, 16), 1.02, np.float32)  # a bicubic resize can overshoot 1
    heat[0, 0] = np.nan
    heat[0, 1] = -0.1
    out = images.overlay(image, heat, opacity=1.0)
    coldest = images.overlay(image, np.zeros((12, 16), np.float32), opacity=1.0)[0, 0]
    assert (out[5, 5] == hottest).all(), "overshoot must clip to the hot end, not wrap round"
    assert (out[0, 0] == coldest).all() and (out[0, 1] == coldest).all()


def test_overlay_accepts_a_float64_heatmap(photo):
    heat = _ramp(*photo.size).astype(np.float64)
    assert images.overlay(photo, heat).dtype == np.uint8


@pytest.mark.parametrize("colormap", ["rainbow", "", "JET2", "../jet"])
def test_overlay_bad_colormap(photo, colormap):
    with pytest.raises(InvalidInputError, match="colormap"):
        images.overlay(photo, _ramp(*photo.size), colormap=colormap)


@pytest.mark.parametrize("opacity", [-0.01, 1.5, float("nan"), float("inf")])
def test_overlay_bad_opacity(photo, opacity):
    with pytest.raises(InvalidInputError, match="Opacity"):
        images.overlay(photo, _ramp(*photo.size), opacity=opacity)


@pytest.mark.parametrize("shape", [(300, 450), (451, 300), (300, 451, 1), (10, 10)])
def test_overlay_shape_mismatch(photo, shape):
    with pytest.raises(InvalidInputError, match="does not match"):
        images.overlay(photo, np.zeros(shape, np.float32))


# ---------------------------------------------------------------------------------------------
# to_png


def test_to_png_roundtrip():
    rng = np.random.default_rng(7)
    array = rng.integers(0, 256, (30, 47, 3), dtype=np.uint8)
    data = images.to_png(array)
    assert data.startswith(hostile.PNG_SIGNATURE)
    decoded = images.decode(data)
    assert decoded.format == "PNG" and decoded.image.size == (47, 30)
    assert np.array_equal(np.asarray(decoded.image), array)


def test_to_png_of_an_overlay(photo):
    out = images.overlay(photo, _ramp(*photo.size))
    back = Image.open(io.BytesIO(images.to_png(out)))
    assert back.format == "PNG" and back.mode == "RGB" and back.size == photo.size
    assert np.array_equal(np.asarray(back), out)
