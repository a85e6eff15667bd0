"""Streamlit AppTest: every step of the Learn page runs on the default image and follows its widgets.

Through the real entry point (dashboard/streamlit_app.py), switched to app_pages/learn.py.
"""

import json
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import models, training

config.set_option("client.showErrorDetails", "full")  # tests read the real exception, users never do

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "streamlit_app.py"
def _learn_app(tmp_path_factory) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    return at.switch_page("app_pages/learn.py").run()


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _step(at: AppTest, step: str) -> AppTest:
    at.segmented_control(key="learn_step").set_value(step).run()
    _ok(at)
    assert at.header[0].value == step
    return at


def _latex(at: AppTest) -> str:
    return " | ".join(e.value for e in at.latex)


def _text(at: AppTest) -> str:
    return " | ".join(e.value for e in at.markdown)


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> AppTest:
    at = _learn_app(tmp_path_factory)
    _ok(at)
    return at


def test_convolution(app):
    at = app
    assert at.title[0].value == "Learn" and at.header[0].value == "Convolution"
    assert at.segmented_control(key="learn_step").options == [
        "Convolution", "Padding & stride", "Pooling", "Receptive field", "Residual connections",
        "Pretrained features", "Transfer learning", "Grad-CAM",
    ]
    assert r"\sum_{u=-1}^{1}" in _latex(at) and r"\odot" in _latex(at)
    assert any(c.startswith("Output, same size") for c in _captions(at))
    assert "32 kernels" in _text(at)  # Lite0's conv_stem, read from the model
    at.selectbox(key="learn_kernel").set_value("box_blur").run()
    _ok(at)
    assert r"\tfrac{1}{9}" in _latex(at)
    at.selectbox(key="learn_kernel").set_value("custom").run()
    at.number_input(key="learn_k11").set_value(-1.0).run()
    _ok(at)
    assert r"0 & -1 & 0 \\" in _latex(at)  # the typed weight, at the centre
    pixel = [e.value for e in at.latex if r"\odot" in e.value][0]
    centre = int(pixel.split(r"\\")[1].split("&")[1])  # the grey value under the kernel's centre
    assert pixel.rstrip("$\n ").endswith(f"{-centre:.1f}")


def test_padding_and_stride(app):
    at = _step(app, "Padding & stride")
    assert r"\left\lfloor \frac{N + 2P - F}{S} \right\rfloor + 1" in _latex(at)
    assert r"\mathbf{112}" in _latex(at)  # 224, F=3, P=1, S=2
    at.number_input(key="learn_s").set_value(1).run()
    assert r"\mathbf{224}" in _latex(at)
    assert "49 of 49 agree" in _text(at)
    assert len(at.dataframe[0].value) == 49 and set(at.dataframe[0].value["agree"]) == {"✓"}
    at.selectbox(key="learn_layer_efficientnet_lite0").set_value("blocks.2.0.conv_dw").run()
    _ok(at)
    assert r"P_{\text{total}}" in _latex(at) and "✓ matches" in _text(at)
    assert any("TensorFlow" in i.value for i in at.info)


def test_pooling(app):
    at = _step(app, "Pooling")
    assert r"\max_{0 \le u, v < k}" in _latex(at) and r"\xrightarrow{\max}" in _latex(at)
    at.select_slider(key="learn_pool_size").set_value(4).run()
    _ok(at)
    captions = _captions(at)
    assert any(c.startswith("Max pooling 4×4: 56×84") for c in captions), captions
    assert any(c.startswith("Average pooling 4×4") for c in captions)
    assert "no pooling layer inside" in _text(at) and "1,280 maps of 7×11" in _text(at)


def test_receptive_field(app):
    at = _step(app, "Receptive field")
    assert r"r_l = r_{l-1}" in _latex(at)
    fields = _charts(at)[0]["data"][0]["y"]
    assert len(fields) == 49 and fields == sorted(fields) and fields[-1] == 851
    assert at.metric[0].value == f"{fields[24]} px"  # the middle layer, where the square fits in the picture
    at.select_slider(key="learn_rf_layer_efficientnet_lite0").set_value("conv_head").run()
    assert at.metric[0].value == "851 px" and at.metric[1].value == "32 px"
    at.select_slider(key="learn_rf_layer_efficientnet_lite0").set_value("conv_stem").run()
    _ok(at)
    assert at.metric[0].value == "3 px" and at.metric[1].value == "2 px"


