"""core.user_weights: real-shaped state dict files built here, each loaded or refused with the expected message.

The set: a ResNet-18 fine-tuned to 5 classes saved three common ways, a timm ViT-Tiny with `module.` prefixes,
ResNet-50 keys offered to ResNet-18, truncated files (safetensors and .pth), a TorchScript archive, a whole
pickled model and a pickle that would run code (which must never run).
"""

import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors
from torch import nn

from core import cams, datasets, embeddings, features, labels, predictions, registry, training, user_weights
from core.errors import InvalidInputError

CLASSES = ("daisy", "dandelion", "rose", "sunflower", "tulip")


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def resnet18_5():
    """A ResNet-18 'fine-tuned' to 5 classes: random weights, a 5-way head, BatchNorm statistics not the defaults."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=5)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (96, 112, 3), dtype=np.uint8))


def _logits(module: nn.Module, size: int = 64) -> torch.Tensor:
    batch = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return module.eval()(batch)


@pytest.mark.parametrize("way", ["plain .pth", "state_dict + module.", "safetensors"])
def test_a_fine_tuned_resnet18_loads_three_common_ways(resnet18_5, tmp_path, way):
    state = resnet18_5.state_dict()
    if way == "plain .pth":
        path = tmp_path / "flowers.pth"
        path.write_bytes(_torch_bytes(state))
    elif way == "state_dict + module.":
        path = tmp_path / "flowers.pt"
        path.write_bytes(_torch_bytes({"epoch": 12, "state_dict": {f"module.{k}": v for k, v in state.items()},
                                       "optimizer": {"lr": 0.01}}))
    else:
        path = tmp_path / "flowers.safetensors"
        path.write_bytes(save_safetensors({k: v.contiguous() for k, v in state.items()}))
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    notes = []
    model = user_weights.load("resnet18", path, labels=names, on_note=notes.append)
    assert torch.equal(_logits(model.module), _logits(resnet18_5))
    assert model.categories == CLASSES and model.pretrained and model.spec.title == f"ResNet-18 ({path.name})"
    assert model.spec.source == user_weights.SOURCE and model.spec.weights_file == path and model.spec.hub_id is None
    assert model.spec.label_set == "labels file"
    assert any("head 'fc' replaced: 5 classes" in n for n in notes)
    assert ("stripped the 'module.' prefix from the keys" in notes) == (way == "state_dict + module.")
    assert not any(p.requires_grad for p in model.module.parameters())


def test_bytes_in_gives_the_same_model_and_the_digest_keys_the_content(resnet18_5, tmp_path):
    data = save_safetensors({k: v.contiguous() for k, v in resnet18_5.state_dict().items()})
    (tmp_path / "w.safetensors").write_bytes(data)
    model = user_weights.load("resnet18", data, filename="upload.safetensors")
    assert model.spec.title == "ResNet-18 (upload.safetensors)" and model.spec.weights_file is None
    assert model.categories == tuple(f"class {i}" for i in range(5))
    assert torch.equal(_logits(model.module), _logits(resnet18_5))
    assert user_weights.digest(data) == user_weights.digest(tmp_path / "w.safetensors")
    assert user_weights.digest(data) != user_weights.digest(data[:-1])


def test_a_user_model_predicts_and_explains_with_its_own_class_names(resnet18_5, image):
    data = _torch_bytes(resnet18_5.state_dict())
    model = user_weights.load("resnet18", data, labels=json.dumps(list(CLASSES)).encode(), filename="f.pth")
    top = predictions.predict(model, image, top_k=5)
    assert {p.label for p in top} == set(CLASSES) and sum(p.prob for p in top) == pytest.approx(1, abs=1e-5)
    # the layer is named: the zoo's specs leave the default layer to be found when the network loads (core.layers)
    (cam,) = cams.compute(model, image, methods=["gradcam"], target=2, layer="layer4")
    assert cam.label == "rose" and cam.layer == "layer4" and cam.heatmap.shape == (96, 112)
    assert float(np.ptp(cam.heatmap)) > 0
    assert not any(p.grad is not None for p in model.module.parameters())


def test_an_architectures_own_head_size_keeps_its_class_names():
    torch.manual_seed(0)
    state = registry.get("tiny_cnn_for_tests").build(False).state_dict()
    model = user_weights.load("tiny_cnn_for_tests", _torch_bytes(state), filename="same.pth")
    assert model.categories == registry.get("tiny_cnn_for_tests").categories


@pytest.fixture(scope="module")
def tiny_user(tmp_path_factory):
    """The tests' tiny CNN with a 4-class head, as a user's .pth: cheap enough for features, embeddings, training."""
    torch.manual_seed(3)
    module = registry.get("tiny_cnn_for_tests").build(False)
    module[7] = nn.Linear(12, 4)
    path = tmp_path_factory.mktemp("tiny") / "shapes.pth"
    path.write_bytes(_torch_bytes({"model": module.state_dict()}))
    return user_weights.load("tiny_cnn_for_tests", path, labels=b"circle\nsquare\ntriangle\nstar\n")


def test_every_downstream_function_takes_a_user_model(tiny_user):
    shapes = datasets.shapes(0, 24, 64)
    assert tiny_user.categories == ("circle", "square", "triangle", "star")
    maps = features.feature_maps(tiny_user, shapes.images[0])
    assert maps.layer == tiny_user.spec.cam_layer
    extracted = embeddings.extract(tiny_user, shapes, batch_size=8, precision="fp32")
    assert extracted.features.shape == (24, 12) and extracted.logits.shape == (24, 4)
    run = training.train(tiny_user, shapes, training.TrainConfig(epochs=1, image_size=32))
    assert run.model.categories == shapes.classes and 0 <= run.accuracy <= 1


def test_a_timm_vit_tiny_with_module_prefixes_loads_and_explains(image):
    import timm

    spec = registry.BackboneSpec(
        name="timm/vit_tiny_patch16_224", title="ViT-Tiny/16", source="timm",
        build=lambda pretrained: timm.create_model("vit_tiny_patch16_224", pretrained=False),
        cam_layer="blocks.11.norm1", head="head", categories=tuple(f"class {i}" for i in range(1000)),
        weights_file=None, input_size=(224, 224), resize_size=248, mean=(0.5,) * 3, std=(0.5,) * 3,
        interpolation="bicubic", fixed_size=True, reshape=registry.vit_tokens_to_grid, family="transformer",
    )
    torch.manual_seed(0)
    trained = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3).eval()
    with torch.no_grad():
        trained.head.weight.normal_(0, 0.5)  # not all-zero: a class-specific map needs a head that depends on input
    data = _torch_bytes({f"module.{k}": v for k, v in trained.state_dict().items()})
    model = user_weights.load(spec, data, labels=b"cat\ndog\nbird", filename="vit.pth")
    assert model.spec.title == "ViT-Tiny/16 (vit.pth)" and model.categories == ("cat", "dog", "bird")
    assert torch.equal(_logits(model.module, 224)[:1], _logits(trained, 224)[:1])
    (cam,) = cams.compute(model, image, methods=["gradcam"], target=1)
    assert cam.label == "dog" and cam.heatmap.shape == (96, 112) and float(np.ptp(cam.heatmap)) > 0
    by_name = user_weights.load("timm/vit_tiny_patch16_224", data, labels=b"cat\ndog\nbird", filename="vit.pth")
    assert by_name.spec.name.startswith("timm/vit_tiny_patch16_224") and by_name.spec.title.endswith("(vit.pth)")
    assert torch.equal(_logits(by_name.module, 224)[:1], _logits(trained, 224)[:1])
    assert {p.label for p in predictions.predict(by_name, image, top_k=3)} == {"cat", "dog", "bird"}


def test_resnet50_keys_on_resnet18_say_which_keys_and_which_architecture():
    from torchvision.models import resnet50

    with pytest.raises(InvalidInputError) as error:
        user_weights.load("resnet18", _torch_bytes(resnet50(num_classes=5).state_dict()), filename="r50.pth")
    message = str(error.value)
    assert "r50.pth does not fit ResNet-18 (resnet18)" in message
    assert "unexpected 198 key(s): layer1.0.conv3.weight" in message
    assert "layer1.0.conv1.weight expected [64, 64, 3, 3], got [64, 64, 1, 1]" in message
    assert "This looks like a ResNet-50 (resnet50) state dict, not ResNet-18: choose --model resnet50" in message


def test_missing_keys_are_named_and_a_head_of_another_width_is_a_shape_mismatch(resnet18_5):
    state = dict(resnet18_5.state_dict())
    del state["layer4.1.bn2.bias"]
    state["fc.weight"] = torch.zeros(5, 256)
    with pytest.raises(InvalidInputError, match=r"missing 1 key\(s\): layer4.1.bn2.bias.*"
                                                r"fc.weight expected \[1000, 512\], got \[5, 256\]"):
        user_weights.load("resnet18", _torch_bytes(state), filename="bad.pth")


def test_a_missing_num_batches_tracked_is_not_a_misfit(resnet18_5):
    state = {k: v for k, v in resnet18_5.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = user_weights.load("resnet18", _torch_bytes(state), filename="old.pth")
    assert torch.equal(_logits(model.module), _logits(resnet18_5))


def test_a_truncated_safetensors_file_is_refused_before_reading_tensors(resnet18_5, monkeypatch):
    import safetensors.torch

    data = save_safetensors({k: v.contiguous() for k, v in resnet18_5.state_dict().items()})
    monkeypatch.setattr(safetensors.torch, "load", lambda *a, **k: pytest.fail("tensor bytes were read"))
    with pytest.raises(InvalidInputError, match=r"truncated: its header lists [\d,]+ bytes of tensor data, the file "
                                                r"holds [\d,]+"):
        user_weights.load("resnet18", data[:-4000], filename="cut.safetensors")
    with pytest.raises(InvalidInputError, match="ends inside its header"):
        user_weights.load("resnet18", data[:200], filename="cut.safetensors")


def test_a_truncated_pth_is_refused(resnet18_5):
    data = _torch_bytes(resnet18_5.state_dict())
    with pytest.raises(InvalidInputError, match="truncated or damaged torch.save"):
        user_weights.load("resnet18", data[: len(data) // 2], filename="cut.pth")


def test_nan_weights_are_refused(resnet18_5):
    state = dict(resnet18_5.state_dict())
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].clone()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="'layer2.0.conv1.weight' holds NaN or infinite values"):
        user_weights.load("resnet18", save_safetensors({k: v.contiguous() for k, v in state.items()}))


class _RunsCode:
    """Unpickling this runs `exec`: it writes the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.mark.parametrize("container", ["torch.save zip", "raw pickle"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "marker"
    payload = {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _RunsCode(str(marker))}
    data = _torch_bytes(payload) if container == "torch.save zip" else pickle.dumps({"hook": payload["hook"]}, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(InvalidInputError) as error:
        user_weights.load("resnet18", path)
    assert "this file is a pickled Python object (a whole model or code)" in str(error.value)
    assert "save `model.state_dict()` with torch.save or safetensors instead" in str(error.value)
    assert "it refers to exec" in str(error.value) and "trust" not in str(error.value)
    assert not marker.exists()
    if container == "raw pickle":  # the file is a real attack: plain pickle runs it
        pickle.loads(data)
        assert marker.read_text() == "code ran"


def test_a_whole_pickled_model_is_refused_with_the_reason(resnet18_5):
    with pytest.raises(InvalidInputError, match="pickled Python object.*it refers to torchvision.models.resnet.ResNet"):
        user_weights.load("resnet18", _torch_bytes(resnet18_5), filename="model.pth")


def test_a_torchscript_archive_is_refused():
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(2, 2))), buffer)
    with pytest.raises(InvalidInputError, match="TorchScript archive.*holds code"):
        user_weights.load("resnet18", buffer.getvalue())


