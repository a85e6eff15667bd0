"""core.live: one camera frame -> top-3 and a heatmap overlay, with the offline Lite0 weights and a tiny CNN."""

import io

import numpy as np
import pytest
from PIL import Image

from core import cams, hooks, live, models, predictions, preprocessing
from core.errors import CoreError, InvalidInputError, UnknownMethodError
from tests import hostile
from tests.conftest import sample, sample_bytes

@pytest.fixture(scope="module")
def shapes_vit():
    return models.load("shapes_vit", device="cpu")  # the trained offline weights in assets/


CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _frame(image: Image.Image, size=(320, 240)) -> Image.Image:  # what a webcam sends, scaled
    return image.resize(size, Image.Resampling.BILINEAR)


def test_chelsea_as_a_camera_frame_is_a_cat_with_a_heatmap(lite0):
    frame = np.asarray(_frame(sample("chelsea")))
    result = live.analyse(lite0, frame)
    assert len(result.predictions) == 3
    assert result.predictions[0].index in CATS, result.predictions
    assert [p.prob for p in result.predictions] == sorted((p.prob for p in result.predictions), reverse=True)
    assert result.target == result.predictions[0].index and result.method == "gradcam"
    overlay = Image.open(io.BytesIO(result.overlay_jpeg))
    assert overlay.format == "JPEG" and overlay.size == result.size
    assert min(result.size) == lite0.spec.input_size[0]  # shrunk to the network's input size first
    assert result.size[0] / result.size[1] == pytest.approx(320 / 240, rel=0.02)  # aspect kept, nothing cropped
    t = result.timings
    assert all(ms >= 0 for ms in (t.decode_ms, t.cam_ms, t.overlay_ms))
    assert t.total_ms == pytest.approx(t.decode_ms + t.cam_ms + t.overlay_ms)
    assert hooks.count(lite0.module) == 0 and all(p.grad is None for p in lite0.module.parameters())


def test_jpeg_bytes_pil_and_array_frames_agree(lite0):
    image = _frame(sample("chelsea"))
    data = _jpeg(image, quality=95)
    from_bytes = live.analyse(lite0, data)
    from_pil = live.analyse(lite0, image)
    from_array = live.analyse(lite0, np.asarray(image))
    assert from_pil.predictions == from_array.predictions
    assert from_bytes.predictions[0].index == from_pil.predictions[0].index
    assert from_bytes.size == from_pil.size


def test_the_heatmap_is_the_grad_cam_of_the_top_class(lite0):
    """The overlay is cams.compute's Grad-CAM of the top-1 class blended over the shrunk frame."""
    from core import preprocessing

    image = _frame(sample("coffee"))
    result = live.analyse(lite0, image, opacity=1.0)  # heatmap colours only
    small = preprocessing.resize(image, lite0.spec)
    (cam,) = cams.compute(lite0, small, methods=["gradcam"], target=result.target)
    expected = cam.overlay(small, opacity=1.0).astype(np.int16)
    got = np.asarray(Image.open(io.BytesIO(result.overlay_jpeg)).convert("RGB")).astype(np.int16)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 6  # JPEG loss only
    assert result.predictions[0].label == "espresso"


@pytest.mark.parametrize("method", [m for m in live.METHODS if not cams.METHODS[m].attention])
def test_every_fast_method_runs_on_the_tiny_cnn(tiny, method):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = live.analyse(tiny, frame, method=method)
    assert result.method == method and len(result.predictions) == 3
    assert Image.open(io.BytesIO(result.overlay_jpeg)).size == result.size


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "fullgrad", "finercam", "shapleycam"])
def test_slow_methods_are_refused_before_any_work(tiny, method):
    with pytest.raises(UnknownMethodError, match="too slow for live video") as error:
        live.analyse(tiny, np.zeros((64, 64, 3), np.uint8), method=method)
    assert isinstance(error.value, CoreError) and "gradcam" in str(error.value)


def test_an_unknown_method_is_refused(tiny):
    with pytest.raises(UnknownMethodError, match="Unknown CAM method"):
        live.analyse(tiny, np.zeros((64, 64, 3), np.uint8), method="gradcamm")


@pytest.mark.parametrize("case", [c for c in hostile.cases() if c.expect == hostile.REFUSED], ids=repr)
def test_hostile_bytes_give_invalid_input(tiny, case):
    with pytest.raises(InvalidInputError):
        live.analyse(tiny, case.data)


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.zeros((64, 64), np.uint8), "uint8 RGB array"),
        (np.zeros((64, 64, 4), np.uint8), "uint8 RGB array"),
        (np.zeros((64, 64, 3), np.float32), "uint8 RGB array"),
        (np.zeros((4, 64, 3), np.uint8), "each side"),
        ("chelsea.jpg", "must be base64"),
        ("data:image/jpeg,abc", "base64-encoded"),
        (3.5, "got float"),
        (None, "got NoneType"),
    ],
)
def test_wrong_frames_are_refused(tiny, frame, match):
    with pytest.raises(InvalidInputError, match=match):
        live.analyse(tiny, frame)


