"""Grad-CAM-family and attention methods asked together share ONE forward and ONE backward pass (issue #14)."""

import dataclasses
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

from core import attention, cams, hooks, models, registry

MIXED = ["gradcam", "layercam", "rollout", "grad_rollout", "legrad"]
GRADCAM = ["gradcam", "layercam"]
READ = ["rollout", "grad_rollout", "legrad"]


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # torchvision zero-initialises ViT's `heads.head`: no gradient for any class
            if p.dim() > 1 and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module


def _zoo(name: str, size: int, **kwargs) -> models.LoadedModel:
    import torchvision.models as tv

    torch.manual_seed(0)
    spec = dataclasses.replace(registry.get(name), input_size=(size, size), resize_size=size)
    return models.ready(spec, _randomise(getattr(tv, name)(weights=None, **kwargs), 1), device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def vit_b16() -> models.LoadedModel:
    return _zoo("vit_b_16", 64, image_size=64)  # ViT-B/16 itself (12 blocks, 768 wide) on a 4 x 4 token grid


@pytest.fixture(scope="module")
def swin_t() -> models.LoadedModel:
    return _zoo("swin_t", 64)


@pytest.fixture(scope="module")
def shapes_vit() -> models.LoadedModel:
    return models.load("shapes_vit", device="cpu")  # the trained offline weights in assets/


MODELS = ["vit_b16", "swin_t", "shapes_vit"]


def _image(model: models.LoadedModel, seed: int = 0) -> torch.Tensor:
    size = model.spec.input_size
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def _patched(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if "forward" in m.__dict__]


def _assert_clean(model: models.LoadedModel) -> None:
    assert _patched(model.module) == [] and hooks.count(model.module) == 0
    assert all(p.grad is None for p in model.module.parameters())


@contextmanager
def _passes(model: models.LoadedModel):
    """Counts the network's forward passes and the backward passes that reach its logits (from the class score
    through the trunk; LeGrad's block-local passes start at a block's own score and never reach the logits)."""
    counts = {"forward": 0, "backward": 0}

    def on_backward(grad):
        counts["backward"] += 1

    def on_forward(_module, _args, output):
        counts["forward"] += 1
        if output.requires_grad:
            output.register_hook(on_backward)

    handle = model.module.register_forward_hook(on_forward)
    try:
        yield counts
    finally:
        handle.remove()


def _raw(model, methods, target=1, x=None):
    x = _image(model) if x is None else x
    return cams.raw_maps(model, x, methods=methods, target=target, layer=model.spec.cam_layer)


@pytest.mark.parametrize("fixture", MODELS)
def test_a_mixed_request_gives_the_separate_requests_maps_from_one_forward_and_one_backward(fixture, request):
    model = request.getfixturevalue(fixture)
    with _passes(model) as mixed_counts:
        mixed = _raw(model, MIXED)
    _assert_clean(model)
    with _passes(model) as separate_counts:
        separate = {**_raw(model, GRADCAM), **_raw(model, READ)}
    assert list(mixed) == MIXED
    assert mixed_counts == {"forward": 1, "backward": 1}
    assert separate_counts == {"forward": 2, "backward": 2}  # what the counter would say of the old engine
    for name in MIXED:
        got, want = mixed[name][0], separate[name][0]
        assert got.shape == want.shape == tuple(model.spec.input_size)
        assert np.abs(got - want).max() < 1e-3, name
        assert want.max() > want.min()  # a map, not a constant: the comparison means something
    _assert_clean(model)


@pytest.mark.parametrize("fixture", MODELS)
def test_the_mixed_pass_leaves_the_logits_and_the_model_as_they_were(fixture, request):
    model = request.getfixturevalue(fixture)
    x = _image(model, 3)
    with torch.no_grad():
        plain = model.module(x)
    seen = []
    with hooks.attached(model.module, lambda _m, _a, out: seen.append(out.detach().clone())):
        _raw(model, MIXED, x=x)
    assert len(seen) == 1 and torch.allclose(seen[0], plain, atol=1e-4)  # the explicit attention, same logits
    _assert_clean(model)
    with torch.no_grad():
        assert torch.allclose(model.module(x), plain, atol=0)


def test_the_mixed_pass_holds_the_models_lock(vit_b16):
    seen = []

    def probe(_module, _args, _output):
        other = threading.Thread(target=lambda: seen.append(vit_b16.lock.acquire(blocking=False)))
        other.start()
        other.join()

    with hooks.attached(hooks.find(vit_b16.module, "encoder.layers.encoder_layer_0"), probe):
        _raw(vit_b16, MIXED)
    assert seen == [False]  # another thread could not take the lock during the pass


@pytest.mark.parametrize("fixture", ["vit_b16", "swin_t"])
def test_nothing_left_patched_or_hooked_when_the_mixed_pass_raises(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture)

    def broken(*_args, **_kwargs):
        assert _patched(model.module) and hooks.count(model.module) > 0  # raised inside the capture
        raise RuntimeError("injected")

    monkeypatch.setattr(attention, "from_records", broken)
    with pytest.raises(RuntimeError, match="injected"):
        _raw(model, MIXED)
    monkeypatch.undo()
    _assert_clean(model)

    def failing_block(_module, _args, _output):
        raise RuntimeError("injected in the forward")

    target_layer = hooks.find(model.module, model.spec.cam_layer)
    with pytest.raises(RuntimeError, match="injected in the forward"), hooks.attached(target_layer, failing_block):
        _raw(model, MIXED)  # raises in the forward, while the layer's hook and the attention capture are on
    _assert_clean(model)
    with pytest.raises(cams.InvalidInputError):  # a bad class, refused after the forward inside the capture
        cams.raw_maps(model, _image(model), methods=MIXED, target=10_000, layer=model.spec.cam_layer)
    _assert_clean(model)
    assert np.abs(_raw(model, MIXED)["rollout"][0] - _raw(model, ["rollout"])["rollout"][0]).max() < 1e-3


def test_compute_labels_the_mixed_results_and_rollout_is_the_same_for_every_class(shapes_vit):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    first = {r.method: r for r in cams.compute(shapes_vit, image, methods=MIXED, target=0)}
    second = {r.method: r for r in cams.compute(shapes_vit, image, methods=MIXED, target=2)}
    assert [first[m].layer for m in MIXED] == [shapes_vit.spec.cam_layer] * 2 + ["every block"] * 3
    assert np.allclose(first["rollout"].heatmap, second["rollout"].heatmap)
    assert not np.allclose(first["grad_rollout"].heatmap, second["grad_rollout"].heatmap)
    assert not np.allclose(first["gradcam"].heatmap, second["gradcam"].heatmap)


@pytest.mark.parametrize("fixture, layer", [("vit_b16", "encoder.ln"), ("swin_t", "norm")])
def test_a_target_layer_that_legrads_scores_run_through_again_keeps_the_passs_activations(fixture, layer, request):
    """LeGrad's layer scores call the final norm again after the pass: the target layer's capture is the pass's own."""
    model = request.getfixturevalue(fixture)
    x = _image(model, 4)
    mixed = cams.raw_maps(model, x, methods=MIXED, target=2, layer=layer)
    separate = {**cams.raw_maps(model, x, methods=GRADCAM, target=2, layer=layer),
                **cams.raw_maps(model, x, methods=READ, target=2, layer=layer)}
    for name in MIXED:
        assert np.abs(mixed[name][0] - separate[name][0]).max() < 1e-3, name
    _assert_clean(model)
