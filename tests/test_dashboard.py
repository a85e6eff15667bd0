"""Streamlit AppTest: the Explain page runs on the default image and after every control changes."""

import time
import types
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import cams, registry

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")


def _caption_of_overlay(at: AppTest) -> str:
    captions = [c for img in at.get("image") for c in img.captions]
    overlay = [c for c in captions if "at layer" in c]
    assert overlay, f"no overlay image; captions: {captions}"
    return overlay[0]


@pytest.fixture(scope="module")
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


def test_first_start_shows_a_real_prediction_and_heatmap(app):
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    table = app.dataframe[0].value
    assert table["label"].iloc[0] in {"Egyptian cat", "tabby", "tiger cat"}
    # the top-5 as built-in bars: a first visit does not wait for Plotly's script before the heatmap shows
    bars = [p.proto.text for p in app.get("progress")]
    assert len(bars) == 5 and bars[0].startswith(table["label"].iloc[0]) and not app.get("plotly_chart")
    assert "Grad-CAM" in _caption_of_overlay(app) and "layer bn2" in _caption_of_overlay(app)
    assert app.sidebar.selectbox(key="model_name").value == "efficientnet_lite0"
    assert any("CPU" in c.value or "GPU" in c.value for c in app.sidebar.caption)


def test_changing_method_class_and_layer(app):
    app.selectbox(key="method").set_value("layercam").run()
    assert not app.exception
    assert _caption_of_overlay(app).startswith("LayerCAM")
    app.selectbox(key="target").set_value(281).run()
    assert not app.exception and "(281)" in _caption_of_overlay(app) and "tabby" in _caption_of_overlay(app)
    app.selectbox(key="layer_efficientnet_lite0").set_value("blocks.5").run()
    assert not app.exception and "layer blocks.5" in _caption_of_overlay(app)
    app.slider(key="opacity").set_value(0.8).run()
    app.selectbox(key="colormap").set_value("viridis").run()
    assert not app.exception
    assert app.get("download_button"), "no download button for the overlay"


def test_changing_backbone_and_sample(app):
    app.sidebar.selectbox(key="model_name").set_value("efficientnet_lite1").run()
    assert not app.exception
    assert app.selectbox(key="layer_efficientnet_lite1").value == "bn2"
    app.selectbox(key="image_sample").set_value("coffee").run()
    assert not app.exception
    assert app.dataframe[0].value["label"].iloc[0] == "espresso"


def test_random_weights_are_labelled():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.sidebar.selectbox(key="model_name").set_value("resnet18").run()
    at.sidebar.radio(key="model_weights").set_value("random").run()
    assert not at.exception
    assert any("random weights" in w.value for w in at.warning)


def test_unavailable_weights_give_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.sidebar.selectbox(key="model_name").set_value("alexnet").run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "alexnet-owt-7be5be79.pth" in messages and "random weights" in messages


def test_upload_and_camera_paths():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.radio(key="image_source").set_value("Upload").run()
    assert any("Upload an image" in i.value for i in at.info)
    at.file_uploader(key="image_upload").set_value(("coffee.png", _png("coffee"), "image/png")).run()
    assert not at.exception
    assert at.dataframe[0].value["label"].iloc[0] == "espresso"
    assert "PNG · 600×400" in " ".join(c.value for c in at.caption)
    at.file_uploader(key="image_upload").set_value(("fake.jpg", b"this is not an image", "image/jpeg")).run()
    assert not at.exception
    assert any("not an image" in e.value for e in at.error), [e.value for e in at.error]
    at.radio(key="image_source").set_value("Camera").run()
    at.camera_input(key="image_camera").set_value(("shot.jpg", (ROOT / "assets/samples/chelsea.jpg").read_bytes(), "image/jpeg")).run()
    assert not at.exception
    assert at.dataframe[0].value["class"].iloc[0] in range(281, 286)
    assert "camera" in " ".join(c.value for c in at.caption)


