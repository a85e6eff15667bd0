"""core.checkpoints: export -> import round trips, and hostile files refused with a clear message, never unpickled."""

import io
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save

from core import cams, checkpoints, datasets, predictions, training
from core.errors import InvalidInputError

CLASSES = ("circle", "square", "triangle", "star")


@pytest.fixture(scope="module")
def shapes():
    return datasets.shapes(0, 40, 64)


@pytest.fixture(scope="module")
def trained(tiny, shapes):
    config = training.TrainConfig(head="mlp", hidden=16, epochs=2, image_size=32)
    return training.train(tiny, shapes, config).model


@pytest.fixture(scope="module")
def files(trained) -> tuple[bytes, bytes]:
    return checkpoints.serialize(trained, trained=checkpoints.Trained("shapes", "feature-extraction", 0.5, 2))


def _logits(model, batch):
    with torch.no_grad():
        return model.module(batch)


@pytest.mark.parametrize("strategy, head", [("feature-extraction", "linear"), ("fine-tune", "mlp"),
                                            ("small-cnn", "linear"), ("deeper-cnn", "linear")])
def test_export_then_import_gives_identical_logits(tiny, shapes, tmp_path, strategy, head):
    run = training.train(tiny if strategy in ("feature-extraction", "fine-tune") else None, shapes,
                         training.TrainConfig(strategy=strategy, head=head, hidden=8, epochs=1, image_size=32))
    exported = checkpoints.export(run.model, tmp_path / strategy)
    assert exported.json.name == "model.json" and exported.weights.name == "model.safetensors"
    back = checkpoints.load(tmp_path / strategy)
    batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(run.model, batch), _logits(back, batch))
    assert back.categories == CLASSES and back.spec.head == run.model.spec.head
    assert back.spec.cam_layer == run.model.spec.cam_layer and back.spec.input_size == (32, 32)
    assert not any(p.requires_grad for p in back.module.parameters()) and back.spec.source == "imported"


def test_the_json_says_what_the_model_is(files, trained):
    document = json.loads(files[0])
    assert document["format"] == "visionlens-checkpoint" and document["version"] == 1
    assert document["base"] == trained.spec.name and document["classes"] == list(CLASSES)
    assert document["head"] == {"kind": "mlp", "slot": "7", "in_features": 12, "hidden": 16, "dropout": 0.2}
    assert document["preprocessing"]["input_size"] == [32, 32] and document["cam_layer"] == trained.spec.cam_layer
    assert document["trained"]["dataset"] == "shapes"


def test_an_imported_model_predicts_and_explains_its_own_classes(files, shapes):
    model = checkpoints.load(files)
    top = predictions.predict(model, shapes.images[0], top_k=4)
    assert {p.label for p in top} == set(CLASSES) and sum(p.prob for p in top) == pytest.approx(1, abs=1e-5)
    (cam,) = cams.compute(model, shapes.images[0], methods=["gradcam"], target=3)
    assert cam.label == "star" and cam.heatmap.shape == (64, 64)
    assert not any(p.grad is not None for p in model.module.parameters())


