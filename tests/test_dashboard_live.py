"""Streamlit AppTest: the Live camera page, through the real entry point.

AppTest runs no JavaScript, so the browser's side of the component is played by writing its value (a frame,
or a camera error) into session state, as the component's setComponentValue would.
"""

import base64
import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import cams, live
from tests.conftest import sample, sample_bytes

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _frame_b64() -> str:
    buffer = io.BytesIO()
    sample("chelsea").resize((299, 224)).save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("app_pages/live.py").run()
    _ok(at)
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_page_renders_its_controls_and_the_component(app):
    assert app.title[0].value == "Live camera"
    cnn_methods = [m for m in live.METHODS if not cams.METHODS[m].attention]  # the default backbone is a CNN
    assert app.selectbox(key="live_method").options == [cams.METHODS[m].title for m in cnn_methods]
    assert app.selectbox(key="live_method").value == "gradcam"
    assert app.radio(key="live_mode").value == "Live video"
    assert "https://" in app.caption[0].value and "localhost" in app.caption[0].value
    assert set(_metrics(app)) == {"Frames per second (browser)", "Server time per frame", "Frames answered"}
    (component,) = app.get("component_instance")
    assert component.proto.component_name.endswith("live_camera")


def test_a_frame_from_the_browser_is_answered_once(app):
    app.session_state["live_camera"] = {"session": "abc", "frame": 1, "image": _frame_b64(), "fps": 7.5}
    app.run()
    _ok(app)
    answer = app.session_state["live_answer"]
    assert (answer["session"], answer["frame"]) == ("abc", 1)
    assert answer["overlay"].startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(answer["overlay"].split(",", 1)[1]))).size == (299, 224)
    assert len(answer["top"]) == 3 and answer["top"][0]["label"] in CATS
    assert answer["server_ms"] > 0 and set(answer["stages"]) == {"decode", "cam", "overlay"}
    metrics = _metrics(app)
    assert metrics["Frames per second (browser)"] == "7.5" and metrics["Frames answered"] == "1"
    assert metrics["Server time per frame"].endswith(" ms")
    assert any("one forward pass (top-3) + backward" in c.value for c in app.caption)

    app.slider(key="live_opacity").set_value(0.8).run()  # a rerun for another reason: the frame is not analysed again
    _ok(app)
    assert app.session_state["live_answer"] == answer

    app.session_state["live_camera"] = {"session": "abc", "frame": 2, "image": _frame_b64(), "fps": 8.0}
    app.run()
    assert app.session_state["live_answer"]["frame"] == 2 and _metrics(app)["Frames answered"] == "2"


def test_stop_in_the_browser_replaces_the_last_run_figures(app):
    app.session_state["live_camera"] = {"session": "abc", "frame": 1, "image": _frame_b64(), "fps": 7.5}
    app.run()
    assert _metrics(app)["Frames per second (browser)"] == "7.5"
    app.session_state["live_camera"] = {"session": "abc", "stopped": True, "frames": 1}  # the Stop button's value
    app.run()
    _ok(app)
    assert not _metrics(app), "a stopped camera shows no live figures"
    assert any("Camera stopped after 1 frame." in c.value for c in app.caption)


def test_a_hostile_frame_gets_an_error_answer_not_an_exception(app):
    app.session_state["live_camera"] = {"session": "x", "frame": 3, "image": "<script>alert(1)</script>", "fps": 0}
    app.run()
    assert not app.exception, app.exception
    answer = app.session_state["live_answer"]
    assert answer["frame"] == 3 and "base64" in answer["error"] and "overlay" not in answer
    app.session_state["live_camera"] = {"session": ["x"] * 99, "frame": [4], "image": 5, "fps": "fast"}
    app.run()
    assert not app.exception, app.exception
    answer = app.session_state["live_answer"]
    assert answer["frame"] is None and answer["fps"] is None and "got int" in answer["error"]


def test_camera_denied_shows_the_still_photo_fallback(app):
    app.session_state["live_camera"] = {"error": "NotAllowedError", "message": "The camera was blocked."}
    app.run()
    _ok(app)
    assert any("Live video is not available (NotAllowedError)" in w.value for w in app.warning)
    shot = app.camera_input(key="live_still_fallback")
    shot.set_value(("shot.jpg", sample_bytes("chelsea"), "image/jpeg")).run()
    _ok(app)
    labels = " ".join(m.value for m in app.markdown)
    assert any(cat in labels for cat in CATS), labels
    assert any("Grad-CAM for" in c for image in app.get("image") for c in image.captions)


def test_still_photo_mode_and_a_slower_method_choice(app):
    app.radio(key="live_mode").set_value("Still photo").run()
    _ok(app)
    app.selectbox(key="live_method").set_value("layercam").run()
    app.camera_input(key="live_still").set_value(("shot.jpg", sample_bytes("chelsea"), "image/jpeg")).run()
    _ok(app)
    assert any(c.startswith("LayerCAM for") for image in app.get("image") for c in image.captions)
    assert not app.metric  # no live metrics in still mode


def test_a_broken_still_photo_gives_a_message(app):
    app.radio(key="live_mode").set_value("Still photo").run()
    app.camera_input(key="live_still").set_value(("shot.jpg", b"not a jpeg at all", "image/jpeg")).run()
    assert not app.exception, app.exception
    assert any("not an image" in e.value for e in app.error)


def test_rollout_on_the_shapes_vit_is_offered_answered_and_said_to_be_class_agnostic(app):
    app.selectbox(key="model_name").set_value("shapes_vit").run()
    _ok(app)
    assert app.selectbox(key="live_method").options[-3:] == [cams.METHODS[m].title for m in cams.ATTENTION]
    app.selectbox(key="live_method").set_value("rollout").run()
    _ok(app)
    assert any("class-agnostic" in c.value for c in app.caption)
    app.session_state["live_camera"] = {"session": "vit", "frame": 1, "image": _frame_b64(), "fps": 5.0}
    app.run()
    _ok(app)
    answer = app.session_state["live_answer"]
    assert answer["overlay"].startswith("data:image/jpeg;base64,") and "error" not in answer
    assert answer["top"][0]["label"] in {"circle", "square", "triangle", "star"}
    assert answer["caption"].startswith("Attention rollout (class-agnostic)")
    app.selectbox(key="model_name").set_value("efficientnet_lite0").run()  # a CNN: rollout is not offered any more
    _ok(app)
    assert app.selectbox(key="live_method").value == "gradcam"
    assert "Attention rollout" not in app.selectbox(key="live_method").options
