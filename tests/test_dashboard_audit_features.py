"""Streamlit AppTest: one pass gives both. An audit of the Datasets page's settings also gives the features tab its
features (t-SNE, confusion matrix): a features extraction waiting or running beside it is left, not repeated."""

import threading
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from core import audit, embeddings
from core.errors import Cancelled
from dashboard import audit_view, cache, dataset_cache, jobs
from tests.conftest import TINY

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "datasets.py")


def _wait(at: AppTest, timeout: float = 240) -> AppTest:
    deadline = time.monotonic() + timeout
    for key in (audit_view.WATCHED["first"], "ds_job", "ds_job"):  # the audit, then the t-SNE of its features
        while key in at.session_state and not at.session_state[key].done:
            assert time.monotonic() < deadline, f"{key} did not finish"
            at.session_state[key].wait(timeout=1)
            at.run()
        at.run()
    return at


def test_after_an_audit_the_features_tab_needs_no_second_extraction(monkeypatch):
    extractions: list[threading.Event] = []
    explained: list[int] = []
    real_extract, real_explain = embeddings.extract, audit.explain_dataset

    def extraction_that_waits(*args, should_stop=None, **kwargs):  # a long extraction: runs until it is stopped
        extractions.append(threading.Event())
        while not should_stop():
            time.sleep(0.01)
        extractions[-1].set()
        raise Cancelled("Feature extraction was stopped.")

    def counted_explain(*args, **kwargs):
        explained.append(1)
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(embeddings, "extract", extraction_that_waits)
    monkeypatch.setattr(audit, "explain_dataset", counted_explain)
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 20  # a set no other test extracts
    at.run()
    assert len(extractions) == 1 and "ds_job" in at.session_state  # the page extracts unasked, as before
    at.button(key="audit_start_first").click().run()
    assert extractions[0].wait(30)  # the audit supersedes it: this session's extraction is stopped
    _wait(at)
    assert not at.exception, at.exception
    assert len(extractions) == 1 and len(explained) == 1  # one pass for both tabs
    headers = [h.value for h in at.header]
    assert "Feature map" in headers and "Confusion matrix and metrics" in headers
    assert any("-d features of 20 images" in c.value and "fp32" in c.value for c in at.caption)
    assert any(c.value.startswith("t-SNE map.") for c in at.caption)  # the t-SNE of the audit's features

    first = at.session_state[audit_view.LAST]
    data = dataset_cache.dataset("shapes", "shapes", 0, 20)  # the page's set
    stored = jobs.dataset_features_ready(first[0], first[1], first[2], data, first[6], first[7], first[8])
    result = jobs.audit_ready(first[0], first[1], first[2], data, first[4], first[5], first[6], first[7], first[8])
    assert stored is not None and result is not None and stored.features is result.features  # shared, not copied
    model = cache.model(*first[:3])
    extracted = real_extract(model, data, batch_size=first[7], precision="fp32", size=first[8])
    np.testing.assert_allclose(stored.features, extracted.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stored.logits, extracted.logits, rtol=1e-4, atol=1e-5)  # zero-shot needs them
