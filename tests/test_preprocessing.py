"""core.preprocessing: the one path from pictures to tensors, for one image, for batches and for training.

The inference numbers are pinned twice: against the formula the project used before this module owned
every path (numpy / 255, then (x - mean) / std), bit for bit, and against torchvision's functional
resize + normalize as an independent implementation. Training augmentation is torchvision transforms.v2,
seeded by the caller, and off for validation and test.
"""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core import datasets, embeddings, preprocessing, registry, training
from core.errors import InvalidInputError
from tests.conftest import ROOT, TINY, TINY_VIT

CNN = registry.get(TINY)  # bilinear, 64 px, ImageNet mean/std, any aspect
BICUBIC = dataclasses.replace(CNN, name="bicubic", interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
VIT = registry.get(TINY_VIT)  # fixed 64 x 64


def _picture(width: int = 150, height: int = 97, seed: int = 0) -> Image.Image:
    """Smooth structure plus noise, so that filters and crops change the numbers."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) % 64 * 4], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _old_to_tensor(image: Image.Image, spec) -> torch.Tensor:
    """The formula to_tensor had before the preprocessing paths were merged."""
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    height, width = preprocessing.input_size(image.size, spec)
    resized = image.convert("RGB").resize((width, height), filters[spec.interpolation])
    array = np.asarray(resized, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return ((tensor - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)).unsqueeze(0)


def _torchvision(image: Image.Image, spec, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) by torchvision's functional API: resize, to float in [0, 1], normalize."""
    mode = v2.InterpolationMode(spec.interpolation)
    resized = TF.resize(image.convert("RGB"), list(size), interpolation=mode)
    scaled = TF.to_dtype(TF.pil_to_tensor(resized), torch.float32, scale=True)
    return TF.normalize(scaled, list(spec.mean), list(spec.std))


# ---------------------------------------------------------------------------------------------
# One image (inference): unchanged numbers


@pytest.mark.parametrize("spec", [CNN, BICUBIC, VIT], ids=["bilinear", "bicubic", "fixed-size"])
@pytest.mark.parametrize("width, height", [(150, 97), (60, 200), (64, 64), (1000, 50)])
def test_to_tensor_is_the_old_formula_and_torchvision_s(spec, width, height):
    image = _picture(width, height)
    tensor = preprocessing.to_tensor(image, spec)
    expected = _old_to_tensor(image, spec)
    assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor, expected)  # bit for bit: the inference path did not move
    size = preprocessing.input_size(image.size, spec)
    assert tensor.shape == (1, 3, *size)
    torch.testing.assert_close(tensor[0], _torchvision(image, spec, size), rtol=0, atol=2e-6)


def test_the_spec_s_size_and_interpolation_are_honoured():
    image = _picture(150, 97)
    assert preprocessing.to_tensor(image, CNN).shape == (1, 3, 64, 99)  # shorter side 64, aspect kept
    assert preprocessing.to_tensor(image, VIT).shape == (1, 3, 64, 64)  # fixed size: the square, no crop
    bilinear = preprocessing.to_tensor(image, dataclasses.replace(BICUBIC, interpolation="bilinear"))
    assert not torch.equal(bilinear, preprocessing.to_tensor(image, BICUBIC))
    with pytest.raises(InvalidInputError, match="only takes 64 px"):
        preprocessing.side(VIT, 32)
    assert preprocessing.side(VIT) == preprocessing.side(VIT, 64) == 64
    assert preprocessing.side(CNN, 32) == 32 and preprocessing.side(CNN) == 64


def test_one_filter_table_serves_every_path():
    assert preprocessing.INTERPOLATIONS == ("bilinear", "bicubic")
    for module in (embeddings, training):
        assert not hasattr(module, "_FILTERS")


# ---------------------------------------------------------------------------------------------
# Batches (embeddings)


def test_squares_are_uint8_pixels_that_normalise_to_torchvision_s_numbers():
    pictures = [_picture(150, 97, seed=s) for s in range(3)] + [_picture(40, 90).convert("L")]
    squares = preprocessing.Squares(pictures, BICUBIC, 48)
    assert len(squares) == 4 and squares.size == 48
    batch = torch.stack([squares[i] for i in range(4)])
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 48, 48)
    kept = batch.clone()
    normalised = preprocessing.normalise(batch, BICUBIC)
    assert torch.equal(batch, kept)  # the input is not modified
    for i, picture in enumerate(pictures):
        torch.testing.assert_close(normalised[i], _torchvision(picture, BICUBIC, (48, 48)), rtol=0, atol=2e-6)
        # per item, as a DataLoader without `normalise=False` would give them: the same numbers
        assert torch.equal(preprocessing.Squares(pictures, BICUBIC, 48, normalised=True)[i], normalised[i])


def test_embeddings_read_the_same_squares(tiny):
    data = datasets.shapes(0, 3, 40)
    source = embeddings.tensors(tiny, data, size=32)
    assert isinstance(source, preprocessing.Squares)
    square = preprocessing.square(data.images[1], tiny.spec, 32)
    assert torch.equal(source[1], preprocessing.normalise(square, tiny.spec))
    pixels = embeddings.tensors(tiny, data, normalise=False)[0]
    assert torch.equal(pixels, preprocessing.square(data.images[0], tiny.spec))


def test_a_fixed_size_network_is_not_fed_another_size(tiny_vit):
    data = datasets.shapes(0, 4, 40)
    with pytest.raises(InvalidInputError, match="only takes 64 px"):
        embeddings.extract(tiny_vit, data, size=32)
    assert embeddings.extract(tiny_vit, data, precision="fp32").image_size == 64