def test_residual_connections(app):
    at = _step(app, "Residual connections")
    assert "y = F(x) + x" in _latex(at)
    assert "9 blocks that add their input back, and 7 that do not" in _text(at)
    assert len(_charts(at)[0]["data"][0]["x"]) == 9
    at.selectbox(key="learn_block_efficientnet_lite0").set_value("blocks.5.2").run()
    _ok(at)
    assert any(c.startswith("F(x), ‖F(x)‖ =") for c in _captions(at))


def test_pretrained_features(app):
    at = _step(app, "Pretrained features")
    assert r"\sum_{c} W^k_c \star X_c" in _latex(at)
    captions = _captions(at)
    layers = [c.split(":")[0] for c in captions if "maps of" in c]
    assert layers == ["blocks.0", "blocks.1", "blocks.4", "bn2"], captions
    at.toggle(key="learn_random").set_value(True).run()
    _ok(at)
    assert sum("maps of" in c for c in _captions(at)) == 8
    assert "random weights" in _text(at)


def test_transfer_learning(app):
    at = _step(app, "Transfer learning")
    plans = at.dataframe[0].value
    assert list(plans["strategy"]) == ["feature extraction", "fine-tune the last stage", "fine-tune everything"]
    at.number_input(key="learn_classes").set_value(5).run()
    _ok(at)
    assert "6{,}405" in _latex(at)  # (1280 + 1) * 5
    plans = at.dataframe[0].value
    assert plans["trainable"].iloc[0] == "6,405" and plans["frozen"].iloc[2] == "0"
    # "The last stage" is what the Transfer learning page unfreezes for "last 1 stage": conv_head + bn2, not blocks.5 on
    summary = training.parameter_summary(models.load("efficientnet_lite0", device="cpu"), "fine-tune", 1, classes=5)
    assert plans["trainable"].iloc[1] == f"{summary.trainable:,}" and plans["frozen"].iloc[1] == f"{summary.frozen:,}"
    assert plans["what trains"].iloc[1] == "conv_head, bn2, classifier"


def test_gradcam(app):
    at = _step(app, "Grad-CAM")
    assert r"\alpha_k^c" in _latex(at) and r"\mathrm{ReLU}" in _latex(at)
    assert "Egyptian cat" in _text(at) or "tabby" in _text(at)
    bars = _charts(at)[0]["data"][0]["y"]
    assert len(bars) == 8 and bars == sorted(bars, reverse=True)
    assert sum(c.startswith("A^") and ": α = " in c for c in _captions(at)) == 8
    at.selectbox(key="learn_target").set_value(281).run()
    _ok(at)
    assert "tabby" in _text(at) and any("Grad-CAM for “tabby”" in c for c in _captions(at))


def test_resnet18_steps_with_random_weights(tmp_path_factory):
    """A ResNet: a real max-pool layer, downsample shortcuts, and the 435-pixel receptive field."""
    at = _learn_app(tmp_path_factory)
    at.sidebar.selectbox(key="model_name").set_value("resnet18").run()
    at.sidebar.radio(key="model_weights").set_value("random").run()
    _ok(at)
    assert any("random weights" in w.value for w in at.warning)
    at = _step(at, "Padding & stride")
    assert "21 of 21 agree" in _text(at)
    at = _step(at, "Pooling")
    assert "`maxpool` is a MaxPool2d with a 3×3 window, stride 2, padding 1: 112×169 → 56×85" in _text(at)
    at = _step(at, "Receptive field")
    assert _charts(at)[0]["data"][0]["y"][-1] == 435
    at.select_slider(key="learn_rf_layer_resnet18").set_value("layer4.1.conv2").run()
    assert at.metric[0].value == "435 px" and at.metric[1].value == "32 px"
    at = _step(at, "Residual connections")
    assert "8 blocks that add their input back." in _text(at) and "downsample" in _text(at)
    at = _step(at, "Transfer learning")
    assert "layer4, fc" in at.dataframe[0].value["what trains"].iloc[1]


def test_without_an_image_the_page_asks_for_one(app):
    at = app
    at.radio(key="learn_image_source").set_value("Upload").run()
    _ok(at)
    assert any("Upload an image" in i.value for i in at.info) and not at.latex
    at.radio(key="learn_image_source").set_value("Sample photos").run()
    _ok(at)
    assert at.header[0].value == "Grad-CAM" and at.latex
