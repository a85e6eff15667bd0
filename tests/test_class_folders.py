"""Class folders found however people wrap and zip them (core.class_folders, through core.datasets).

Zips are built the way macOS Finder, Windows Explorer, Windows PowerShell, Info-ZIP's `zip -r` and Python's
shutil.make_archive build them (tests/zips.py), with and without a wrapping folder, with and without a README,
LICENSE and labels file beside the class folders; folders on disk follow the same rules.
"""

import unicodedata
from pathlib import Path, PurePosixPath

import pytest

from core import class_folders, datasets
from core.errors import InvalidInputError
from tests import zips

MAKERS = [zips.finder, zips.explorer, zips.powershell, zips.zip_r, zips.make_archive]
WRAPS = ["", "pets", "export/pets"]  # nothing, one folder, two nested single folders
EXTRAS = {
    "bare": {},
    "readme": zips.README,
    "labels": zips.LABELS,
    "readme+labels": {**zips.README, **zips.LABELS},
}


@pytest.mark.parametrize("extras", list(EXTRAS), ids=str)
@pytest.mark.parametrize("wrap", WRAPS, ids=lambda w: w or "unwrapped")
@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__)
def test_zips_as_tools_make_them(maker, wrap, extras):
    data = datasets.from_zip(maker(zips.tree(extras=EXTRAS[extras]), wrap))
    assert data.classes == ("cats", "dogs")
    assert data.counts() == {"cats": 3, "dogs": 3}
    assert data.skipped == ()  # debris (.DS_Store, __MACOSX/, Thumbs.db, desktop.ini) is not even listed
    assert data.root == wrap
    prefix = f"{wrap}/" if wrap else ""
    assert sorted(data.ignored) == sorted(prefix + name for name in EXTRAS[extras])
    assert sorted(data.files)[0] == "cats/cats_0.png"  # names below the root, whatever the wrapping
    assert data.images[0].mode == "RGB"


@pytest.mark.parametrize("extras", list(EXTRAS), ids=str)
@pytest.mark.parametrize("wrap", WRAPS, ids=lambda w: w or "unwrapped")
def test_folders_follow_the_same_rules(tmp_path, wrap, extras):
    files = zips.tree(extras=EXTRAS[extras])
    base = tmp_path / "given"
    zips._write_tree(base / wrap if wrap else base, files)
    for debris in (".DS_Store", "cats/.DS_Store", "cats/Thumbs.db", "desktop.ini", "__MACOSX/cats/._cats_0.png",
                   "cats/._cats_1.png", ".Spotlight-V100/Store-V2/cats.png", ".Trashes/501/dogs/old.png"):
        target = (base / wrap if wrap else base) / debris
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zips.image_bytes((5, 5, 5)) if debris.endswith(".png") and "._" not in debris else b"\0\0")
    data = datasets.from_folder(base)
    assert data.classes == ("cats", "dogs") and data.counts() == {"cats": 3, "dogs": 3}
    assert data.skipped == ()
    assert data.root == wrap
    prefix = f"{wrap}/" if wrap else ""
    assert sorted(data.ignored) == sorted(prefix + name for name in EXTRAS[extras])
    assert data.images[0].mode == "RGB"
    zipped = datasets.from_zip(zips.make_archive(files, wrap))
    assert (zipped.classes, zipped.counts(), sorted(zipped.ignored)) == (data.classes, data.counts(), sorted(data.ignored))


@pytest.mark.parametrize("name", ["README.txt", "LICENSE", "labels.csv", "Thumbs.db", "desktop.ini"])
def test_the_reported_zip_with_each_file_beside_the_class_folders(name):
    # pets/README.txt, pets/cats/1.jpg, pets/dogs/2.jpg: was "only the class 'pets'"
    entries = zips.classes(top="pets", fmt="JPEG")
    entries[f"pets/{name}"] = b"text, or a Windows thumbnail cache"
    data = datasets.from_zip(zips.build(entries))
    assert data.classes == ("cats", "dogs") and len(data) == 6 and data.skipped == ()
    debris = name in ("Thumbs.db", "desktop.ini")
    assert data.ignored == (() if debris else (f"pets/{name}",))
    assert data.ignored_summary() == ("" if debris else f"Other files ignored (not in a class folder): pets/{name}.")


def test_debris_folders_never_become_classes():
    # A zip of a USB stick's root: the Trash and Spotlight folders hold images too.
    entries = zips.classes()
    entries[".Trashes/501/cats/deleted.png"] = zips.image_bytes((9, 9, 9))
    entries[".Spotlight-V100/Store-V2/preview.png"] = zips.image_bytes((9, 9, 9))
    entries["$RECYCLE.BIN/S-1-5-21/cats.png"] = zips.image_bytes((9, 9, 9))
    entries["System Volume Information/tracking.png"] = zips.image_bytes((9, 9, 9))
    entries["__MACOSX/._cats"] = zips.APPLEDOUBLE
    entries["dogs/._dogs_0.png"] = zips.APPLEDOUBLE
    entries["dogs/desktop.ini"] = b"[.ShellClassInfo]"
    entries["dogs/THUMBS.DB"] = zips.THUMBS_DB
    data = datasets.from_zip(zips.build(entries))
    assert data.classes == ("cats", "dogs") and data.counts() == {"cats": 3, "dogs": 3}
    assert data.skipped == () and data.ignored == () and data.root == ""


