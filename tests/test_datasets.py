"""core.datasets: zips read safely in memory, folders, built-in sets; every zip hazard refused or skipped."""

import numpy as np
import pytest

from core import datasets
from core.datasets import ZipLimits
from core.errors import InvalidInputError
from tests import zips


def test_ordinary_zip_gives_classes_labels_and_lazy_images():
    data = datasets.from_zip(zips.ordinary())
    assert data.classes == ("cats", "dogs")
    assert data.counts() == {"cats": 3, "dogs": 3}
    assert data.skipped == ()
    assert data.images[0].mode == "RGB" and data.images[0].size == (24, 24)
    assert sorted(data.files)[0] == "cats/cats_0.png"
    assert len(data.content_hash) == 64 and data.content_hash == datasets.from_zip(zips.ordinary()).content_hash


def test_one_top_folder_is_stripped():
    data = datasets.from_zip(zips.nested_top_folder())
    assert data.classes == ("cats", "dogs") and len(data) == 6


def test_junk_is_skipped_and_reported_with_reasons():
    data = datasets.from_zip(zips.mixed_junk())
    assert len(data) == 6
    reasons = data.skipped_reasons()
    assert reasons == {"not an image (.txt)": 1, "not a readable image": 1, "not inside a class folder": 1}
    assert {s.file for s in data.skipped} == {"cats/notes.txt", "dogs/broken.jpg", "README.png"}


@pytest.mark.parametrize("builder", [zips.zip_slip, zips.zip_slip_nested, zips.backslash_slip, zips.absolute_path,
                                     zips.drive_letter])
def test_unsafe_paths_refuse_the_zip(builder):
    with pytest.raises(InvalidInputError, match="unsafe path"):
        datasets.from_zip(builder())


def test_symlinks_are_ignored():
    data = datasets.from_zip(zips.symlink())
    assert len(data) == 6
    assert data.skipped_reasons() == {"symbolic link (ignored)": 1}


def test_too_many_files():
    with pytest.raises(InvalidInputError, match="at most 10"):
        datasets.from_zip(zips.many_files(11), ZipLimits(max_files=10))


def test_declared_size_bomb():
    with pytest.raises(InvalidInputError, match="zip bomb"):
        datasets.from_zip(zips.declared_size_bomb())


def test_high_ratio_bomb():
    with pytest.raises(InvalidInputError, match="zip bomb"):
        datasets.from_zip(zips.high_ratio_bomb())


def test_total_bytes_cap():
    with pytest.raises(InvalidInputError, match="more than 0 MB"):
        datasets.from_zip(zips.ordinary(), ZipLimits(max_total_bytes=1000))


def test_a_member_whose_size_lies_is_skipped_not_trusted():
    data = datasets.from_zip(zips.lying_size())
    assert len(data) == 5
    (skipped,) = data.skipped
    assert skipped.file == "cats/cats_0.png" and "unreadable" in skipped.reason


def test_member_size_cap():
    # every member is over the cap, so no class is left: the message says why the files were skipped
    with pytest.raises(InvalidInputError, match="6 larger than"):
        datasets.from_zip(zips.ordinary(), ZipLimits(max_member_bytes=100))


@pytest.mark.parametrize(
    ("builder", "match"),
    [(zips.one_class, "only the class 'cats'"), (zips.empty_zip, "no images in class folders"),
     (zips.not_a_zip, "not a zip"), (lambda: b"", "empty")],
)
def test_refused_with_a_clear_message(builder, match):
    with pytest.raises(InvalidInputError, match=match):
        datasets.from_zip(builder())