def _png(name: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(ROOT / "assets" / "samples" / f"{name}.jpg").save(buffer, format="PNG")
    return buffer.getvalue()


def _table(at: AppTest, column: str):
    (table,) = [d.value for d in at.dataframe if column in d.value.columns]
    return table


def test_methods_page_grid_scores_and_sanity_check():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/methods.py").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    # by default every method that applies except the one-forward-per-channel ones: 13 on the CNN
    default = cams.applicable(types.SimpleNamespace(spec=registry.get(registry.DEFAULT)))
    assert len(default) == 13 and at.multiselect(key="methods_chosen").value == default
    assert len(captions) == len(default)
    assert any(c.startswith("Grad-CAM++") for c in captions)
    at.multiselect(key="methods_chosen").set_value(["gradcam", "eigencam"]).run()
    at.toggle(key="methods_score").set_value(True).run()
    assert not at.exception
    assert "methods_watched" in at.session_state  # seconds of work: in the background, with progress and Stop
    assert any(b.proto.label == "Stop" for b in at.button)
    deadline = time.monotonic() + 300
    while "methods_watched" in at.session_state:  # as the page's polling fragment does in a browser
        assert time.monotonic() < deadline, "scoring did not finish"
        at.session_state["methods_watched"].wait(timeout=1)
        at.run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert len(captions) == 2 and all("faithfulness" in c for c in captions)
    table = _table(at, "faithfulness ↑")
    assert len(table) == 5 and {"Random map (baseline)", "Sobel edges (baseline)"} <= set(table["map"])
    assert any(m.startswith("Inverted best map (baseline): 1 − ") for m in table["map"])
    assert {"faithfulness ↑", "most relevant removed ↓", "confidence change ↑ (image × map)"} <= set(table.columns)
    assert table["faithfulness ↑"].is_monotonic_decreasing
    fractions = _table(at, "most 20% ↓")
    assert {"most 20% ↓", "most 80% ↓", "least 20% ↑", "least 80% ↑"} <= set(fractions.columns)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "20, 40, 60 and 80%" in text and "noisy linear imputation" in text and "Rong et al. 2022" in text
    at.toggle(key="methods_sanity").set_value(True).run()
    assert not at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert sum("random weights" in c for c in captions) == 2


def test_compare_page_three_offline_backbones():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:3] == ["EfficientNet-Lite0", "EfficientNet-Lite1", "EfficientNet-Lite2"]
    assert len(at.get("image")) == 6 and len(at.metric) == 9
    at.selectbox(key="compare_common").set_value(281).run()
    assert not at.exception
    assert any("tabby" in c for img in at.get("image") for c in img.captions)
    at.multiselect(key="compare_names").set_value(["efficientnet_lite0"]).run()
    assert any("at least two" in i.value for i in at.info)