@pytest.mark.parametrize("data, match", [
    (b"hello, not weights", "neither safetensors nor a torch.save file"),
    (b"", "neither safetensors nor a torch.save file"),
])
def test_other_files_are_refused(data, match):
    with pytest.raises(InvalidInputError, match=match):
        user_weights.load("resnet18", data)


def test_size_and_tensor_caps(resnet18_5):
    data = _torch_bytes(resnet18_5.state_dict())
    with pytest.raises(InvalidInputError, match="at most 0 MB are accepted"):
        user_weights.load("resnet18", data, limits=user_weights.Limits(max_file_bytes=1000))
    with pytest.raises(InvalidInputError, match="holds 122 tensors; at most 10 are accepted"):
        user_weights.load("resnet18", data, limits=user_weights.Limits(max_tensors=10))


def test_a_labels_count_that_is_not_the_heads_is_refused(resnet18_5):
    with pytest.raises(InvalidInputError, match="lists 4 class names, but the model's head has 5 outputs"):
        user_weights.load("resnet18", _torch_bytes(resnet18_5.state_dict()), labels=b"a\nb\nc\nd\n")


@pytest.mark.parametrize("text, expected", [
    ("cat\ndog\n\n", ("cat", "dog")),
    ("\ufeffcat\r\ndog", ("cat", "dog")),
    ('["cat", " dog "]', ("cat", "dog")),
    ('{"1": ["n02", "dog"], "0": ["n01", "cat"]}', ("cat", "dog")),
])
def test_labels_files_are_read(text, expected):
    assert labels.read(text.encode("utf-8")) == expected


@pytest.mark.parametrize("data, match", [
    (b"cat\n\ndog\n", "blank line \\(line 2\\)"),
    (b"cat\ncat\n", "lists 'cat' twice"),
    (b"", "lists no class names"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b'["cat", 3]', "JSON list of class names"),
    (b'{"0": "a", "2": "b"}', "without gaps"),
    (b"[1, 2", "not valid JSON"),
])
def test_bad_labels_files_say_why(data, match):
    with pytest.raises(InvalidInputError, match=match):
        labels.read(data)


def test_a_safetensors_path_is_judged_by_its_header_alone(tmp_path, monkeypatch):
    import pathlib

    import safetensors.torch
    from torchvision.models import resnet50

    path = tmp_path / "r50.safetensors"
    path.write_bytes(save_safetensors({k: v.contiguous() for k, v in resnet50().state_dict().items()}))
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("tensor bytes were read"))
    read_bytes = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes",
                        lambda self: pytest.fail("the whole file was read") if self == path else read_bytes(self))
    with pytest.raises(InvalidInputError, match="r50.safetensors does not fit ResNet-18.*looks like a ResNet-50"):
        user_weights.load("resnet18", path)
