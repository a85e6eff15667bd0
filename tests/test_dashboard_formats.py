"""Streamlit AppTest: files as people really have them, in every page that takes them.

iPhone photos (HEIC) and AVIF in the Explain and Batch uploaders; a dataset zip made by macOS Finder with a
README, a LICENSE and a labels file beside the class folders on the Datasets and Transfer learning pages.
"""

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import images  # noqa: F401  (registers pillow-heif, so the tests can write HEIC)
from tests import zips
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
IMAGE_PAGES = {"image_upload": "app_pages/explain.py", "batch_files": "app_pages/batch.py"}

pytestmark = pytest.mark.timeout(300)


def _photo(name: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "assets" / "samples" / f"{name}.jpg").save(buffer, format=fmt, quality=85)
    return buffer.getvalue()


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _captions(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def _rendered(markdown) -> str:
    """The texts as a reader sees them: Markdown's backslash escapes (file names are escaped) removed."""
    return " | ".join(markdown).replace("\\", "")


def _pet_zip() -> bytes:
    files = zips.tree(extras={**zips.README, **zips.LABELS}, names=("red", "blue"), per_class=15)
    return zips.finder(files, "pets")


def test_explain_takes_a_heic_photo():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.radio(key="image_source").set_value("Upload").run()
    uploader = at.file_uploader(key="image_upload")
    assert {"heic", "heif", "avif", "jpg", "png"} <= set(uploader.proto.type) | {t.lstrip(".") for t in uploader.proto.type}
    assert "HEIC" in uploader.proto.label and "AVIF" in uploader.proto.label
    uploader.set_value(("IMG_0001.HEIC", _photo("coffee", "HEIF"), "image/heic")).run()
    _ok(at)
    assert at.dataframe[0].value["label"].iloc[0] == "espresso"
    assert "HEIF · 600×400" in " ".join(c.value for c in at.caption)
    assert any("at layer" in c for c in _captions(at))  # the heatmap overlay


def test_batch_takes_heic_and_avif():
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.run()
    at.switch_page("app_pages/batch.py").run()
    uploader = at.file_uploader(key="batch_files")
    assert {"heic", "avif"} <= {t.lstrip(".") for t in uploader.proto.type}
    uploader.set_value([
        ("IMG_0002.heic", _photo("coffee", "HEIF"), "image/heic"),
        ("cat.avif", _photo("chelsea", "AVIF"), "image/avif"),
        ("IMG_0003.heic", b"not a photo at all", "image/heic"),
    ]).run()
    at.toggle(key="batch_samples").set_value(False).run()
    assert not at.exception, at.exception
    captions = _captions(at)
    assert len(captions) == 2 and captions[0].startswith("IMG_0002.heic: ") and captions[1].startswith("cat.avif: ")
    assert [e.value for e in at.error] and "IMG_0003.heic" in at.error[0].value and "not an image" in at.error[0].value


def test_datasets_page_takes_a_zip_with_a_readme_beside_the_class_folders():
    at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / "datasets.py"), default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "zip"
    at.session_state["ds_map"] = "PCA"
    at.run()
    at.file_uploader(key="ds_zip").set_value(("pets.zip", _pet_zip(), "application/zip")).run()
    from tests.test_dashboard_datasets import settle

    settle(at)
    _ok(at)
    texts = _rendered([s.value for s in at.subheader] + [c.value for c in at.caption])
    assert "upload.zip: 30 images in 2 classes" in texts
    assert "Class folders read from pets/." in texts
    assert "Other files ignored (not in a class folder): pets/README.txt, pets/LICENSE, pets/labels.csv." in texts
    assert not at.warning  # nothing was skipped: the macOS debris is not even mentioned


def test_transfer_learning_page_takes_the_same_zip():
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_name"] = TINY
    at.run()
    at.switch_page("app_pages/training.py")
    at.session_state["tr_source"] = "zip"
    at.run()
    at.file_uploader(key="tr_zip").set_value(("pets.zip", _pet_zip(), "application/zip")).run()
    _ok(at)
    texts = _rendered(c.value for c in at.caption)
    assert "30 images in 2 classes (blue, red)" in texts
    assert "Other files ignored (not in a class folder): pets/README.txt, pets/LICENSE, pets/labels.csv." in texts


def test_markdown_in_file_names_stays_text():
    from dashboard import widgets

    hostile = "![x](http://example.com/t.png) :material/home: <b>bold</b>"
    escaped = widgets.plain(hostile)
    import re

    for special in "![]():<>":  # each one preceded by a backslash: Markdown shows it as is
        assert not re.search(rf"(?<!\\){re.escape(special)}", escaped), special
    assert escaped.replace("\\", "") == hostile