def test_batch_page_samples_and_uploads_with_one_bad_file():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/batch.py").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert len(captions) == 4 and any("chelsea.jpg: Egyptian cat" in c for c in captions)
    at.file_uploader(key="batch_files").set_value([
        ("coffee.png", _png("coffee"), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg"),
    ]).run()
    at.toggle(key="batch_samples").set_value(False).run()
    assert not at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert captions == [c for c in captions if c.startswith("coffee.png: espresso")] and len(captions) == 1
    assert any("broken.jpg" in e.value for e in at.error)


def test_explain_smoothing_and_guided_gradcam():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.toggle(key="eigen_smooth").set_value(True).run()
    at.toggle(key="guided").set_value(True).run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert "Guided Backpropagation" in captions and any(c.startswith("Guided Grad-CAM for") for c in captions)
    at.toggle(key="aug_smooth").set_value(True).run()
    assert not at.exception


def test_concepts_page():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/concepts.py").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert sum(c.startswith("Concept ") for c in captions) == 5
    at.slider(key="concepts_k").set_value(3).run()
    assert not at.exception
    assert sum(c.startswith("Concept ") for img in at.get("image") for c in img.captions) == 3
    assert sum("of the image" in m.value for m in at.markdown) == 3


def test_reports_download_from_explain_methods_and_compare():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    buttons = [b for b in at.get("download_button") if "report" in b.proto.label.lower()]
    assert buttons, "no report button on Explain"
    for page in ("app_pages/methods.py", "app_pages/compare.py"):
        at.switch_page(page).run()
        assert not at.exception, at.exception
        assert any("report" in b.proto.label.lower() for b in at.get("download_button")), page


def test_depth_page_with_cascading_randomisation_and_random_class():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("app_pages/depth.py").run()
    assert not at.exception, at.exception
    stage_captions = [c for img in at.get("image") for c in img.captions if c.startswith("blocks.") or c == "bn2"]
    assert len(stage_captions) == 8
    at.select_slider(key="depth_stage_efficientnet_lite0").set_value("blocks.3").run()
    assert not at.exception and any("at blocks.3" in c for img in at.get("image") for c in img.captions)
    at.slider(key="depth_steps").set_value(2).run()
    assert not at.exception
    assert any("2 layer(s) randomised" in s.value for s in at.subheader)
    at.toggle(key="depth_random_target").set_value(True).run()
    assert not at.exception
    assert not any("Egyptian cat" in s.value for s in at.subheader)


def test_presenter_mode_walks_every_step():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("app_pages/present.py").run()
    assert not at.exception, at.exception
    seen = []
    for step in range(6):
        seen.append(next(m.value for m in at.markdown if " / 6 · " in m.value))
        assert at.get("image"), seen[-1]
        if step < 5:
            at.button(key="present_next").click().run()
            assert not at.exception, (seen[-1], at.exception)
    assert len(set(seen)) == 6 and "6 / 6" in seen[-1]
    assert at.button(key="present_next").disabled
    at.button(key="present_back").click().run()
    assert any("5 / 6" in m.value for m in at.markdown)


def test_slow_method_waits_for_a_click_and_says_how_long():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.selectbox(key="method").set_value("scorecam").run()
    assert not at.exception
    assert any("about" in w.value and " s here" in w.value for w in at.warning)
    assert not [c for img in at.get("image") for c in img.captions if "at layer" in c]  # nothing ran yet


def test_slow_progress_shows_the_time_left_and_a_cancel_button():
    def script():
        from dashboard import widgets

        report, clear = widgets.slow_progress("Computing Score-CAM", key="cancel")
        report(0.5, "Score-CAM: forward pass 20 of 40")

    at = AppTest.from_function(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="cancel").label == "Cancel"
    (bar,) = at.get("progress")
    assert bar.proto.value == 50
    assert bar.proto.text.startswith("Score-CAM: forward pass 20 of 40 (") and " s left)" in bar.proto.text


def test_batch_page_offers_the_attention_methods_on_a_transformer_and_drops_them_on_a_cnn(monkeypatch):
    asked = []
    real = cams.compute

    def spy(model, image, **kwargs):
        asked.extend((model.name, m) for m in kwargs.get("methods", ()))
        return real(model, image, **kwargs)

    monkeypatch.setattr(cams, "compute", spy)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/batch.py").run()
    assert "Attention rollout" not in at.selectbox(key="batch_method").options
    at.selectbox(key="model_name").set_value("shapes_vit").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="batch_method").options[-3:] == [cams.METHODS[m].title for m in cams.ATTENTION]
    at.selectbox(key="batch_method").set_value("grad_rollout").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert len(captions) == 4 and all(c.split(": ")[1].split(" (")[0] in {"circle", "square", "triangle", "star"}
                                      for c in captions)
    assert asked.count(("shapes_vit", "grad_rollout")) == 4  # each sample's map by the chosen attention method
    at.selectbox(key="batch_method").set_value("rollout").run()
    assert any("class-agnostic" in c.value for c in at.caption)
    at.selectbox(key="model_name").set_value("efficientnet_lite0").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="batch_method").value == "gradcam"