def test_oversized_frame_bytes_are_refused_before_decoding(tiny):
    with pytest.raises(InvalidInputError, match="too large"):
        live.analyse(tiny, b"\xff\xd8\xff\xe0" + bytes(live.MAX_FRAME_BYTES))


def test_bad_opacity_and_colormap(tiny):
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="Opacity"):
        live.analyse(tiny, frame, opacity=1.5)
    with pytest.raises(InvalidInputError, match="colormap"):
        live.analyse(tiny, frame, colormap="rainbow-unicorn")


def test_a_sample_photo_as_bytes_needs_no_special_path(lite0):
    result = live.analyse(lite0, sample_bytes("chelsea"))
    assert result.predictions[0].index in CATS
    assert max(result.size) < 400  # the overlay stays modest whatever the input size
    with pytest.raises(AttributeError):
        result.method = "hirescam"  # frozen


def test_base64_frames_as_a_browser_sends_them(tiny, lite0):
    import base64

    data = _jpeg(_frame(sample("chelsea")))
    text = base64.b64encode(data).decode()
    bare = live.analyse(lite0, text)
    uri = live.analyse(lite0, "data:image/jpeg;base64," + text)
    assert bare.predictions == uri.predictions and bare.predictions[0].index in CATS
    assert uri.overlay_data_uri.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(uri.overlay_data_uri.split(",", 1)[1]) == uri.overlay_jpeg
    with pytest.raises(InvalidInputError, match="too large"):
        live.analyse(tiny, "A" * (live.MAX_FRAME_BYTES * 2))
    with pytest.raises(InvalidInputError, match="not an image"):
        live.analyse(tiny, base64.b64encode(b"<html>hello</html>").decode())


def test_one_pass_gives_the_same_classes_and_map_as_the_two_pass_path(lite0):
    """cams.compute_top1's logits equal an inference pass's, and its map equals compute() for that class."""
    import torch

    from core import predictions, preprocessing

    small = preprocessing.resize(_frame(sample("astronaut")), lite0.spec)
    probabilities, cam = cams.compute_top1(lite0, small, method="layercam")
    reference = predictions.probabilities(lite0, preprocessing.to_tensor(small, lite0.spec))
    assert torch.allclose(probabilities, reference, atol=1e-5)
    assert cam.target == int(reference.argmax()) and cam.label == lite0.categories[cam.target]
    (expected,) = cams.compute(lite0, small, methods=["layercam"], target=cam.target)
    np.testing.assert_allclose(cam.heatmap, expected.heatmap, atol=1e-5)
    assert hooks.count(lite0.module) == 0
    with pytest.raises(UnknownMethodError, match="shared pass"):
        cams.compute_top1(lite0, small, method="scorecam")


def test_the_methods_offered_are_the_one_pass_ones_that_apply(tiny, shapes_vit):
    on_cnn, on_vit = live.methods(tiny), live.methods(shapes_vit)
    assert on_cnn == [m for m in cams.SHARED if not cams.METHODS[m].slow]  # the Grad-CAM family's shared pass
    assert on_vit == on_cnn + list(cams.ATTENTION)  # a transformer adds rollout, grad_rollout and LeGrad
    assert all(cams.METHODS[m].one_pass for m in on_vit) and set(on_vit) <= set(live.METHODS)
    assert not any(cams.METHODS[m].one_pass for m in ("scorecam", "ablationcam", "fullgrad", "finercam", "shapleycam"))
    with pytest.raises(UnknownMethodError, match="does not apply"):
        live.analyse(tiny, np.zeros((64, 64, 3), np.uint8), method="rollout")


@pytest.mark.parametrize("method", list(cams.ATTENTION))
def test_attention_methods_explain_the_top_class_of_the_same_pass_on_the_shapes_vit(shapes_vit, method):
    frame = np.asarray(Image.open(io.BytesIO(sample_bytes("chelsea"))).convert("RGB").resize((96, 64)))
    result = live.analyse(shapes_vit, frame, method=method, opacity=1.0)
    small = preprocessing.resize(live.frame_image(frame), shapes_vit.spec)
    probabilities = predictions.probabilities(shapes_vit, preprocessing.to_tensor(small, shapes_vit.spec))
    assert result.target == int(probabilities.argmax()) == result.predictions[0].index
    assert result.predictions[0].prob == pytest.approx(float(probabilities.max()), abs=1e-4)
    (cam,) = cams.compute(shapes_vit, small, methods=[method], target=result.target)
    expected = cam.overlay(small, opacity=1.0).astype(np.int16)
    got = np.asarray(Image.open(io.BytesIO(result.overlay_jpeg)).convert("RGB")).astype(np.int16)
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 6  # the same map, JPEG loss only
    assert hooks.count(shapes_vit.module) == 0
    assert not [n for n, m in shapes_vit.module.named_modules() if "forward" in m.__dict__]
