"""Streamlit AppTest: the Feature maps and Architecture pages run, render their results and follow their controls.

Most tests run each page file on its own (pytest puts the repository root on sys.path, so the pages'
`from dashboard import ...` resolves). The last tests go through the real entry point with
`switch_page`: they pass once dashboard/streamlit_app.py registers both pages.
"""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import registry
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "streamlit_app.py")
FEATURES = str(ROOT / "dashboard" / "app_pages" / "features.py")
ARCHITECTURE = str(ROOT / "dashboard" / "app_pages" / "architecture.py")


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _channel_captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions if c.startswith("ch ")]


def _captions(at: AppTest) -> str:
    return " | ".join(c for image in at.get("image") for c in image.captions)


def _chart_titles(at: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def features_page() -> AppTest:
    at = AppTest.from_file(FEATURES, default_timeout=180)
    at.run()
    return at


@pytest.fixture(scope="module")
def architecture_page() -> AppTest:
    at = AppTest.from_file(ARCHITECTURE, default_timeout=180)
    at.run()
    return at


# ---------------------------------------------------------------------------------------------
# Feature maps


def test_feature_maps_page_shows_layers_channels_and_filters(features_page):
    at = features_page
    _ok(at)
    assert at.selectbox(key="fm_layer_efficientnet_lite0").value == "bn2"
    assert "16 most active of 1280 channels at bn2" in [s.value for s in at.subheader]
    assert len(_channel_captions(at)) == 16
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["layer", "type", "output shape"]
    assert table.set_index("layer").loc["bn2", "output shape"] == "1×1280×7×11"  # chelsea, aspect kept
    assert "32 filters of conv_stem, 3×3" in _captions(at)


def test_the_mosaic_is_drawn_only_when_opened(features_page):
    at = features_page
    assert not any(": channels " in c for c in _captions(at).split(" | "))
    at.session_state["fm_mosaic"] = True
    at.run()
    _ok(at)
    assert any(c.startswith("bn2: channels ") for c in _captions(at).split(" | "))
    at.session_state["fm_mosaic"] = False
    at.run()


def test_changing_layer_and_channel_count(features_page):
    at = features_page
    at.selectbox(key="fm_layer_efficientnet_lite0").set_value("blocks.2").run()
    _ok(at)
    assert any(s.value.endswith("channels at blocks.2") for s in at.subheader)
    at.slider(key="fm_channels").set_value(8).run()
    _ok(at)
    assert len(_channel_captions(at)) == 8


def test_compare_with_another_backbone_and_depth(features_page):
    at = features_page
    # closed, the comparison computes nothing: a second model load and two passes were most of a first visit
    assert not any("EfficientNet-Lite1" in m.value for m in at.markdown)
    assert all(s.key != "compare_name" for s in at.selectbox)
    at.session_state["fm_compare"] = True  # what opening the expander does (on_change="rerun")
    at.run()
    _ok(at)
    assert at.selectbox(key="compare_name").value == "efficientnet_lite1"  # the next backbone by default
    assert any("EfficientNet-Lite1" in m.value and "bn2" in m.value for m in at.markdown)
    at.selectbox(key="compare_name").set_value(TINY).run()
    _ok(at)
    compared = [m.value for m in at.markdown if "Tiny CNN" in m.value]
    assert compared and f"`{registry.get(TINY).cam_layer}`" in compared[0] and "12 channels" in compared[0]
    at.radio(key="compare_depth").set_value("early (1/4 deep)").run()
    _ok(at)
    compared = [m.value for m in at.markdown if "Tiny CNN" in m.value]
    assert compared and "`1`" in compared[0]  # spatial layers 0..4 of the tiny CNN: a quarter of the way is 1


def test_feature_maps_page_on_a_token_model():
    at = AppTest.from_file(FEATURES, default_timeout=180)
    at.run()
    at.sidebar.selectbox(key="model_name").set_value("vit_b_16").run()
    at.sidebar.radio(key="model_weights").set_value("random").run()
    assert not at.exception, at.exception
    assert any("random weights" in w.value for w in at.warning)
    assert any(s.value.endswith("of 768 channels at encoder.layers.encoder_layer_11.ln_1") for s in at.subheader)
    assert "768 filters of conv_proj, 16×16" in _captions(at)


# ---------------------------------------------------------------------------------------------
# Architecture


def test_architecture_page_shows_modules_totals_and_stages(architecture_page):
    at = architecture_page
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "4.65 M" and metrics["Trainable"] == "0" and metrics["Modules"] == "273"
    modules = at.dataframe[0].value
    assert len(modules) == 273 and modules["parameters"].sum() == 4_652_008
    assert modules.set_index("module").loc["bn2", "output shape"] == "1×1280×7×7"
    assert _chart_titles(at) == [
        "EfficientNet-Lite0: parameters per stage",
        "EfficientNet-Lite0: parameters per stage",
        "EfficientNet-Lite1: parameters per stage",
    ]
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert "blocks.5" in bars["y"] and "blocks" not in bars["y"]


def test_architecture_compare_and_main_model_change(architecture_page):
    at = architecture_page
    at.selectbox(key="arch_compare_name").set_value(TINY).run()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tiny CNN (tests): modules"] == "9" and metrics["EfficientNet-Lite0: parameters"] == "4.65 M"
    assert _chart_titles(at)[-1] == "Tiny CNN (tests): parameters per stage"
    at.sidebar.selectbox(key="model_name").set_value("resnet18").run()
    at.sidebar.radio(key="model_weights").set_value("random").run()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "11.69 M" and metrics["ResNet-18: parameters"] == "11.69 M"
    assert _chart_titles(at)[0] == "ResNet-18: parameters per stage"


# ---------------------------------------------------------------------------------------------
# Through the real entry point (needs both pages registered in dashboard/streamlit_app.py)


@pytest.mark.parametrize("page, expected", [("features", "channels at bn2"), ("architecture", "Modules")])
def test_pages_through_the_entry_point(page, expected):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    _ok(at)
    assert any(expected in s.value for s in at.subheader), [s.value for s in at.subheader]
