"""The dataset audit with the attention methods (core.audit_attention): on a transformer every image's rollout,
gradient-weighted rollout and LeGrad map is the one `cams.compute` gives for that image and class, whatever the
batch it was computed in; the features and predictions are the Grad-CAM audit's; nothing stays patched or
hooked, also when the pass raises; slow methods and attention methods on a CNN are refused."""

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from core import attention, audit, cams, datasets, hooks, models, registry
from core.errors import InvalidInputError, UnknownMethodError
from tests.test_audit import _correlation

METHODS = tuple(attention.METHODS)  # rollout, grad_rollout, legrad


@pytest.fixture(scope="module")
def shapes_vit() -> models.LoadedModel:
    return models.load("shapes_vit", device="cpu")  # the offline trained weights: classes are the shapes'


@pytest.fixture(scope="module")
def swin() -> models.LoadedModel:
    """A small Swin at 40 px: 10 x 10 tokens in windows of 4 (padded to 12, shifted by 2), merged to 5 x 5: the
    windows of a batch's images lie one after another in the recorded attention."""
    from torchvision.models import SwinTransformer

    torch.manual_seed(0)
    module = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                             stochastic_depth_prob=0.0, num_classes=10).eval().requires_grad_(False)
    with torch.no_grad():
        module.head.weight.normal_(0, 0.05)  # not a zero head: class-specific maps have gradients
    spec = registry.BackboneSpec(
        name="audit_attention_swin", title="small Swin (tests)", source="tests", build=lambda _p: module,
        cam_layer="features.3", head="head", categories=tuple(f"class {i}" for i in range(10)), weights_file=None,
        input_size=(40, 40), fixed_size=True, family="transformer")
    return models.LoadedModel(spec=spec, module=module, device=torch.device("cpu"), pretrained=False, params=0)


def _patched(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if "forward" in m.__dict__]


def _clean(model: models.LoadedModel) -> None:
    """Nothing left on the shared model: no shadowing forward, no hook, no gradient, the lock free."""
    assert _patched(model.module) == [] and hooks.count(model.module) == 0
    assert not any(p.grad is not None for p in model.module.parameters())
    free = []
    thread = threading.Thread(target=lambda: free.append(model.lock.acquire(timeout=5) and model.lock.release()))
    thread.start()
    thread.join()
    assert free == [None]


def _expected(model, image, method, target) -> np.ndarray:
    (one,) = cams.compute(model, image, methods=[method], target=int(target))
    return audit.shrink(one.raw[None])[0]


