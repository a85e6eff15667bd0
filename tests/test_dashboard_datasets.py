"""Streamlit AppTest: the Datasets page on the built-in sets and an uploaded zip, with injected chart clicks.

The page file runs on its own (pytest puts the repository root on sys.path); the tiny test CNN keeps it
fast. The last test goes through the real entry point once dashboard/streamlit_app.py registers the page.
"""

import base64
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import embeddings
from dashboard import jobs
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


def settle(at: AppTest, *, until=None, timeout: float = 300) -> AppTest:
    """Rerun the page while it watches a background job (features, t-SNE), as the page's polling does in a
    browser, until no job is watched (or until(job) is true for the watched one)."""
    deadline = time.monotonic() + timeout
    while "ds_job" in at.session_state:
        job = at.session_state["ds_job"]
        if until is not None and until(job):
            break
        assert time.monotonic() < deadline, f"{job.label} did not finish"
        job.wait(timeout=1)
        at.run()
    return at


def _progress_texts(at: AppTest) -> str:
    return " | ".join(p.proto.text for p in at.get("progress"))


@pytest.fixture(scope="module")
def digits_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_limit"] = 60
    at.run()
    return settle(at)


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


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def test_a_probe_cell_explains_the_probes_classes(digits_page):
    """Issue #4: a linear probe's gallery explains the probe's classes, not the ImageNet head's same index."""
    at = digits_page
    heatmap = next(c for c in _charts(at).values() if c["data"][0].get("type") == "heatmap")
    counts = _array(heatmap["data"][0]["z"])
    true, predicted = next((t, p) for t in range(10) for p in range(10) if t != p and counts[t, p] > 0)
    at.session_state["ds_confusion"] = {"selection": {"points": [{"customdata": [true, predicted]}],
                                                      "point_indices": [0], "box": [], "lasso": []}}
    at.run()
    _ok(at)
    assert f"True {true}, predicted {predicted}" in _texts(at) and "linear probe's score" in _texts(at)
    captions = _captions(at)
    # the tiny CNN's own head calls its classes 'class N': a folder name in the caption comes from the probe model
    assert _has(captions, f"Grad-CAM for probe class '{predicted}' (predicted: {predicted})"), captions
    assert _has(captions, f"Grad-CAM for probe class '{true}' (true: {true})"), captions
    assert not any("ImageNet" in c or "'class " in c for c in captions)
    at.toggle(key="ds_average").set_value(True)
    at.run()
    _ok(at)
    averages = [c for c in _captions(at) if "images): " in c]
    assert sorted(averages) == [f"{d} (6 images): probe class '{d}'" for d in range(10)], averages


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
    settle(at)
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
    settle(at)
    _ok(at)
    assert "upload.zip: 18 images in 3 classes" in _texts(at)
    assert any("Skipped 1 file(s): 1 not an image (.txt)" in w.value for w in at.warning)
    at.file_uploader(key="ds_zip").set_value(("evil.zip", zips.zip_slip(), "application/zip")).run()
    assert at.exception and "unsafe path" in at.exception[0].message


def test_zero_shot_cells_explain_the_mapped_imagenet_classes():
    at = AppTest.from_file(PAGE, default_timeout=240)  # the default backbone: Lite0, ImageNet's 1000 classes
    at.session_state["ds_source"] = "zip"
    at.session_state["ds_map"] = "PCA"
    at.session_state["ds_size"] = 96
    at.run()
    data = zips.build(zips.classes(("goldfish", "tabby"), per_class=4))
    at.file_uploader(key="ds_zip").set_value(("set.zip", data, "application/zip")).run()
    settle(at)
    _ok(at)
    assert "Zero-shot" in _texts(at)
    heatmap = next(c for c in _charts(at).values() if c["data"][0].get("type") == "heatmap")
    counts = _array(heatmap["data"][0]["z"])
    true = int(np.argmax(counts.sum(axis=1) > 0))
    predicted = int(np.argmax(counts[true]))
    at.session_state["ds_confusion"] = {"selection": {"points": [{"customdata": [true, predicted]}],
                                                      "point_indices": [0], "box": [], "lasso": []}}
    at.toggle(key="ds_average").set_value(True)
    at.run()
    _ok(at)
    names = ("goldfish", "tabby")
    assert f"True {names[true]}, predicted {names[predicted]}" in _texts(at)
    captions = _captions(at)
    guess = f"Grad-CAM for ImageNet '{names[predicted]}' (predicted: {names[predicted]})"
    assert _has(captions, guess), captions
    if true != predicted:
        assert _has(captions, f"Grad-CAM for ImageNet '{names[true]}' (true: {names[true]})"), captions
    assert not any("probe class" in c for c in captions)
    averages = [c for c in captions if "images): " in c]
    assert averages == ["goldfish (4 images): ImageNet 'goldfish'", "tabby (4 images): ImageNet 'tabby'"], averages


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
    settle(at)
    _ok(at)
    assert at.title[0].value == "Datasets"


