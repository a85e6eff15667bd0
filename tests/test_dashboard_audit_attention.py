"""Streamlit AppTest: on a transformer the Datasets page's "Where the model looks" tab offers the attention methods
(rollout, gradient-weighted rollout, LeGrad) beside the Grad-CAM family, and explains every image with one."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.test_dashboard_audit import _ok, _wait

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "datasets.py")


def test_a_transformer_is_audited_with_attention_rollout():
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["model_name"] = "shapes_vit"
    at.session_state["ds_source"] = "shapes"
    at.session_state["ds_limit"] = 24
    at.session_state["ds_localise"] = False
    at.run()
    _wait(at, "first")
    _ok(at)
    method = at.selectbox(key="audit_method")
    assert {"Grad-CAM", "Attention rollout", "Gradient-weighted attention rollout", "LeGrad"} <= set(method.options)
    assert "Score-CAM" not in method.options and "FullGrad" not in method.options  # slow, or a CNN's
    method.set_value("rollout").run()
    at.button(key="audit_start_first").click().run()
    _wait(at, "first")
    _ok(at)
    assert any("24 maps from Attention rollout at `every block`" in c.value for c in at.caption), \
        [c.value for c in at.caption if "maps from" in c.value]
    assert "Where it looks, class by class" in [s.value for s in at.subheader]
