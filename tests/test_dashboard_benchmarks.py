"""Streamlit AppTest: the Benchmarks page runs two small models at batch 1, caches, stops, and draws its charts.

Goes through the real entry point once dashboard/streamlit_app.py registers the page; until then,
through a small entry script that routes to the page alone.
"""

import json
import threading
import time
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import benchmarks
from dashboard import jobs
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "streamlit_app.py"


def _open(tmp_path: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.switch_page("app_pages/benchmarks.py")
    at.run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _finish(at: AppTest, timeout: float = 300) -> None:
    """Rerun the page until the background benchmark has finished and its result is shown."""
    deadline = time.monotonic() + timeout
    while "benchmark_job" in at.session_state:
        assert time.monotonic() < deadline, "the benchmark did not finish"
        at.session_state["benchmark_job"].wait(timeout=1)
        at.run()


def _settings(at: AppTest, names: list[str], batches: list[int], repeats: int) -> None:
    at.multiselect(key="bench_names").set_value(names)
    at.multiselect(key="bench_batches").set_value(batches)
    at.selectbox(key="bench_repeats").set_value(repeats)
    at.number_input(key="bench_warmup").set_value(1)
    at.run()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> AppTest:
    return _open(tmp_path_factory.mktemp("bench_entry"))


def test_page_opens_with_settings_and_no_run(page):
    _ok(page)
    assert page.title[0].value == "Benchmarks"
    assert page.selectbox(key="bench_precision").options == ["fp32"]  # bf16/fp16 only on GPU
    assert any("Run benchmark" in i.value for i in page.info)


def test_two_small_models_at_batch_1(page):
    at = page
    _settings(at, ["efficientnet_lite0", "mobilenet_v3_large"], [1], 3)
    at.button(key="bench_start").click().run()
    _ok(at)
    assert at.get("progress") or "benchmark_job" not in at.session_state  # progress while it runs
    _finish(at)
    _ok(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["EfficientNet-Lite0", "MobileNetV3-Large"]
    assert list(table["batch"]) == [1, 1] and (table["p50 ms/batch"] > 0).all()
    assert (table["p95 ms/batch"] >= table["p50 ms/batch"]).all()
    assert list(table["params (M)"].round(3)) == [4.652, 5.483]
    assert table["GMACs/image"].iloc[1] == pytest.approx(0.217, rel=0.05)
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]
    assert titles[0].startswith("Latency per batch") and titles[1].startswith("Accuracy vs latency")
    assert titles[2] == "Throughput vs batch size"
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download CSV", "Download JSON"]
    text = " ".join(m.value for m in at.markdown)
    assert "**Machine.** CPU:" in text and "torch " in text and "3 timed passes" in text


def test_the_same_settings_come_from_the_cache(page):
    at = page
    shown = at.session_state["benchmark_result"]
    at.button(key="bench_start").click().run()
    _ok(at)
    assert "benchmark_job" not in at.session_state  # nothing ran
    assert at.session_state["benchmark_result"] is shown
    assert jobs.benchmark_cached(shown.settings) is shown


def test_stop_keeps_finished_rows_and_caches_nothing(tmp_path, monkeypatch):
    first_row, real_run = threading.Event(), benchmarks.run

    def run_that_waits_after_one_row(names, **kwargs):
        def on_row(row, done, total):
            kwargs["on_row"](row, done, total)
            first_row.set()
            deadline = time.monotonic() + 60
            while not kwargs["should_stop"]() and time.monotonic() < deadline:  # until Stop is pressed
                time.sleep(0.02)

        return real_run(names, **{**kwargs, "on_row": on_row})

    monkeypatch.setattr(benchmarks, "run", run_that_waits_after_one_row)
    at = _open(tmp_path)
    _settings(at, [TINY], [1, 2, 4], 3)
    at.button(key="bench_start").click().run()
    assert first_row.wait(timeout=60)
    at.run()
    _ok(at)
    assert at.get("progress") and at.dataframe[0].value["batch"].tolist() == [1]  # the row so far, while running
    at.button(key="bench_stop").click().run()
    _finish(at)
    _ok(at)
    result = at.session_state["benchmark_result"]
    assert not result.complete and [r.batch for r in result.rows] == [1]
    assert any("Stopped after 1 of 3" in w.value for w in at.warning)
    assert jobs.benchmark_cached(result.settings) is None
    assert at.get("plotly_chart")  # what was measured is still drawn


def test_a_setting_core_refuses_is_shown_as_a_message(tmp_path):
    at = _open(tmp_path)
    _settings(at, ["vit_b_16"], [1], 3)
    at.selectbox(key="bench_size").set_value(160).run()
    at.button(key="bench_start").click().run()
    _finish(at)
    assert not at.exception, at.exception
    assert any("only accepts 224x224" in e.value for e in at.error)
