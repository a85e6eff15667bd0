"""The records and picture maths the dashboard used to keep for itself, now in core: images.Picture and the
thumbnail / mean picture / mean heatmap helpers, probing.DatasetHead."""

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from core import evaluation, images, probing


def _png(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_picture_is_the_decode_at_display_size_with_its_facts():
    decoded = images.decode(_png(3000, 1500))
    shown = images.picture(decoded)
    assert shown.image.size == images.display_size((3000, 1500)) == (1440, 720)
    assert shown.full_size == (3000, 1500) and shown.format == "PNG" and shown.notes == decoded.notes
    small = images.picture(images.decode(_png(40, 30)))
    assert small.image.size == small.full_size == (40, 30)


def test_thumbnail_letterboxes_the_whole_image_on_white():
    thumb = images.thumbnail(Image.new("RGB", (100, 50), (0, 0, 0)), 40)
    assert thumb.shape == (40, 40, 3) and thumb.dtype == np.uint8
    assert (thumb[0, 0] == 255).all() and (thumb[20, 20] == 0).all()  # white bands above and below, black inside


def test_mean_picture_and_mean_heatmap_average_squares():
    pictures = [Image.new("RGB", (10, 20), (0, 0, 0)), Image.new("RGB", (30, 30), (200, 100, 50))]
    mean = np.asarray(images.mean_picture(pictures, 8))
    assert mean.shape == (8, 8, 3) and tuple(mean[4, 4]) == (100, 50, 25)
    heat = images.mean_heatmap([np.ones((7, 5)), np.zeros((3, 3))], 6)
    assert heat.shape == (6, 6) and heat.dtype == np.float32 and np.allclose(heat, 0.5)
    assert np.allclose(images.mean_heatmap([], 4), 0)


def test_dataset_head_names_its_classes_and_maps_zero_shot_targets():
    mapping = evaluation.Mapping(("cat", "car"), (281, None), ("tabby", None), ("class name", ""))
    zero_shot = SimpleNamespace(probe=None, mapping=mapping)
    head = probing.DatasetHead(("evaluation", 1), zero_shot, 96)
    assert not head.probe and head.backbone_targets((0, None, 1)) == (281, None, None)
    assert head.describe(SimpleNamespace(label="tabby")) == "ImageNet 'tabby'"
    probe = probing.DatasetHead(("evaluation", 2), SimpleNamespace(probe=object(), mapping=None), 96)
    assert probe.probe and probe.describe(SimpleNamespace(label="circle")) == "probe class 'circle'"