def test_folder(tmp_path):
    for path, data in zips.classes(per_class=2).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    (tmp_path / "cats" / "notes.txt").write_text("x")
    (tmp_path / "dogs" / "link.png").symlink_to(tmp_path / "cats" / "cats_0.png")
    data = datasets.from_folder(tmp_path)
    assert data.classes == ("cats", "dogs") and len(data) == 4
    assert data.images[3].size == (24, 24)
    assert data.skipped_reasons() == {"not an image (.txt)": 1, "symbolic link (ignored)": 1}
    with pytest.raises(InvalidInputError, match="not a folder"):
        datasets.from_folder(tmp_path / "missing")


def test_digits_are_deterministic_and_stratified():
    a, b = datasets.digits(3, 100), datasets.digits(3, 100)
    assert len(a) == 100 and set(a.counts().values()) == {10}
    assert np.array_equal(np.asarray(a.images[7]), np.asarray(b.images[7])) and a.content_hash == b.content_hash
    assert a.content_hash != datasets.digits(4, 100).content_hash


def test_shapes_have_masks_and_are_deterministic():
    a, b = datasets.shapes(1, 12, 64), datasets.shapes(1, 12, 64)
    assert a.classes == datasets.SHAPES[:4] and set(a.counts().values()) == {3}
    assert len(a.masks) == 12 and a.masks[0].shape == (64, 64) and a.masks[0].dtype == bool
    assert all(0.02 < m.mean() < 0.5 for m in a.masks)
    assert np.array_equal(np.asarray(a.images[5]), np.asarray(b.images[5]))
    # the shape's pixels are one colour: the mask marks exactly them
    pixels = np.asarray(a.images[0])[a.masks[0]]
    assert (pixels == pixels[0]).all()


def test_sample_keeps_every_class():
    data = datasets.digits(0, 300).sample(25, seed=1)
    assert len(data) == 25 and all(n >= 2 for n in data.counts().values())


def test_torchvision_unknown_name_and_offline_message(tmp_path):
    with pytest.raises(InvalidInputError, match="Did you mean 'CIFAR10'"):
        datasets.torchvision_set("CIFAR1O", tmp_path)
    with pytest.raises(InvalidInputError, match="could not be downloaded"):
        datasets.torchvision_set("MNIST", tmp_path, download=False)


def test_load_by_name():
    assert datasets.load("digits", n=50).name == "digits"
    with pytest.raises(InvalidInputError, match="No dataset"):
        datasets.load("no/such/thing.zip")


def test_open_source_is_the_one_dispatch(tmp_path, monkeypatch):
    """load (the CLI's names) goes through open_source, as the dashboard does: one dispatch over sources."""
    raw = zips.ordinary()
    path = tmp_path / "pets.zip"
    path.write_bytes(raw)
    uploaded = datasets.open_source("zip", "ignored", data=raw, n=4, seed=1)
    from_path = datasets.open_source("zip", str(path), n=4, seed=1)
    assert uploaded.classes == from_path.classes == ("cats", "dogs") and len(uploaded) == 4
    assert uploaded.content_hash == from_path.content_hash and uploaded.files == from_path.files
    opened = []
    folder = datasets.open_source("folder", "somewhere", folder=lambda p: opened.append(p) or datasets.from_zip(raw))
    assert opened == ["somewhere"] and len(folder) == 6
    with pytest.raises(InvalidInputError, match="Unknown kind of dataset"):
        datasets.open_source("tarball", "x")
    calls = []
    real = datasets.open_source
    monkeypatch.setattr(datasets, "open_source", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert len(datasets.load(str(path), n=4, seed=1)) == 4 and len(datasets.load("shapes", n=8)) == 8
    assert calls == [("zip", str(path)), ("shapes",)]


def test_lazy_sequences_are_public_for_other_modules():
    """processes hands a set's compressed bytes to a child process: it reads them from image_lists' public names."""
    from core import image_lists

    sampled = datasets.from_zip(zips.ordinary()).sample(4, seed=0)
    assert isinstance(sampled.images, image_lists.Subset) and isinstance(sampled.images.inner, image_lists.LazyImages)
    assert sampled.images[0].mode == "RGB"
