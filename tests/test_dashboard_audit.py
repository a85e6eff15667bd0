"""Streamlit AppTest: the Datasets page's "Where the model looks" tab: one background job explains every image,
then per-class mean maps, review galleries from the stored maps, a second backbone compared, and downloads."""

import io
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from dashboard import audit_view
from tests.conftest import TINY, TINY_VIT

config.set_option("client.showErrorDetails", "full")
PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "datasets.py")


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _wait(at: AppTest, which: str, timeout: float = 240) -> AppTest:
    """Rerun while this session watches the audit job `which` or the features job, as the browser's polling does."""
    deadline = time.monotonic() + timeout
    for key in ("ds_job", audit_view.WATCHED[which]):
        while key in at.session_state and not at.session_state[key].done:
            assert time.monotonic() < deadline, f"{key} did not finish"
            at.session_state[key].wait(timeout=1)
            at.run()
    at.run()
    return at


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


@pytest.fixture(scope="module")
def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 24
    at.run()
    return _wait(at, "first")


def test_the_tab_explains_every_image_once_asked(page):
    at = page
    _ok(at)
    assert [t.label for t in at.tabs] == ["Features, predictions and metrics", "Where the model looks"]
    assert "Where it looks, class by class" not in [s.value for s in at.subheader]  # nothing runs unasked
    at.button(key="audit_start_first").click().run()
    _wait(at, "first")
    _ok(at)
    subheaders = [s.value for s in at.subheader]
    assert "Where it looks, class by class" in subheaders and "Review" in subheaders
    assert any("24 maps from Grad-CAM" in c.value for c in at.caption)
    captions = _captions(at)
    assert sum("· all images ·" in c for c in captions) == 4  # one mean map per class (not comparable: all images)
    assert sum("heat in mask" in c for c in captions) == audit_view.GALLERY
    review = at.selectbox(key="audit_review")
    assert review.value == "Most heat outside the object" and "Most heat on the border" in review.options
    review.set_value("Most heat on the border").run()
    _ok(at)
    assert sum("heat border" in c for c in _captions(at)) == audit_view.GALLERY


def test_a_clicked_point_shows_its_stored_map(page):
    at = page
    at.session_state["ds_scatter"] = {"selection": {"points": [{"customdata": [5]}], "point_indices": [0],
                                                    "box": [], "lasso": []}}
    at.run()
    _ok(at)
    stored = [c for c in _captions(at) if c.endswith("(from the audit)")]
    assert stored, (_captions(at), [s.value for s in at.subheader])
    assert all(c.startswith("Stored Grad-CAM for '") for c in stored)


def test_downloads_hold_the_per_image_table(page):
    at = page
    buttons = {b.proto.label: b for b in at.get("download_button")}
    assert {"Per-image table (Parquet)", "Per-image table (CSV)"} <= set(buttons)


def test_a_second_backbone_is_compared_on_the_same_images(page):
    at = page
    at.selectbox(key="audit_other").set_value(TINY_VIT).run()
    at.button(key="audit_start_second").click().run()
    _wait(at, "second")
    _ok(at)
    table = next(d.value for d in at.dataframe if "agreement" in d.value.columns)
    # the tiny models' classes are not the shapes: "both correct" would mean nothing, so it is not shown
    assert list(table.columns) == ["class", "images", "agreement"] and len(table) == 4
    assert "Where they disagree most" in " ".join(m.value for m in at.markdown)
    assert sum("agreement" in c for c in _captions(at)) == 4
