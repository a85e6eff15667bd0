"""Streamlit AppTest: the "Where the model looks" tab with target "both": offered for the Shapes CNN on the shapes
set (its classes are the set's), not for a model of other classes; the review gallery shows a wrong prediction's
two stored maps side by side, "looked for" the prediction and the true class, and a clicked point both too."""

from pathlib import Path

import numpy as np
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from dashboard import audit_view, dataset_cache
from tests.conftest import TINY
from tests.test_dashboard_audit import _captions, _ok, _wait

config.set_option("client.showErrorDetails", "full")
PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "datasets.py")


def _stored(at: AppTest):
    """The session's last finished audit, from the page's store (what the tab drew)."""
    name, device, pretrained, content_hash, *rest = at.session_state[audit_view.LAST]
    return dataset_cache.dataset_results().peek(("audit", content_hash, name, device, pretrained, *rest))


@pytest.fixture(scope="module")
def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = "shapes_cnn"
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 48
    at.run()
    return _wait(at, "first")


def test_both_shows_a_wrong_predictions_two_maps_side_by_side(page):
    at = page
    _ok(at)
    target = at.selectbox(key="audit_target")
    assert target.options == [audit_view.TARGETS[t] for t in ("predicted", "true", "both")]
    target.set_value("both").run()
    at.button(key="audit_start_first").click().run()
    _wait(at, "first")
    _ok(at)
    result = _stored(at)
    assert result.target == "both" and result.maps_true is not None
    wrong = np.flatnonzero(result.predictions != result.labels)
    assert len(wrong), "the Shapes CNN gets none of these 48 wrong: nothing to show"
    at.selectbox(key="audit_review").set_value("Wrong, with the most concentrated heat").run()
    _ok(at)
    captions = _captions(at)
    shown = result.ranked("heat_half_area", descending=False, correct=False)[:audit_view.GALLERY]
    for index in shown:
        label = result.classes[result.labels[index]]
        guess = result.categories[result.predictions[index]]
        left = [c for c in captions if c.startswith(f"looked for {guess} · {label} → {guess} · heat half area")]
        right = [c for c in captions if c.startswith(f"looked for {label} · heat half area ")]
        assert left and right, (label, guess, captions)
    assert sum(c.startswith("looked for") for c in captions) == 2 * len(shown)
    # a correct image in the same audit: one map, as before
    at.selectbox(key="audit_review").set_value("Most concentrated heat").run()
    _ok(at)
    singles = [c for c in _captions(at) if "heat half area" in c and not c.startswith("looked for")]
    top = result.ranked("heat_half_area", descending=False)[:audit_view.GALLERY]
    assert len(singles) == int((result.predictions[top] == result.labels[top]).sum())


def test_a_clicked_wrong_point_shows_both_stored_maps(page):
    at = page
    result = _stored(at)
    row = int(np.flatnonzero(result.predictions != result.labels)[0])
    at.session_state["ds_scatter"] = {"selection": {"points": [{"customdata": [row]}], "point_indices": [0],
                                                    "box": [], "lasso": []}}
    at.run()
    _ok(at)
    stored = [c for c in _captions(at) if c.endswith("(from the audit)")]
    pair = [f"Stored Grad-CAM for '{result.categories[result.predictions[row]]}' (from the audit)",
            f"Stored Grad-CAM for '{result.classes[result.labels[row]]}' (from the audit)"]
    # the selected image first (the confusion matrix's open cell shows its images' maps after it)
    assert stored[:2] == pair, stored


def test_a_model_of_other_classes_is_not_offered_both():
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 8
    at.run()
    _wait(at, "first")
    _ok(at)
    assert at.selectbox(key="audit_target").options == [audit_view.TARGETS["predicted"]]