def _digits(limit: int, **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_limit"] = limit
    for key, value in state.items():
        at.session_state[key] = value
    return at


def _is_tsne(job) -> bool:
    return isinstance(job, jobs.TsneJob)


def _watching_tsne(perplexity: int) -> tuple[AppTest, object]:
    """A session on 40 digits whose page watches a t-SNE job (the features first), and that job."""
    at = _digits(40, ds_perplexity=perplexity)
    at.run()
    settle(at, until=_is_tsne)
    return at, at.session_state["ds_job"]


@pytest.fixture
def held_tsne(monkeypatch):
    """core's t-SNE held after its first progress report until `release` is set (or Stop is pressed)."""
    release, calls, real = threading.Event(), [], embeddings.tsne

    def tsne(features, **kwargs):
        calls.append(kwargs)
        kwargs["on_progress"](0.4, "t-SNE iteration 300 of 750")
        deadline = time.monotonic() + 120
        while not release.is_set() and not kwargs["should_stop"]() and time.monotonic() < deadline:
            time.sleep(0.02)
        return real(features, **kwargs)

    monkeypatch.setattr(embeddings, "tsne", tsne)
    yield release, calls
    release.set()


def test_tsne_runs_in_the_background_and_a_rerun_reattaches_to_it(held_tsne):
    release, calls = held_tsne
    at, job = _watching_tsne(17)
    _ok(at)
    assert _is_tsne(job) and not job.done
    deadline = time.monotonic() + 60
    while job.progress < 0.4 and time.monotonic() < deadline:  # core's first report, from the job's thread
        time.sleep(0.02)
    at.run()
    # the page is never empty: the PCA map, the note with the progress, and everything below the map
    assert "t-SNE running, 40%" in _progress_texts(at), _progress_texts(at)
    assert "PCA map" in _texts(at) and "The PCA map is shown until t-SNE is done" in _texts(at)
    charts = _charts(at)
    assert "ds_scatter" in charts and any(c["data"][0].get("type") == "heatmap" for c in charts.values())
    assert at.button(key="ds_stop_tsne")
    # a rerun after another widget's click, and a second session with the same settings: the same job
    at.radio(key="ds_colour").set_value("predicted label").run()
    _ok(at)
    assert at.session_state["ds_job"] is job
    other, theirs = _watching_tsne(17)
    assert theirs is job and len(calls) == 1
    release.set()
    settle(at)
    _ok(at)
    assert job.done and job.error is None and len(calls) == 1
    assert "t-SNE map" in _texts(at) and "ds_job" not in at.session_state
    _, features_key, _, perplexity, iterations, seed = job.key
    assert jobs.dataset_tsne_ready(features_key, perplexity, iterations, seed) is job.result  # in the cache
    settle(other)
    assert "t-SNE map" in _texts(other) and len(calls) == 1


def test_stop_ends_tsne_keeps_the_pca_map_and_it_can_run_again(held_tsne):
    release, calls = held_tsne
    at, job = _watching_tsne(18)
    at.button(key="ds_stop_tsne").click().run()
    settle(at)
    _ok(at)
    assert job.done and type(job.error).__name__ == "Cancelled"
    assert any("t-SNE was stopped" in i.value for i in at.info)
    assert "ds_scatter" in _charts(at) and "PCA map" in _texts(at)
    at.button(key="ds_tsne_again").click().run()
    settle(at, until=_is_tsne)
    again = at.session_state["ds_job"]
    assert _is_tsne(again) and again is not job and len(calls) == 2
    release.set()
    settle(at)
    _ok(at)
    assert "t-SNE map" in _texts(at)


def test_extraction_waits_in_the_queue_while_the_slots_are_full(gate):
    holder = gate.enter("someone else's Score-CAM")
    try:
        first = _digits(36, ds_map="PCA", ds_batch=8)
        first.run()
        _ok(first)
        job = first.session_state["ds_job"]
        assert isinstance(job, jobs.FeaturesJob) and job.state == "queued" and job.ahead == 0
        assert any("Queued: 0 ahead of you" in i.value for i in first.info), [i.value for i in first.info]
        assert not first.get("plotly_chart") or "ds_scatter" not in _charts(first)
        second = _digits(36, ds_map="PCA", ds_batch=16)  # other settings: another job, behind the first
        second.run()
        queued = second.session_state["ds_job"]
        assert queued is not job and queued.ahead == 1
        assert any("Queued: 1 ahead of you" in i.value for i in second.info)
        second.button(key="ds_stop_features").click().run()  # Stop while queued: it never runs
        settle(second)
        _ok(second)
        assert queued.done and type(queued.error).__name__ == "Cancelled" and not queued.ran
        assert any("Feature extraction was stopped" in i.value for i in second.info)
        assert job.state == "queued" and job.ahead == 0 and not job.ran
    finally:
        holder.release()
    settle(first)
    _ok(first)
    assert job.ran and job.error is None and "ds_scatter" in _charts(first)


def test_a_tsne_nobody_waits_for_any_more_is_stopped(held_tsne):
    release, calls = held_tsne
    at, abandoned = _watching_tsne(21)
    at.slider(key="ds_perplexity").set_value(22).run()  # new settings: a new job; nobody else waits for the old
    _ok(at)
    watched = at.session_state["ds_job"]
    assert _is_tsne(watched) and watched is not abandoned
    assert abandoned.wait(60) and type(abandoned.error).__name__ == "Cancelled"
    # another session waiting for the same job keeps it alive when this one moves on
    other, theirs = _watching_tsne(22)
    assert theirs is watched
    at.radio(key="ds_map").set_value("PCA").run()
    _ok(at)
    assert "ds_job" not in at.session_state and not watched.wait(0.5) and not watched.stop.is_set()
    release.set()
    settle(other)
    _ok(other)
    assert watched.error is None and "t-SNE map" in _texts(other)
    at.radio(key="ds_map").set_value("t-SNE").run()  # perplexity 22: from the cache now
    assert "t-SNE map" in _texts(at) and "ds_job" not in at.session_state
    at.slider(key="ds_perplexity").set_value(21).run()
    settle(at)
    _ok(at)
    assert "t-SNE map" in _texts(at)  # the stopped job was forgotten: back at 21, t-SNE ran again
    assert len(calls) == 3


def _has(captions: list[str], start: str) -> bool:
    """A caption that starts with `start` (an all-zero map adds a note after it)."""
    return any(c.startswith(start) for c in captions)