def test_loading_never_unpickles(files, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    checkpoints.load(files)
    with pytest.raises(InvalidInputError, match="never unpickles"):
        checkpoints.load((files[0], pickle.dumps({"7.0.weight": np.zeros(3)})))


# ---------------------------------------------------------------------------------------------
# Hostile checkpoints


def _tensors(files) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(files[1])


def _torch_save(files) -> bytes:
    buffer = io.BytesIO()
    torch.save(_tensors(files), buffer)
    return buffer.getvalue()


def _renamed(files) -> bytes:
    tensors = _tensors(files)
    tensors["7.0.weight_renamed"] = tensors.pop("7.0.weight")
    return save(tensors)


def _reshaped(files) -> bytes:
    tensors = _tensors(files)
    tensors["0.weight"] = torch.zeros(8, 3, 5, 5)
    return save(tensors)


def _with(files, name: str, value: float) -> bytes:
    tensors = _tensors(files)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    return save(tensors)


def _as_float64(files) -> bytes:
    tensors = _tensors(files)
    tensors["0.bias"] = tensors["0.bias"].double()
    return save(tensors)


def _document(files, **changes) -> bytes:
    document = json.loads(files[0])
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            document[outer][inner] = value
        else:
            document[key] = value
    return json.dumps(document).encode()


HOSTILE = {
    # name: (json bytes or None for the good one, weights bytes or None, words of the message)
    "pickle .pth renamed .safetensors": (None, lambda f: pickle.dumps(_tensors(f)), "pickle"),
    "torch.save file": (None, _torch_save, "PyTorch checkpoint"),
    "truncated safetensors": (None, lambda f: f[1][: len(f[1]) // 2], "truncated"),
    "truncated inside the header": (None, lambda f: f[1][:20], "truncated"),
    "wrong tensor names": (None, _renamed, "tensor names"),
    "wrong shapes": (None, _reshaped, "shape"),
    "NaN weights": (None, lambda f: _with(f, "7.3.weight", float("nan")), "NaN or infinite"),
    "inf weights": (None, lambda f: _with(f, "0.weight", float("inf")), "NaN or infinite"),
    "float64 instead of float32": (None, _as_float64, "stored as F64"),
    "oversized declared header": (None, lambda f: struct.pack("<Q", 2**40) + b"{}", "header"),
    "trailing bytes": (None, lambda f: f[1] + b"\0" * 64, "more than its tensors need"),
    "empty weights": (None, lambda f: b"", "too short"),
    "JSON with an unknown backbone": (lambda f: _document(f, base="resnet5000"), None, "Unknown backbone"),
    "JSON too large": (lambda f: b" " * (300 * 1024) + f[0], None, "at most 256 KB"),
    "not JSON": (lambda f: b"\x00\x01binary garbage", None, "not valid JSON"),
    "weights given as the JSON": (lambda f: f[1], None, "looks like a safetensors weights file"),
    "torch.save file given as the JSON": (lambda f: _torch_save(f), None, "not JSON"),
    "deeply nested JSON": (lambda f: b"[" * 100_000 + b"]" * 100_000, None, "not valid JSON"),
    "JSON array": (lambda f: b"[1, 2]", None, "must hold an object"),
    "another format": (lambda f: _document(f, format="other"), None, "not a VisionLens export"),
    "mismatched class count": (lambda f: _document(f, classes=["a", "b", "c"]), None, "lists 3 classes"),
    "duplicate class names": (lambda f: _document(f, classes=["a", "a", "b", "c"]), None, "twice"),
    "unknown head kind": (lambda f: _document(f, **{"head.kind": "transformer"}), None, "Unknown head kind"),
    "head slot elsewhere": (lambda f: _document(f, **{"head.slot": "0"}), None, "head sits at '7'"),
    "head in_features lie": (lambda f: _document(f, **{"head.in_features": 99}), None, "takes 99 features"),
    "CAM layer that does not exist": (lambda f: _document(f, cam_layer="nowhere"), None, "not a layer"),
    "unknown field": (lambda f: _document(f, code="import os"), None, "unknown code"),
    "negative std": (lambda f: _document(f, preprocessing={**json.loads(f[0])["preprocessing"], "std": [0, 1, 1]}),
                     None, "preprocessing std"),
    "class name too long": (lambda f: _document(f, classes=["x" * 500, "b", "c", "d"]), None, "at most 200 characters"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_checkpoints_are_refused_with_a_clear_message(files, case):
    make_json, make_weights, words = HOSTILE[case]
    document = make_json(files) if make_json else files[0]
    weights = make_weights(files) if make_weights else files[1]
    with pytest.raises(InvalidInputError, match=words):
        checkpoints.load((document, weights))


def test_folders_are_checked_before_reading(tmp_path, files):
    with pytest.raises(InvalidInputError, match="not a folder"):
        checkpoints.load(tmp_path / "missing")
    (tmp_path / "model.json").write_bytes(files[0])
    with pytest.raises(InvalidInputError, match="No model.safetensors"):
        checkpoints.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(files[1])
    with pytest.raises(InvalidInputError, match="at most"):
        checkpoints.load(tmp_path, limits=checkpoints.Limits(max_weights_bytes=1000))
    assert checkpoints.load(tmp_path).categories == CLASSES


def test_a_model_without_a_known_base_is_not_exported(trained):
    import dataclasses

    stranger = dataclasses.replace(trained, spec=dataclasses.replace(trained.spec, name="made_up"))
    with pytest.raises(InvalidInputError, match="made_up"):
        checkpoints.serialize(stranger)
