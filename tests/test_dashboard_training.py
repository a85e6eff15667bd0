"""Streamlit AppTest: the Transfer learning page trains a head for one epoch on digits in a background process,
lists the run with its metrics, confusion matrix and heatmaps, exports it, and hands it to the Explain page.

Goes through the real entry point (dashboard/streamlit_app.py). The tiny test CNN keeps it fast.
"""

import json
import os
import time
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import checkpoints
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "streamlit_app.py"

pytestmark = pytest.mark.timeout(300)


def open_page(tmp_path: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state["model_name"] = TINY
    at.run()
    at.switch_page("app_pages/training.py")
    at.session_state["tr_limit"] = 60
    at.session_state["tr_epochs"] = 1
    at.session_state[f"tr_size_{TINY}"] = 64
    at.run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def finish(at: AppTest, timeout: float = 120) -> None:
    """Rerun the page until the background training has finished and its run is listed."""
    deadline = time.monotonic() + timeout
    while "training_job" in at.session_state:
        assert time.monotonic() < deadline, "the training did not finish"
        at.session_state["training_job"].wait(timeout=1)
        at.run()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> AppTest:
    return open_page(tmp_path_factory.mktemp("training_entry"))


def test_page_shows_what_trains_before_training(page):
    _ok(page)
    assert page.title[0].value == "Transfer learning"
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Trainable parameters"] == f"{(12 + 1) * 10:,}"  # a new Linear(12, 10) on the tiny CNN
    groups = page.dataframe[0].value
    # its two stages (found at load: the resolution drops), then the head
    assert list(groups["status"]) == ["frozen", "frozen", "trains"] and groups["group"].iloc[-1] == "new head"
    assert any("Press Train" in i.value or "press Train" in i.value for i in page.info)
    page.radio(key="tr_strategy").set_value("fine-tune").run()
    _ok(page)
    assert {m.label: m.value for m in page.metric}["Frozen parameters"] == "224"  # its first stage (Conv2d(3, 8, 3): 216 + 8)
    page.radio(key="tr_strategy").set_value("feature-extraction").run()


def test_one_epoch_of_feature_extraction_on_digits(page):
    at = page
    at.button(key="tr_start").click().run()
    _ok(at)
    assert "training_job" in at.session_state
    job = at.session_state["training_job"]
    finish(at)
    _ok(at)
    assert job.pid is not None and job.pid != os.getpid()  # trained in a process of its own, not in the server
    runs = at.session_state["training_runs"]
    assert len(runs) == 1 and len(runs[0].result.history) == 1
    table = next(d.value for d in at.dataframe if "test accuracy" in d.value.columns)
    assert list(table["strategy"]) == ["feature-extraction"] and list(table["run"]) == ["#1"]
    assert 0 <= table["test accuracy"].iloc[0] <= 1 and table["total params"].iloc[0]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heatmaps = [c for c in charts if c["data"] and c["data"][0]["type"] == "heatmap"]
    assert heatmaps and len(heatmaps[0]["data"][0]["x"]) == 10  # the confusion matrix over the ten digits
    assert any(len(c["data"]) == 4 for c in charts)  # loss and accuracy, train and validation
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("ImageNet head") for c in captions) and any(c.startswith("#1 feature-extraction") for c in captions)
    per_class = next(d.value for d in at.dataframe if "support" in d.value.columns)
    assert len(per_class) == 10


def test_a_baseline_run_is_added_to_the_table(page):
    at = page
    at.radio(key="tr_strategy").set_value("small-cnn").run()
    at.session_state["tr_size_scratch"] = 32
    at.button(key="tr_start").click().run()
    finish(at)
    _ok(at)
    table = next(d.value for d in at.dataframe if "test accuracy" in d.value.columns)
    assert list(table["strategy"]) == ["feature-extraction", "small-cnn"]


def test_export_and_use_in_explain(page):
    at = page
    json_file, weights_file = (b for b in at.get("download_button"))
    assert "model.json" in json_file.proto.label and "safetensors" in weights_file.proto.label
    at.button(key="tr_use").click().run()
    _ok(at)
    model = at.session_state["custom_model"]
    assert model.categories == tuple(str(d) for d in range(10)) and model.spec.name == "small_cnn"
    document, weights = checkpoints.serialize(model)
    assert checkpoints.load((document, weights)).categories == model.categories
    at.switch_page("app_pages/explain.py").run()
    at.sidebar.checkbox(key="use_custom").check().run()
    _ok(at)
    captions = [c for image in at.get("image") for c in image.captions]
    assert any("Grad-CAM for" in c and model.spec.title in c for c in captions), captions
    labels = set(at.dataframe[0].value["label"])
    assert labels <= set(model.categories)


def test_import_an_export_and_refuse_a_pickle(page):
    at = page
    at.switch_page("app_pages/training.py").run()
    run = at.session_state["training_runs"][0].result
    document, weights = checkpoints.serialize(run.model)
    at.file_uploader(key="tr_import").set_value(
        [("model.json", document, "application/json"), ("model.safetensors", weights, "application/octet-stream")]
    ).run()
    _ok(at)
    assert any("10 classes" in s.value for s in at.success)
    at.button(key="tr_use_imported").click().run()
    assert at.session_state["custom_model"].categories == run.classes
    import pickle

    at.file_uploader(key="tr_import").set_value(
        [("model.json", document, "application/json"), ("model.safetensors", pickle.dumps({"a": 1}), "x/y")]
    ).run()
    assert not at.exception
    assert any("never unpickles" in e.value for e in at.error)
