"""The sidebar's model shelf: any classifier of the two zoos found by name, its card, and the user's own weights."""

import io
import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.test_dashboard import APP, _caption_of_overlay

pytestmark = pytest.mark.timeout(600)

TIMM = "timm/resnet18.a1_in1k"


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption) + "\n".join(c.value for c in at.sidebar.caption)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    return at


def test_find_a_timm_model_by_name_and_explain_it_with_random_weights(app):
    app.text_input(key="model_find_text").set_value("resnet18 a1").run()
    matches = app.selectbox(key="model_find_pick")
    assert TIMM in matches.options[1:] or any(TIMM in o for o in matches.options), matches.options[:5]
    matches.set_value(TIMM).run()
    assert not app.exception
    assert app.selectbox(key="model_name").value == TIMM  # the find became the backbone
    card = _captions(app)
    assert "11.7M parameters" in card and "imagenet-1k" in card, card
    app.radio(key="model_weights").set_value("random").run()
    assert not app.exception, app.exception
    assert any("random weights" in w.value for w in app.warning)
    assert len(app.get("progress")) == 5  # the top-5
    overlay = _caption_of_overlay(app)
    assert "Grad-CAM" in overlay and "at layer" in overlay, overlay
    layers = app.selectbox(key=f"layer_{TIMM}")  # found from the network, each with its output shape
    assert layers.value == "layer4" and "layer4 · 512×7×7" in layers.options, layers.options[-3:]
    # the list keeps it; moving to another backbone and back needs no second search
    app.selectbox(key="model_name").set_value("efficientnet_lite0").run()
    assert "resnet18.a1_in1k (download)" in app.selectbox(key="model_name").options


def test_filters_narrow_the_matches(app):
    app.text_input(key="model_find_text").set_value("vit").run()
    every = len(app.selectbox(key="model_find_pick").options)
    app.selectbox(key="model_find_family").set_value("cnn").run()
    cnn = app.selectbox(key="model_find_pick").options if app.selectbox else []
    assert len(cnn) < every
    app.selectbox(key="model_find_family").set_value("transformer").run()
    app.select_slider(key="model_find_max").set_value("25M").run()
    small = [o for o in app.selectbox(key="model_find_pick").options[1:]]
    assert small and all(float(o.rsplit("·", 1)[1].strip()[:-1]) <= 25 for o in small), small[:5]


def _resnet18_for_five_classes() -> bytes:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=5)
    buffer = io.BytesIO()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, buffer)
    return buffer.getvalue()


def test_own_weights_and_labels_give_their_class_names_in_the_top5(app):
    app.selectbox(key="model_name").set_value("resnet18").run()
    labels = ["tabby", "tulip", "tractor", "teapot", "tiger"]
    assert not app.sidebar.get("file_uploader")  # none until asked for
    app.toggle(key="model_own_toggle").set_value(True).run()
    uploaders = {u.label: u for u in app.sidebar.get("file_uploader")}
    uploaders["Class names (optional)"].set_value(("labels.json", json.dumps(labels).encode(), "application/json"))
    uploaders["Weights"].set_value(("five.pth", _resnet18_for_five_classes(), "application/octet-stream")).run()
    assert not app.exception, app.exception
    name = app.selectbox(key="model_name").value
    assert name != "resnet18" and "five.pth" in app.selectbox(key="model_name").format_func(name)
    bars = [p.proto.text for p in app.get("progress")]  # the top-5, named by the labels file
    assert len(bars) == 5 and all(any(bar.startswith(label) for label in labels) for bar in bars), bars


def test_a_pickle_with_code_is_refused_with_the_reason(app, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    app.selectbox(key="model_name").set_value("resnet18").run()
    assert not app.sidebar.get("file_uploader")  # none until asked for
    app.toggle(key="model_own_toggle").set_value(True).run()
    uploaders = {u.label: u for u in app.sidebar.get("file_uploader")}
    uploaders["Weights"].set_value(("evil.pth", pickle.dumps(Evil()), "application/octet-stream")).run()
    assert not marker.exists()
    errors = "\n".join(e.value for e in app.error)
    assert "pickled" in errors, errors


def test_the_card_of_a_project_model_names_its_classes_without_an_empty_label_set(app):
    app.selectbox(key="model_name").set_value("shapes_vit").run()
    assert not app.exception, app.exception
    card = _captions(app)
    assert "4 classes" in card and "classes ()" not in card, card