def test_loose_images_and_files_beside_wrapped_class_folders():
    entries = zips.classes(top="export/pets")
    entries["export/cover.png"] = zips.image_bytes((1, 2, 3))  # an image above the root: not a class
    entries["export/pets/preview.png"] = zips.image_bytes((1, 2, 3))  # an image beside the class folders
    entries["export/notes.md"] = b"# notes"
    entries["export/pets/cats/notes.txt"] = b"inside a class folder: a skipped non-image, as before"
    data = datasets.from_zip(zips.build(entries))
    assert data.root == "export/pets" and data.classes == ("cats", "dogs") and len(data) == 6
    assert data.ignored == ("export/notes.md",)
    assert data.skipped_reasons() == {"not inside a class folder": 2, "not an image (.txt)": 1}


def test_one_class_inside_a_wrapper_is_refused_with_the_class_and_the_other_files():
    entries = zips.classes(("cats",), top="pets")
    entries["pets/README.txt"] = b"only cats"
    with pytest.raises(InvalidInputError, match=r"only the class 'cats' in 'pets/'.*Other files ignored: pets/README\.txt"):
        datasets.from_zip(zips.build(entries))


def test_no_images_at_all_is_refused():
    with pytest.raises(InvalidInputError, match="no images in class folders.*Other files ignored: README.txt"):
        datasets.from_zip(zips.build({"README.txt": b"empty set", "cats/notes.txt": b"x"}))


def test_names_decomposed_by_macos_and_composed_elsewhere_are_one_class():
    entries = zips.classes(("café", "thé"))
    decomposed = {unicodedata.normalize("NFD", k): v for k, v in zips.classes(("café",), per_class=2).items()}
    renamed = {k.replace("_0", "_mac0").replace("_1", "_mac1"): v for k, v in decomposed.items()}
    data = datasets.from_zip(zips.build({**entries, **renamed}))
    assert data.classes == ("café", "thé") and data.counts() == {"café": 5, "thé": 3}


def test_utf8_names_without_the_zip_flag_are_read_as_utf8():
    # Info-ZIP and macOS write UTF-8 names without setting bit 11; zipfile alone would read "cafÃ©".
    data = datasets.from_zip(zips.zip_r(zips.tree(names=("café", "thé"))))
    assert data.classes == ("café", "thé")
    data = datasets.from_zip(zips.explorer(zips.tree(names=("café", "thé")), "pets"))  # DOS code page names
    assert data.classes == ("café", "thé") and data.root == "pets"


