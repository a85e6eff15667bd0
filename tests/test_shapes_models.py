"""The two offline shapes models: registered, loadable without a download, accurate, and explainable."""

import hashlib
import json

import numpy as np
import pytest
import torch

from core import attention, datasets, models, preprocessing, registry, shapes_models

shapes_models.register()


@pytest.fixture(scope="module")
def held_out():
    return datasets.shapes(0, 60)  # seed 0 is neither the training (1) nor the test (2) set


def test_register_is_idempotent_and_adds_both_backbones():
    shapes_models.register()
    assert {"shapes_cnn", "shapes_vit"} <= set(registry.names())
    assert registry.get("shapes_vit").family == "transformer" and registry.get("shapes_cnn").family == "cnn"


def test_the_record_describes_the_shipped_files():
    made = json.loads((shapes_models.FOLDER / "models.json").read_text())
    shipped = sorted(p.stem for p in shapes_models.FOLDER.glob("*.safetensors"))
    assert shipped == sorted(made) == ["shapes_cnn", "shapes_vit"]
    for name in shipped:
        path = shapes_models.weights_file(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == made[name]["sha256"]
        assert path.stat().st_size < 4_000_000  # "a few MB each at most"
        assert made[name]["test_accuracy"] >= 0.95


@pytest.mark.parametrize("name", ["shapes_cnn", "shapes_vit"])
def test_models_load_offline_and_classify_unseen_shapes(name, held_out):
    assert models.weights_available(name)
    model = models.load(name, device="cpu")
    batch = torch.cat([preprocessing.to_tensor(image, model.spec) for image in held_out.images])
    with torch.inference_mode():
        predicted = model.module(batch).argmax(1).numpy()
    assert (predicted == held_out.labels).mean() >= 0.9


def test_missing_weights_say_how_to_train_them(monkeypatch, tmp_path):
    from core.errors import WeightsUnavailableError

    monkeypatch.setattr(shapes_models, "FOLDER", tmp_path)
    with pytest.raises(WeightsUnavailableError, match="train_shapes_models.py"):
        registry.get("shapes_vit").build(True)
    assert registry.get("shapes_vit").build(False) is not None


def test_the_vit_is_a_hybrid_whose_stem_started_from_the_cnn():
    made = json.loads((shapes_models.FOLDER / "models.json").read_text())["shapes_vit"]
    cnn = hashlib.sha256(shapes_models.weights_file("shapes_cnn").read_bytes()).hexdigest()
    assert f"sha256 {cnn[:12]}" in made["initialised"]  # the shipped CNN is the one it started from
    vit = models.load("shapes_vit", device="cpu").module
    stem = vit.conv_proj.stem
    assert [type(m).__name__ for m in stem][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] and len(stem) == 12
    assert len(vit.encoder.layers) == 4 and vit.patch_size == 8 and vit.hidden_dim == 64


def test_shapes_vit_attention_maps_cover_the_image(held_out):
    model = models.load("shapes_vit", device="cpu")
    assert model.pretrained
    assert attention.supports(model)
    tensor = preprocessing.to_tensor(held_out.images[0], model.spec)
    maps = attention.raw_maps(model, tensor, methods=list(attention.METHODS), target=int(held_out.labels[0]))
    assert all(m.shape == (64, 64) and np.isfinite(m).all() for m, _ in maps.values())


@pytest.mark.parametrize("page", ["explain.py", "compare.py"])
def test_the_pages_show_a_four_class_model(page):
    """The Shapes models know 4 classes: the pages ask for a top-5 no longer (it was refused: "top_k must be
    between 1 and 4, got 5")."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / page),
                           default_timeout=240)
    at.session_state["model_name"] = "shapes_vit"
    at.session_state["compare_names"] = ["shapes_cnn", "shapes_vit"]
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    captions = [c for img in at.get("image") for c in img.captions]
    assert any(c.startswith("Grad-CAM") for c in captions), captions