@pytest.mark.parametrize("fixed, sizes", [(True, ["128 px (the model's)"]), (False, ["128 px (the model's)", "96 px"])])
def test_the_datasets_page_offers_a_fixed_size_network_its_own_size_only(monkeypatch, fixed, sizes):
    from streamlit.testing.v1 import AppTest

    from dashboard import cache

    specs = dict(cache.specs())
    specs[TINY_VIT] = dataclasses.replace(specs[TINY_VIT], input_size=(128, 128), fixed_size=fixed)
    monkeypatch.setattr(cache, "specs", lambda: specs)
    monkeypatch.setattr(cache, "spec", lambda name: specs[name] if name in specs else registry.get(name))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / "datasets.py"), default_timeout=240)
    at.session_state["model_name"] = TINY_VIT
    at.session_state["ds_limit"] = 20
    at.session_state["ds_map"] = "PCA"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ds_size").options == sizes
    job = at.session_state["ds_job"] if "ds_job" in at.session_state else None
    if job is not None:  # the page started extracting in the background: stop it, leave no thread behind
        job.stop.set()
        job.wait(timeout=120)


# ---------------------------------------------------------------------------------------------
# Training augmentation


def _batch(augment: preprocessing.Augment, pictures, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([augment(p, rng) for p in pictures])


def test_augmentation_is_torchvision_v2_with_the_spec_s_interpolation():
    steps = preprocessing.Augment(BICUBIC, 48, crop=True, flip=True).transform.transforms
    crop, flip = steps
    assert isinstance(crop, v2.RandomResizedCrop) and isinstance(flip, v2.RandomHorizontalFlip)
    assert tuple(crop.size) == (48, 48)
    assert crop.scale == preprocessing.CROP_SCALE and crop.ratio == preprocessing.CROP_RATIO
    assert crop.interpolation == v2.InterpolationMode.BICUBIC
    flip_only = preprocessing.Augment(CNN, 48, flip=True).transform.transforms
    assert [type(s) for s in flip_only] == [v2.RandomHorizontalFlip]


def test_augmented_batches_are_seeded_and_leave_torch_s_generator_alone():
    pictures = [_picture(150, 97, seed=s) for s in range(6)]
    augment = preprocessing.Augment(BICUBIC, 48, crop=True, flip=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = _batch(augment, pictures, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, _batch(augment, pictures, seed=7))  # same seed, same batch
    assert not torch.equal(first, _batch(augment, pictures, seed=8))
    # and the global generator's draws are no help: another global seed changes nothing
    torch.manual_seed(999)
    assert torch.equal(first, _batch(augment, pictures, seed=7))
    assert first.shape == (6, 3, 48, 48) and first.dtype == torch.float32


def test_augmented_inputs_have_the_spec_s_size_and_normalisation():
    plain = preprocessing.Augment(BICUBIC, 48)
    flipped = preprocessing.Augment(BICUBIC, 48, flip=True)
    picture = _picture(150, 97)
    expected = plain(picture, np.random.default_rng(0))
    seen = {torch.equal(flipped(picture, rng), expected) for rng in map(np.random.default_rng, range(12))}
    assert seen == {True, False}  # sometimes as it is ...
    rng = np.random.default_rng(0)
    for _ in range(12):  # ... else its mirror image, in the same units
        out = flipped(picture, rng)
        assert torch.equal(out, expected) or torch.equal(out, expected.flip(-1))
    # a crop of a flat colour is that colour, normalised with the spec's mean and std
    flat = Image.new("RGB", (150, 97), (51, 102, 204))
    cropped = preprocessing.Augment(BICUBIC, 48, crop=True)(flat, np.random.default_rng(0))
    colour = (torch.tensor([51, 102, 204]) / 255.0 - torch.tensor(BICUBIC.mean)) / torch.tensor(BICUBIC.std)
    assert cropped.shape == (3, 48, 48)
    torch.testing.assert_close(cropped, colour.view(3, 1, 1).expand(3, 48, 48), rtol=0, atol=1e-6)
    # crops differ from resizing the whole picture
    whole = plain(picture, np.random.default_rng(0))
    crop = preprocessing.Augment(BICUBIC, 48, crop=True)
    assert not all(torch.equal(crop(picture, rng), whole) for rng in map(np.random.default_rng, range(4)))


def test_without_augmentation_training_inputs_are_the_batch_path():
    augment = preprocessing.Augment(BICUBIC, 48)
    assert not augment.random
    picture = _picture(150, 97)
    expected = preprocessing.normalise(preprocessing.square(picture, BICUBIC, 48), BICUBIC)
    assert all(torch.equal(augment(picture, np.random.default_rng(s)), expected) for s in range(3))


def _key(picture: Image.Image) -> str:
    return hashlib.sha1(picture.convert("RGB").tobytes()).hexdigest()


def test_training_augments_only_the_training_rows(tiny, monkeypatch):
    shapes = datasets.shapes(0, 48, 64)
    calls: list[tuple[bool, str]] = []
    call = preprocessing.Augment.__call__

    def recorded(self, picture, rng):
        calls.append((self.random, _key(picture)))
        return call(self, picture, rng)

    monkeypatch.setattr(preprocessing.Augment, "__call__", recorded)
    config = training.TrainConfig(strategy="fine-tune", epochs=1, image_size=32, random_crop=True, flip=True)
    run = training.train(tiny, shapes, config)
    keys = [_key(p) for p in shapes.images]
    train = {keys[i] for i in run.split.train}
    held_out = {keys[i] for i in np.concatenate([run.split.val, run.split.test])}
    augmented = {key for random, key in calls if random}
    plain = {key for random, key in calls if not random}
    assert augmented and augmented <= train  # augmentation on the training rows ...
    assert held_out <= plain and not augmented & held_out  # ... and off for validation and test
