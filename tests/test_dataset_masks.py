"""Object masks beside the class folders (`masks/`): read from zips and folders as the images' masks, not as a
class; used by the audit's mask statistics."""

import io
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core import audit, datasets, models
from core.__main__ import main
from tests.conftest import TINY


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _picture(seed: int, size=(48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def _mask(box: tuple[int, int, int, int], size=(48, 40)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


BOXES = {"cats/1.png": (2, 2, 20, 20), "cats/2.png": (10, 5, 30, 25), "dogs/3.png": (0, 0, 48, 10),
         "dogs/4.png": (5, 5, 15, 35)}


def _files(*, skip: str | None = None, small_mask: bool = False) -> dict[str, bytes]:
    files = {f"set/{name}": _png(_picture(i)) for i, name in enumerate(BOXES)}
    for name, box in BOXES.items():
        if name == skip:
            continue
        # one mask under its class folder, the others flat (both layouts are read)
        where = f"set/masks/{name}" if name.startswith("cats/1") else f"set/masks/{name.split('/')[1]}"
        mask = _mask(box)
        if small_mask and name == "dogs/3.png":  # a mask at half size is scaled to its image
            mask = mask[::2, ::2]
        files[where] = _png(mask)
    return files


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _check(dataset: datasets.Dataset) -> None:
    assert dataset.classes == ("cats", "dogs") and len(dataset) == 4
    assert dataset.masks is not None and len(dataset.masks) == 4
    for i, name in enumerate(dataset.files):
        mask = dataset.masks[i]
        assert mask.dtype == bool and mask.shape == (dataset.images[i].height, dataset.images[i].width)
        np.testing.assert_array_equal(mask, _mask(BOXES[name]) > 127, err_msg=name)


def test_a_zip_with_a_masks_folder_gives_masks_not_a_class():
    _check(datasets.from_zip(_zip(_files(small_mask=True))))


def test_a_folder_with_a_masks_folder(tmp_path):
    for name, data in _files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    dataset = datasets.from_folder(tmp_path / "set")
    _check(dataset)
    part = dataset.subset([3, 0])
    np.testing.assert_array_equal(part.masks[0], dataset.masks[3])
    np.testing.assert_array_equal(part.masks[1], dataset.masks[0])


def test_a_missing_mask_leaves_masks_out_and_says_so():
    dataset = datasets.from_zip(_zip(_files(skip="dogs/4.png")))
    assert dataset.masks is None and dataset.classes == ("cats", "dogs")
    assert any("no mask for 1 of 4 images" in entry for entry in dataset.ignored)


def test_the_audit_scores_heat_on_the_users_masks(tmp_path):
    dataset = datasets.from_zip(_zip(_files()))
    result = audit.explain_dataset(models.load(TINY, device="cpu"), dataset, batch_size=4)
    assert {"heat_in_mask", "pointing_hit"} <= set(result.stats)
    archive = tmp_path / "masked.zip"
    archive.write_bytes(_zip(_files()))
    assert main(["audit", str(archive), "--model", TINY, "--out", str(tmp_path / "out")]) == 0
    table = pq.read_table(tmp_path / "out" / "audit.parquet")
    assert "heat_in_mask" in table.column_names and table.num_rows == 4


@pytest.mark.parametrize("name", ["Masks", "masks"])
def test_the_folder_name_is_matched_whatever_its_case(name):
    files = {k.replace("set/masks/", f"set/{name}/"): v for k, v in _files().items()}
    assert datasets.from_zip(_zip(files)).masks is not None


def test_masks_as_people_save_them():
    """0/1 label PNGs, masks with an alpha channel and JPEG-saved masks read as the object; an undecodable mask
    scores its image as NaN instead of failing the audit; a class called 'masks' stays a class."""
    label = (_mask(BOXES["cats/1.png"]) // 255).astype(np.uint8)  # 0 and 1
    alpha = np.zeros((40, 48, 4), dtype=np.uint8)
    alpha[..., 3] = _mask(BOXES["cats/2.png"])
    jpeg = io.BytesIO()
    Image.fromarray(_mask(BOXES["dogs/3.png"])).save(jpeg, format="JPEG", quality=70)
    files = _files()
    files["set/masks/cats/1.png"] = _png(label)
    files["set/masks/2.png"] = _png(alpha)
    del files["set/masks/3.png"]
    files["set/masks/3.jpg"] = jpeg.getvalue()
    dataset = datasets.from_zip(_zip(files))
    for i, name in enumerate(dataset.files[:3]):
        expected = _mask(BOXES[name]) > 127
        assert (dataset.masks[i] == expected).mean() > 0.98, name

    faces = {f"set/{c}/{i}.png": _png(_picture(i + 10 * n)) for n, c in enumerate(("masks", "no_mask"))
             for i in range(3)}
    assert datasets.from_zip(_zip(faces)).classes == ("masks", "no_mask")


def test_an_unreadable_mask_leaves_that_image_unscored(tmp_path):
    for name, data in _files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    broken = tmp_path / "set" / "masks" / "4.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: its header still reads
    dataset = datasets.from_folder(tmp_path / "set")
    result = audit.explain_dataset(models.load(TINY, device="cpu"), dataset, batch_size=4)
    row = dataset.files.index("dogs/4.png")
    assert np.isnan(result.stats["heat_in_mask"][row]) and not result.stats["pointing_hit"][row]
    assert np.isfinite(np.delete(result.stats["heat_in_mask"], row)).all()
    assert all(np.isfinite(c["heat_in_mask"]) for c in result.summary())


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_masks_are_decoded_once_and_their_pictures_not_at_all(decodes):
    """A mask is decoded once (the decoder's checks and the read are one decode) at its picture's size, which is
    read from the picture's header; explaining a masked zip decodes each image and each mask once."""
    files = {k: (_jpeg(_picture(i)) if not k.startswith("set/masks/") else v)
             for i, (k, v) in enumerate(_files().items())}
    files = {(k.replace(".png", ".jpg") if not k.startswith("set/masks/") else k): v for k, v in files.items()}
    dataset = datasets.from_zip(_zip(files))
    assert dataset.masks is not None
    loads = decodes
    loads.clear()  # counted from here: reading the masks, then the audit
    masks = [dataset.masks[i] for i in range(len(dataset))]
    assert loads == ["PNG"] * 4  # the masks only: the JPEG pictures' sizes came from their headers
    assert [m.shape for m in masks] == [(40, 48)] * 4
    loads.clear()
    audit.explain_dataset(models.load(TINY, device="cpu"), dataset, batch_size=4)
    assert sorted(loads) == ["JPEG"] * 4 + ["PNG"] * 4


def test_a_bad_mask_is_refused_with_the_decoders_message():
    from core import image_lists
    from core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not an image"):
        image_lists.mask(b"not an image at all", (48, 40))
    with pytest.raises(InvalidInputError, match="at least 8"):
        image_lists.mask(_png(np.zeros((4, 4), dtype=np.uint8)), (48, 40))
