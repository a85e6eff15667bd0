"""Streamlit AppTest: the Datasets page on the built-in sets and an uploaded zip, with injected chart clicks.

The page file runs on its own (pytest puts the repository root on sys.path); the tiny test CNN keeps it
fast. The last test goes through the real entry point once dashboard/streamlit_app.py registers the page.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from tests import zips
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
PAGE = str(ROOT / "dashboard" / "app_pages" / "datasets.py")


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> dict[str, dict]:
    """Plotly specs by widget key (charts without a key are listed as 'chart N')."""
    charts = {}
    for n, chart in enumerate(at.get("plotly_chart")):
        key = chart.proto.id.rsplit("-", 1)[-1] if chart.proto.id else ""
        charts[key if "ds_" in chart.proto.id else f"chart {n}"] = json.loads(chart.proto.spec)
    return charts


def _array(value) -> np.ndarray:
    """A plotly array from a figure's JSON: a plain list, or plotly's typed form {dtype, bdata, shape}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value, dtype=float)


def _texts(at: AppTest) -> str:
    return " | ".join([s.value for s in at.subheader] + [c.value for c in at.caption] + [h.value for h in at.header])


@pytest.fixture(scope="module")
def digits_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_limit"] = 60
    at.run()
    return at


def test_digits_page_shows_counts_map_confusion_and_metrics(digits_page):
    at = digits_page
    _ok(at)
    assert at.title[0].value == "Datasets"
    assert "digits: 60 images in 10 classes" in _texts(at)
    charts = _charts(at)
    scatter = [c for k, c in charts.items() if "scatter" in json.dumps(c["data"][0].get("type", ""))]
    assert scatter, list(charts)
    assert any(c["data"][0].get("type") == "heatmap" for c in charts.values())
    assert at.metric[0].label == "Accuracy"
    table = at.dataframe[-1].value
    assert list(table.columns) == ["class", "precision", "recall", "F1", "support"] and len(table) == 10
    assert "Trustworthiness" in _texts(at) and "Linear probe" in _texts(at)


def test_clicking_a_point_and_a_cell(digits_page):
    at = digits_page
    at.session_state["ds_scatter"] = {"selection": {"points": [{"customdata": [5]}], "point_indices": [0],
                                                    "box": [], "lasso": []}}
    at.run()
    _ok(at)
    assert "Selected image" in _texts(at)
    captions = " | ".join(c for image in at.get("image") for c in image.captions)
    assert "Grad-CAM for" in captions
    at.session_state["ds_confusion"] = {"selection": {"points": [{"customdata": [2, 2]}], "point_indices": [0],
                                                      "box": [], "lasso": []}}
    at.run()
    _ok(at)
    assert "True 2, predicted 2" in _texts(at)


def test_pca_and_normalised_matrix(digits_page):
    at = digits_page
    at.radio(key="ds_map").set_value("PCA")
    at.toggle(key="ds_normalised").set_value(True)
    at.run()
    _ok(at)
    heatmap = next(c for c in _charts(at).values() if c["data"][0].get("type") == "heatmap")
    rows = [row.sum() for row in _array(heatmap["data"][0]["z"]) if row.sum() > 0]
    assert rows and all(abs(r - 1) < 1e-6 for r in rows)


def test_shapes_page_ranks_cam_methods_against_a_random_map():
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 24
    at.session_state["ds_map"] = "PCA"
    at.run()
    _ok(at)
    assert "Localisation scores" in _texts(at)
    table = at.dataframe[-1].value
    assert "Random map (baseline)" in set(table["method"]) and list(table["rank"]) == list(range(1, len(table) + 1))


def test_uploaded_zip_and_a_hostile_one():
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "zip"
    at.session_state["ds_map"] = "PCA"
    at.run()
    _ok(at)
    assert any("Upload a zip" in i.value for i in at.info)
    data = zips.build(zips.classes(("red", "blue", "green"), per_class=6) | {"red/notes.txt": b"x"})
    at.file_uploader(key="ds_zip").set_value(("set.zip", data, "application/zip")).run()
    _ok(at)
    assert "upload.zip: 18 images in 3 classes" in _texts(at)
    assert any("Skipped 1 file(s): 1 not an image (.txt)" in w.value for w in at.warning)
    at.file_uploader(key="ds_zip").set_value(("evil.zip", zips.zip_slip(), "application/zip")).run()
    assert at.exception and "unsafe path" in at.exception[0].message


def test_through_the_entry_point():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    try:
        at.switch_page("app_pages/datasets.py")
    except ValueError:
        pytest.skip("dashboard/streamlit_app.py does not register the Datasets page yet")
    at.session_state["ds_limit"] = 30
    at.session_state["ds_map"] = "PCA"
    at.session_state["ds_size"] = 96
    at.run()
    _ok(at)
    assert at.title[0].value == "Datasets"