@pytest.mark.parametrize("fixture", ["shapes_vit", "swin"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_maps_equal_the_one_image_engine(fixture, method, request):
    model = request.getfixturevalue(fixture)
    dataset = datasets.shapes(seed=11, n=6, size=64)
    together = audit.explain_dataset(model, dataset, method=method, batch_size=6)
    apart = audit.explain_dataset(model, dataset, method=method, batch_size=1)
    assert together.layer == "every block" and together.maps.shape == (6, audit.MAP_SIDE, audit.MAP_SIDE)
    assert together.maps.dtype == np.float16
    np.testing.assert_array_equal(together.explained, apart.explained)
    for index, image in enumerate(dataset.images):
        expected = _expected(model, image, method, together.explained[index])
        assert _correlation(together.maps[index], expected) >= 0.999, (fixture, method, index)
        assert _correlation(apart.maps[index], expected) >= 0.999, (fixture, method, index)
    assert together.maps.std() > 0.05  # not blank maps that would correlate trivially
    _clean(model)


def test_each_image_explains_its_own_class_in_a_batch(shapes_vit):
    """target 'true' on a model trained on the set: every image of one batch explains its label, LeGrad and
    gradient-weighted rollout of an image in a batch with other classes are that image's alone."""
    dataset = datasets.shapes(seed=5, n=8, size=64)
    assert len(set(dataset.labels.tolist())) > 1  # a batch of several classes
    for method in ("grad_rollout", "legrad"):
        truth = audit.explain_dataset(shapes_vit, dataset, method=method, target="true", batch_size=8)
        np.testing.assert_array_equal(truth.explained, dataset.labels)
        for index, image in enumerate(dataset.images):
            expected = _expected(shapes_vit, image, method, dataset.labels[index])
            assert _correlation(truth.maps[index], expected) >= 0.999, (method, index)
        # another class of the same image gives another map: the class reaches each image's gradient
        other = (dataset.labels[0] + 1) % len(dataset.classes)
        assert _correlation(truth.maps[0], _expected(shapes_vit, dataset.images[0], method, other)) < 0.99


def test_features_and_predictions_are_the_cam_audits(shapes_vit):
    dataset = datasets.shapes(seed=2, n=8, size=64)
    cam = audit.explain_dataset(shapes_vit, dataset, method="gradcam", batch_size=4)
    for method in METHODS:
        ours = audit.explain_dataset(shapes_vit, dataset, method=method, batch_size=4)
        np.testing.assert_array_equal(ours.predictions, cam.predictions)
        np.testing.assert_allclose(ours.features, cam.features, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.top_probabilities, cam.top_probabilities, atol=1e-5)
        assert set(ours.stats) == set(cam.stats)  # the shapes' masks: heat in the mask and the pointing game too


def test_the_plan_refuses_slow_methods_and_attention_on_a_cnn(shapes_vit, tiny):
    classes = datasets.shapes().classes
    with pytest.raises(InvalidInputError, match="one-pass method.*rollout"):
        audit.plan(shapes_vit, classes, method="scorecam")
    with pytest.raises(UnknownMethodError, match="Attention rollout does not apply .*transformer"):
        audit.plan(tiny, classes, method="rollout")
    with pytest.raises(InvalidInputError, match="one-pass method") as refused:
        audit.plan(tiny, classes, method="scorecam")
    assert "rollout" not in str(refused.value)  # a CNN is offered the methods that apply to it
    planned = audit.plan(shapes_vit, classes, method="legrad", layer="encoder.layers.encoder_layer_0")
    assert planned.layer == "every block"  # the attention methods read every block, whatever the layer


def _raise(*args, **kwargs):
    raise RuntimeError("injected")


@pytest.mark.parametrize("where", ["forward", "maps"])
def test_nothing_stays_patched_when_the_pass_raises(shapes_vit, monkeypatch, where):
    """An error in a block's forward (attention recorded, head hooked) or in the maps after the backward."""
    dataset = datasets.shapes(seed=1, n=4, size=64)
    if where == "maps":
        monkeypatch.setattr(attention, "batch_grids", _raise)
    with pytest.raises(RuntimeError, match="injected"):
        if where == "forward":
            with hooks.attached(shapes_vit.module.encoder.layers[2], _raise):
                audit.explain_dataset(shapes_vit, dataset, method="legrad", batch_size=4)
        else:
            audit.explain_dataset(shapes_vit, dataset, method="legrad", batch_size=4)
    monkeypatch.undo()
    _clean(shapes_vit)
    assert len(audit.explain_dataset(shapes_vit, dataset, method="legrad", batch_size=4)) == 4


def test_cli_audit_with_rollout(tmp_path, capsys):
    from core.__main__ import main

    out = tmp_path / "audit"
    assert main(["audit", "shapes", "--model", "shapes_vit", "--method", "rollout", "--out", str(out),
                 "--limit", "16", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 16 and printed["method"] == "rollout" and printed["layer"] == "every block"
    maps = np.load(out / "maps.npy")
    assert maps.shape == (16, audit.MAP_SIDE, audit.MAP_SIDE) and maps.std() > 0.05
    assert main(["audit", "shapes", "--model", "shapes_cnn", "--method", "rollout", "--limit", "4",
                 "--out", str(tmp_path / "cnn")]) == 2
    assert "transformer" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["grad_rollout", "legrad"])
def test_both_targets_explain_each_wrong_image_for_its_own_label_too(shapes_vit, method):
    """target "both" through the attention path: `maps` are the predicted classes', `maps_true` the labels'."""
    shapes = datasets.shapes(seed=4, n=12, size=64)
    labels = shapes.labels.copy()
    labels[::2] = (labels[::2] + 1) % len(shapes.classes)  # half the labels wrong: the trained ViT disagrees there
    data = dataclasses.replace(shapes, labels=labels, content_hash=shapes.content_hash + "-relabelled")
    both = audit.explain_dataset(shapes_vit, data, method=method, target="both", batch_size=5)
    predicted = audit.explain_dataset(shapes_vit, data, method=method, target="predicted", batch_size=5)
    true = audit.explain_dataset(shapes_vit, data, method=method, target="true", batch_size=5)
    wrong = both.predictions != both.labels
    assert wrong.sum() >= 5, "the check needs wrong predictions"
    np.testing.assert_allclose(both.maps.astype(np.float32), predicted.maps.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(both.maps_true.astype(np.float32), true.maps.astype(np.float32), atol=2e-3)
    assert any(_correlation(both.maps[i], both.maps_true[i]) < 0.99 for i in np.flatnonzero(wrong))