def test_a_name_written_twice_counts_once():
    entries = list(zips.classes().items())
    raw = zips.build(dict(entries))
    import io
    import warnings
    import zipfile

    buffer = io.BytesIO(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate: that is the point
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr(entries[0][0], entries[0][1])
    assert len(datasets.from_zip(buffer.getvalue())) == 6


# ---------------------------------------------------------------------------------------------
# The path rules themselves


def _paths(*names: str) -> list[PurePosixPath]:
    return [PurePosixPath(n) for n in names]


@pytest.mark.parametrize("names, root", [
    (("cats/1.jpg", "dogs/2.jpg"), ""),
    (("pets/cats/1.jpg", "pets/dogs/2.jpg"), "pets"),
    (("export/dataset/cats/1.jpg", "export/dataset/dogs/2.jpg"), "export/dataset"),
    (("pets/cats/1.jpg", "pets/dogs/2.jpg", "pets/cover.jpg"), "pets"),  # a loose image does not stop the descent
    (("export/cover.jpg", "export/pets/cats/1.jpg", "export/pets/dogs/2.jpg"), "export/pets"),
    (("pets/cats/indoor/1.jpg", "pets/cats/outdoor/2.jpg", "pets/dogs/3.jpg"), "pets"),  # sub-folders in a class
    (("pets/cats/1.jpg",), "pets"),  # one class: the root is still its parent (then refused for one class)
    (("cats/1.jpg", "cats/2.jpg", "dog.jpg"), ""),  # a folder holding images directly is a class, not a wrapper
    ((), ""),
])
def test_find_root(names, root):
    assert class_folders.find_root(_paths(*names)) == PurePosixPath(root)


@pytest.mark.parametrize("name, debris", [
    ("__MACOSX/pets/cats/._1.jpg", True), ("pets/cats/._1.jpg", True), ("pets/.DS_Store", True),
    ("pets/Thumbs.db", True), ("pets/thumbs.db", True), ("pets/Desktop.ini", True), ("pets/ehthumbs.db", True),
    (".Spotlight-V100/Store-V2/x.jpg", True), (".Trashes/501/x.jpg", True), ("$RECYCLE.BIN/x.jpg", True),
    ("pets/.hidden/x.jpg", True), ("pets/cats/1.jpg", False), ("pets/README.txt", False), ("labels.csv", False),
    ("pets/cats/1.jpg:Zone.Identifier", True), ("pets/MACOSX/1.jpg", False),
])
def test_is_debris(name, debris):
    assert class_folders.is_debris(PurePosixPath(name)) is debris


def test_arrange_sorts_members_loose_images_and_other_files():
    layout = class_folders.arrange(
        _paths("pets/cats/1.jpg", "pets/dogs/2.PNG", "pets/dogs/notes.txt", "pets/cover.jpg", "pets/README.txt",
               "pets/.DS_Store", "__MACOSX/pets/cats/._1.jpg"),
        {".jpg", ".png"},
    )
    assert layout.root == PurePosixPath("pets")
    assert [(m.label, str(m.relative)) for m in layout.members] == [
        ("cats", "cats/1.jpg"), ("dogs", "dogs/2.PNG"), ("dogs", "dogs/notes.txt")]
    assert layout.loose_images == (PurePosixPath("pets/cover.jpg"),)
    assert layout.other == (PurePosixPath("pets/README.txt"),)


def test_ignored_summary_names_five_and_counts_the_rest():
    entries = zips.classes()
    entries.update({f"note_{i}.txt": b"x" for i in range(8)})
    data = datasets.from_zip(zips.build(entries))
    assert len(data.ignored) == 8
    assert data.ignored_summary().endswith("note_4.txt and 3 more.")
    assert data.sample(4).ignored == data.ignored  # sampling keeps what was left out


def test_names_with_terminal_escapes_and_newlines_are_shown_harmless():
    entries = zips.classes(top="pets")
    entries["pets/\x1b[2J\x1b]0;owned\x07notes\n.txt"] = b"x"
    data = datasets.from_zip(zips.build(entries))
    summary = data.ignored_summary()
    assert "\x1b" not in summary and "\n" not in summary and "\x07" not in summary
    assert summary == "Other files ignored (not in a class folder): pets/?[2J?]0;owned?notes?.txt."


def test_folder_symlinked_class_folder_is_skipped_not_followed(tmp_path):
    zips._write_tree(tmp_path / "set", zips.tree())
    outside = tmp_path / "outside"
    zips._write_tree(outside, {"birds/b.png": zips.image_bytes((1, 1, 1))})
    (tmp_path / "set" / "birds").symlink_to(outside / "birds", target_is_directory=True)
    data = datasets.from_folder(tmp_path / "set")
    assert data.classes == ("cats", "dogs")
    assert data.skipped_reasons() == {"symbolic link (ignored)": 1}


def test_folder_file_cap_counts_every_file(tmp_path):
    zips._write_tree(tmp_path, zips.tree(extras={f"n{i}.txt": b"" for i in range(10)}))
    with pytest.raises(InvalidInputError, match="more than 10 files"):
        datasets.from_folder(tmp_path, max_files=10)


# ---------------------------------------------------------------------------------------------
# The shared realistic inputs (/work/shared/realistic/make_inputs.py), built once and cached


@pytest.fixture(scope="module")
def realistic(request) -> Path:
    from tests import realistic

    return realistic.inputs(request.config)


@pytest.mark.slow
@pytest.mark.parametrize("name, root, ignored", [
    ("finder.zip", "pets", ()),
    ("explorer.zip", "pets", ()),
    ("download.zip", "pets", ("pets/README.txt", "pets/LICENSE", "pets/labels.csv")),
    ("nested.zip", "export/dataset", ()),
    ("flat.zip", "", ()),
])
def test_realistic_zips(realistic, name, root, ignored):
    data = datasets.from_zip((realistic / "zips" / name).read_bytes(), name=name)
    assert data.classes == ("cats", "coffee") and data.counts() == {"cats": 12, "coffee": 12}
    assert data.root == root and sorted(data.ignored) == sorted(ignored) and data.skipped == ()


# ---------------------------------------------------------------------------------------------
# iPhone photos (HEIC) and AVIF in class folders


def _phone_set() -> dict[str, bytes]:
    from tests.hostile import encode, halves

    files = {}
    for i in range(2):
        files[f"cats/IMG_{i:04d}.HEIC"] = encode(halves(48, 32, (200, 60, 60), (200, 90, 60)), "HEIF", quality=80)
        files[f"dogs/IMG_{i:04d}.avif"] = encode(halves(48, 32, (60, 60, 200), (60, 90, 200)), "AVIF", quality=80)
    files["dogs/IMG_0009.heic"] = b"not really a photo"
    return files


def test_heic_and_avif_in_a_zip_and_a_folder(tmp_path):
    files = _phone_set()
    for data in (datasets.from_zip(zips.finder(files, "Photos")), _from_folder(tmp_path, files)):
        assert data.classes == ("cats", "dogs") and data.counts() == {"cats": 2, "dogs": 2}
        assert data.skipped_reasons() == {"not a readable image": 1}
        assert data.images[0].size == (48, 32) and data.images[0].mode == "RGB"


def _from_folder(tmp_path, files):
    zips._write_tree(tmp_path / "Photos", files)
    return datasets.from_folder(tmp_path)
