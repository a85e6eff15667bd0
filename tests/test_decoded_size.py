"""images.decoded_size: the size `decode` gives, read from the header (EXIF orientation, JPEG draft, max_side),
with nothing decoded; and decode_stored: a mask file read once, as stored."""

import io

import numpy as np
import pytest
from PIL import Image

from core import images
from core.errors import InvalidInputError
from tests import hostile, phones

CASES = hostile.cases()


@pytest.mark.parametrize("index", [0, 4, 8, 12], ids=["orientation1", "orientation6", "orientation3", "orientation8"])
def test_a_12_megapixel_phone_jpeg_is_sized_from_its_header(index, decodes):
    data = phones.phone_jpeg(index)
    orientation = Image.open(io.BytesIO(data)).getexif()[0x0112]
    assert orientation == (1, 6, 3, 8)[index // 4]
    decodes.clear()  # building the photo decoded its sample
    sizes = {side: images.decoded_size(data, max_side=side) for side in (512, 1000, images.MAX_SIDE, 8000)}
    assert decodes == []  # nothing decoded
    for side, size in sizes.items():
        assert size == images.decode(data, max_side=side).image.size, side
    stored = Image.open(io.BytesIO(data)).size
    assert stored == ((4032, 3024) if orientation in (1, 3) else (3024, 4032))  # 6 and 8: stored sideways
    assert sizes[8000] == (4032, 3024) and sizes[512] == (512, 384)  # shown upright, whole or downscaled


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_size_is_decodes_own_or_its_refusal(case):
    """Every hostile case: the size decode gives, or its refusal; only pixels cut or corrupt behind a sound header
    or too large for the decoder (which a header cannot show) are sized, and refused when decoded."""
    try:
        expected = images.decode(case.data, max_side=300).image.size
    except InvalidInputError as error:
        try:
            images.decoded_size(case.data, max_side=300)
        except InvalidInputError as caught:
            assert str(caught) == str(error)
        else:
            assert "corrupt or truncated" in str(error) or "decoder's limit" in str(error), str(error)
        return
    assert images.decoded_size(case.data, max_side=300) == expected


@pytest.mark.parametrize("width, height", [(5000, 37), (37, 5000), (1001, 999), (999, 1001), (640, 480), (513, 512)])
def test_the_downscale_rounds_as_pillow_does(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    data = buffer.getvalue()
    if max(width, height) / min(width, height) > images.MAX_ASPECT:
        with pytest.raises(InvalidInputError, match="aspect ratio"):
            images.decoded_size(data)
        return
    for side in (512, 100, 77):
        assert images.decoded_size(data, max_side=side) == images.decode(data, max_side=side).image.size


def test_a_png_with_exif_after_its_pixels_is_decoded_for_its_size():
    """Pillow reads a PNG's eXIf chunk after IDAT only with the pixels: the size then comes from a decode."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (60, 20)).save(buffer, format="PNG", exif=exif.tobytes())
    data = buffer.getvalue()
    assert images.decode(data).image.size == (20, 60) == images.decoded_size(data)


def test_decode_stored_reads_a_mask_once_as_it_is_stored(decodes):
    buffer = io.BytesIO()
    alpha = np.zeros((40, 48, 4), dtype=np.uint8)
    alpha[5:10, 5:20, 3] = 255
    Image.fromarray(alpha).save(buffer, format="PNG")
    with images.decode_stored(buffer.getvalue()) as stored:
        assert stored.mode == "RGBA" and stored.size == (48, 40)
        np.testing.assert_array_equal(np.asarray(stored.getchannel("A")), alpha[..., 3])
    assert decodes == ["PNG"]
    with pytest.raises(InvalidInputError, match="empty"):
        images.decode_stored(b"")
    with pytest.raises(InvalidInputError, match="megapixels"):
        images.decode_stored(next(c.data for c in CASES if c.expect == hostile.REFUSED and "megapixel" in c.match.lower()))


@pytest.mark.slow
def test_the_shared_realistic_phone_photos_are_sized_from_their_headers(request, decodes):
    """/work/shared/realistic/make_inputs.py's phones/: 12-MP JPEGs with EXIF orientations, HEIC and AVIF copies."""
    from tests import realistic

    files = sorted((realistic.inputs(request.config) / "phones").iterdir())
    assert any(f.suffix == ".jpg" for f in files) and any("orientation6" in f.name for f in files)
    for file in files:
        data = file.read_bytes()
        decodes.clear()
        size = images.decoded_size(data, max_side=512)
        if file.suffix in (".jpg", ".png"):
            assert decodes == [], file.name  # the header tells it all
        assert size == images.decode(data, max_side=512).image.size, file.name
