"""Streamlit AppTest: presenter mode shows the photo and backbone chosen on Explain and has a way back; the
start-up warm-up leaves the first Explain visit nothing heavy to do; the navigation uses Material icons."""

import ast
import asyncio
import io
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit import config
from streamlit.material_icon_names import ALL_MATERIAL_ICONS
from streamlit.testing.v1 import AppTest

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
PRESENT = str(ROOT / "dashboard" / "app_pages" / "present.py")


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not at.warning or all("random weights" in w.value for w in at.warning), [w.value for w in at.warning]


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def _markdown(at: AppTest) -> str:
    return " | ".join(m.value for m in at.markdown)


def _png(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "assets" / "samples" / f"{name}.jpg").save(buffer, format="PNG")
    return buffer.getvalue()


def _next(at: AppTest) -> None:
    at.button(key="present_next").click().run()
    _ok(at)


def test_presenter_alone_offers_the_samples_with_the_default_photo_and_backbone():
    at = AppTest.from_file(PRESENT, default_timeout=300)
    at.run()
    _ok(at)
    photo = at.radio(key="present_photo_radio")
    assert photo.value == "chelsea" and "yours" not in photo.options
    assert any("Chelsea the cat" in c for c in _captions(at))
    _next(at)
    assert "EfficientNet-Lite0" in _markdown(at) and "trained on ImageNet" in _markdown(at)


def test_presenter_uses_the_sample_and_backbone_chosen_on_explain_and_exits_back_to_them():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.sidebar.selectbox(key="model_name").set_value("efficientnet_lite1").run()
    at.selectbox(key="image_sample").set_value("coffee").run()
    _ok(at)
    at.switch_page("app_pages/present.py").run()
    _ok(at)
    assert at.radio(key="present_photo_radio").value == "coffee"
    assert any("Coffee cup" in c for c in _captions(at))
    _next(at)
    assert "EfficientNet-Lite1" in _markdown(at)
    assert "espresso" in _markdown(at) or "cup" in _markdown(at)
    _next(at)  # the photo stays when the step's radio is no longer on the page
    assert any("Grad-CAM for" in c for c in _captions(at))
    assert at.button(key="present_back").disabled is False and at.button(key="present_next").disabled is False
    at.button(key="present_exit_button").click().run()
    _ok(at)
    assert at.title[0].value == "Explain a prediction"
    assert at.sidebar.selectbox(key="model_name").value == "efficientnet_lite1"
    assert at.radio(key="image_source").value == "Sample photos"
    assert at.selectbox(key="image_sample").value == "coffee"
    assert at.dataframe[0].value["label"].iloc[0] == "espresso"


def test_presenter_shows_an_upload_from_explain_and_hands_it_back():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(("student.png", _png("coffee"), "image/png")).run()
    _ok(at)
    at.switch_page("app_pages/present.py").run()
    _ok(at)
    photo = at.radio(key="present_photo_radio")
    assert photo.value == "yours" and "chelsea" in photo.options  # the samples stay one click away
    assert any(c == "your photo" for c in _captions(at))
    _next(at)
    assert "espresso" in _markdown(at)
    at.button(key="present_back").click().run()
    at.radio(key="present_photo_radio").set_value("rocket").run()  # a sample instead, then back to the photo
    _ok(at)
    assert any("Falcon 9" in c for c in _captions(at))
    at.radio(key="present_photo_radio").set_value("yours").run()
    at.button(key="present_exit_button").click().run()
    _ok(at)
    assert at.title[0].value == "Explain a prediction"
    assert at.radio(key="image_source").value == "Upload"
    assert any("Showing the photo from presenter mode (upload: student.png)" in c.value for c in at.caption)
    assert at.dataframe[0].value["label"].iloc[0] == "espresso"
    at.switch_page("app_pages/explain.py")  # AppTest reruns the page it last switched to, a browser the one shown
    at.radio(key="image_source").set_value("Sample photos").run()  # another source drops the handed-back photo
    at.radio(key="image_source").set_value("Upload").run()
    assert any("Upload an image" in i.value for i in at.info)


def test_presenter_with_random_weights_says_so():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.sidebar.radio(key="model_weights").set_value("random").run()
    at.switch_page("app_pages/present.py").run()
    _ok(at)
    assert any("random weights" in w.value for w in at.warning)
    _next(at)
    assert "never trained" in _markdown(at)


def test_warm_up_leaves_the_first_explain_visit_no_model_load_and_no_cam(monkeypatch):
    from core import cams, models
    from dashboard import warmup

    st.cache_resource.clear()  # as after a server start: no model, no result
    st.cache_data.clear()
    timings = warmup.run()
    assert {"imports", "model", "explain", "feature maps"} <= set(timings), timings
    loads, computed = [], []
    real_load, real_compute = models.load, cams.compute
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(cams, "compute", lambda *a, **k: computed.append(k.get("methods")) or real_compute(*a, **k))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    _ok(at)
    assert any(c.startswith("Grad-CAM for") for c in _captions(at))
    assert loads == [] and computed == [], (loads, computed)  # the warm-up did them, in the same caches
    at.switch_page("app_pages/features.py").run()
    _ok(at)
    assert loads == [], loads
    assert not any("EfficientNet-Lite1" in m.value for m in at.markdown)  # the closed comparison costs nothing


def test_warm_up_can_be_switched_off(monkeypatch):
    from dashboard import warmup

    monkeypatch.setenv("VISIONLENS_WARMUP", "0")
    assert warmup.start() is None


def test_serve_entry_point_starts_the_warm_up_in_its_lifespan(monkeypatch):
    from dashboard import serve, warmup

    started = []
    monkeypatch.setattr(warmup, "start", lambda: started.append(True))

    async def lifespan():
        async with serve.lifespan(serve.app):
            return list(started)

    assert asyncio.run(lifespan()) == [True]
    assert isinstance(serve.app, st.App)


def test_navigation_icons_are_material_symbols_and_the_favicon_is_a_local_file():
    """Emoji icons render as empty boxes without an emoji font; a ':material/...:' favicon is fetched from
    Google's font server. Material Symbols for pages come from Streamlit's own static files."""
    tree = ast.parse((ROOT / "dashboard" / "streamlit_app.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]
    icons = [kw.value for call in calls if call.func.attr == "Page" for kw in call.keywords if kw.arg == "icon"]
    assert len(icons) >= 14
    for icon in icons:
        assert isinstance(icon, ast.Constant) and icon.value.startswith(":material/"), ast.dump(icon)
        assert icon.value[len(":material/"):-1] in ALL_MATERIAL_ICONS, icon.value
    (page_config,) = [call for call in calls if call.func.attr == "set_page_config"]
    (favicon,) = [kw.value for kw in page_config.keywords if kw.arg == "page_icon"]
    source = ast.unparse(favicon)
    assert "assets" in source and "favicon.png" in source, source
    assert Image.open(ROOT / "assets" / "favicon.png").size == (64, 64)
