"""A class called `<img src=x onerror=alert(1)>` goes through a zip, the Datasets page, a training run, an
export and an import onto the Explain page; a model head with that label goes onto Concepts; the report
carries it too. Wherever a page renders HTML (markdown with HTML allowed) the name arrives escaped, and the
plain-text elements (tables, captions, select boxes) show it as the text it is.
"""

import dataclasses
import html
import time
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import checkpoints, report
from dashboard import cache
from tests import zips
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
HOSTILE = "<img src=x onerror=alert(1)>"
ZIP = zips.build(zips.classes((HOSTILE, "cats"), per_class=16))

pytestmark = pytest.mark.timeout(400)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _html_is_escaped(at: AppTest) -> list[str]:
    """Every markdown element that allows HTML: the raw name never in it. Returns those that hold it escaped."""
    allowed = [m.value for m in at.markdown if m.proto.allow_html]
    assert not [v for v in allowed if HOSTILE in v], "a user-derived name reached HTML unescaped"
    return [v for v in allowed if html.escape(HOSTILE) in v]


def _all_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    parts += [s.value for s in at.success] + [c for image in at.get("image") for c in image.captions]
    for frame in at.dataframe:
        parts += [str(v) for v in frame.value.astype(str).to_numpy().ravel()]
    return " | ".join(parts)


def _wait(at: AppTest, key: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while key in at.session_state:
        assert time.monotonic() < deadline, f"{key} did not finish"
        at.session_state[key].wait(timeout=1)
        at.run()


def test_a_hostile_class_name_through_zip_training_export_import_and_explain():
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.run()

    at.switch_page("app_pages/datasets.py")
    at.session_state["ds_source"] = "zip"
    at.session_state["ds_limit"] = 32
    at.run()
    at.file_uploader(key="ds_zip").set_value([("pets.zip", ZIP, "application/zip")]).run()
    _wait(at, "ds_job")
    _ok(at)
    _html_is_escaped(at)
    assert HOSTILE in _all_text(at)  # shown as text (the per-class table), not dropped

    at.switch_page("app_pages/training.py")
    at.session_state["tr_source"] = "zip"
    at.session_state["tr_limit"] = 32
    at.session_state["tr_epochs"] = 1
    at.session_state[f"tr_size_{TINY}"] = 64
    at.run()
    at.file_uploader(key="tr_zip").set_value([("pets.zip", ZIP, "application/zip")]).run()
    _ok(at)
    at.button(key="tr_start").click().run()
    _wait(at, "training_job")
    _ok(at)
    _html_is_escaped(at)
    run = at.session_state["training_runs"][0].result
    assert HOSTILE in run.classes and HOSTILE in _all_text(at)

    document, weights = checkpoints.serialize(run.model)  # the export the page offers for download
    at.file_uploader(key="tr_import").set_value(
        [("model.json", document, "application/json"), ("model.safetensors", weights, "application/octet-stream")]
    ).run()
    _ok(at)
    assert any(HOSTILE in s.value for s in at.success)  # st.success renders markdown without HTML
    _html_is_escaped(at)
    at.button(key="tr_use_imported").click().run()
    assert HOSTILE in at.session_state["custom_model"].categories

    at.switch_page("app_pages/explain.py").run()
    at.sidebar.checkbox(key="use_custom").check().run()
    _ok(at)
    _html_is_escaped(at)
    assert HOSTILE in " ".join(at.selectbox(key="custom_target").options)
    assert HOSTILE in _all_text(at)


def test_a_hostile_label_on_the_concepts_page_is_escaped(monkeypatch):
    real = cache.concepts_of

    def hostile(*args, **kwargs):
        result = real(*args, **kwargs)
        concepts = [dataclasses.replace(c, labels=((0, HOSTILE, 0.5),)) for c in result.concepts]
        return dataclasses.replace(result, concepts=concepts, named=True)

    monkeypatch.setattr(cache, "concepts_of", hostile)
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.run()
    at.switch_page("app_pages/concepts.py").run()
    _ok(at)
    assert _html_is_escaped(at), "the concept list should show the escaped label"


def test_the_report_escapes_a_hostile_label_and_file_name(tiny, chelsea):
    from core import cams, predictions

    names = tuple(HOSTILE if i == 0 else f"class {i}" for i in range(len(tiny.categories)))
    custom = dataclasses.replace(tiny, spec=dataclasses.replace(tiny.spec, categories=names))
    preds = predictions.predict(custom, chelsea, top_k=3)
    (result,) = cams.compute(custom, chelsea, methods=["gradcam"], target=0)
    section = report.ModelSection(custom.name, custom.spec.title, False, "cpu", preds, [result], None)
    document = report.render(chelsea, [section], source=f"upload: {HOSTILE}.jpg")
    assert HOSTILE not in document and html.escape(HOSTILE) in document
