"""Attention rollout, gradient-weighted rollout and LeGrad against independent references on the same model."""

import threading

import numpy as np
import pytest
import torch
from torch import nn

from core import attention, hooks, models, registry
from core.errors import InvalidInputError, UnknownMethodError

from . import attention_reference as reference
from .attention_reference import explicit_vit_forward
from .conftest import TINY


def _loaded(module: nn.Module, size: int) -> models.LoadedModel:
    module.eval().requires_grad_(False)
    spec = registry.BackboneSpec(
        name="attention_test", title="attention test", source="tests", build=lambda _p: module, cam_layer="",
        head="", categories=tuple(str(i) for i in range(10)), weights_file=None, input_size=(size, size),
        fixed_size=True, family="transformer",
    )
    return models.LoadedModel(spec=spec, module=module, device=torch.device("cpu"), pretrained=False, params=0)


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # torchvision zero-initialises the head: every class would have no gradient
            if p.dim() > 1 and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module


@pytest.fixture(scope="module")
def vit() -> models.LoadedModel:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return _loaded(_randomise(VisionTransformer(image_size=64, patch_size=16, num_layers=3, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10), 0), 64)


@pytest.fixture(scope="module")
def vit_b16() -> models.LoadedModel:
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    return _loaded(_randomise(vit_b_16(weights=None), 1), 224)


@pytest.fixture(scope="module")
def swin() -> models.LoadedModel:
    """Stage 1 is 10 x 10 tokens in windows of 4: padding to 12, shifted by 2; merging to 5 x 5 (padded to 8)."""
    from torchvision.models import SwinTransformer

    torch.manual_seed(0)
    module = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                             stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():
        for block in _attention_modules(module):
            block.qkv.bias.zero_()  # padding tokens then carry v = 0: the dense check below is exact
            block.relative_position_bias_table.normal_(0, 1.0)
    return _loaded(_randomise(module, 2), 40)


def _attention_modules(module: nn.Module) -> list[nn.Module]:
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    return [m for m in module.modules() if isinstance(m, nn.MultiheadAttention | ShiftedWindowAttention)]


def _unit_resized(grid: torch.Tensor, size: int) -> np.ndarray:
    """The maps' documented convention: scaled to [0, 1] on the token grid, then resized bilinearly."""
    import cv2

    grid = ((grid - grid.min()) / (grid.max() - grid.min() + 1e-7)).numpy().astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)


def _image(seed: int, size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _grid(model, x, method, target=0, **options):
    return attention.grids(model, x, methods=[method], target=target, **options)[method][0].flatten()


@pytest.mark.parametrize(("fusion", "discard_ratio"), [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.6)])
def test_rollout_equals_the_published_recurrence_on_explicit_attention(vit, fusion, discard_ratio):
    x = _image(0, 64)
    logits, maps = explicit_vit_forward(vit.module, x)
    with torch.no_grad():
        assert torch.allclose(logits, vit.module(x), atol=1e-5)  # the manual forward is the model's
    ours = _grid(vit, x, "rollout", head_fusion=fusion, discard_ratio=discard_ratio)
    assert torch.allclose(ours, reference.rollout(maps, fusion, discard_ratio), rtol=1e-4, atol=1e-7)


def test_rollout_and_grad_rollout_on_vit_b16_equal_the_references(vit_b16):
    x = _image(1, 224)
    logits, maps = explicit_vit_forward(vit_b16.module, x)
    assert torch.allclose(_grid(vit_b16, x, "rollout"), reference.rollout(maps), rtol=1e-4, atol=1e-7)
    expected = reference.grad_rollout(logits, maps, 7)
    assert torch.allclose(_grid(vit_b16, x, "grad_rollout", 7), expected, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("target", [0, 5, 9])
def test_grad_rollout_equals_chefer_recurrence(vit, target):
    x = _image(2, 64)
    logits, maps = explicit_vit_forward(vit.module, x)
    assert torch.allclose(_grid(vit, x, "grad_rollout", target), reference.grad_rollout(logits, maps, target),
                          rtol=1e-4, atol=1e-8)


def test_legrad_equals_torchcam_legrad_on_vit_b16(vit_b16):
    from torchcam.methods import LeGrad

    correlations = []
    for seed, target in [(3, 1), (3, 500), (4, 42)]:
        x = _image(seed, 224)
        ours = _grid(vit_b16, x, "legrad", target)
        with LeGrad(vit_b16.module, list(vit_b16.module.encoder.layers)) as extractor:
            extractor.model(x)
            theirs = extractor(target)[0][0].flatten()
        correlations.append(np.corrcoef(ours.numpy(), theirs.detach().numpy())[0, 1])
    assert hooks.count(vit_b16.module) == 0
    assert min(correlations) >= 0.99, correlations


# ---------------------------------------------------------------------------------------------
# The capture leaves the model as it found it


def _patched(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if "forward" in m.__dict__]


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_capture_leaves_the_logits_unchanged_and_nothing_patched(fixture, request):
    model = request.getfixturevalue(fixture)
    x = _image(5, model.spec.input_size[0])
    with torch.no_grad():
        plain = model.module(x)
    with attention.recording(model, outputs=True) as records, torch.no_grad():
        captured = model.module(x)
        assert _patched(model.module) and hooks.count(model.module) > 0
    assert len(records) == len(_attention_modules(model.module))
    assert torch.allclose(plain, captured, atol=1e-5)
    attention.raw_maps(model, x, methods=list(attention.METHODS), target=1)
    assert _patched(model.module) == [] and hooks.count(model.module) == 0
    assert all(p.grad is None for p in model.module.parameters())


def test_nothing_left_patched_when_the_call_raises(vit):
    x = _image(6, 64)
    with pytest.raises(InvalidInputError, match="between 0 and 9"):
        attention.raw_maps(vit, x, methods=["legrad"], target=10)  # raises inside the capture, after the forward
    assert _patched(vit.module) == [] and hooks.count(vit.module) == 0
    with pytest.raises(ZeroDivisionError), attention.recording(vit, outputs=True):
        vit.module(x)
        1 / 0  # noqa: B018
    assert _patched(vit.module) == [] and hooks.count(vit.module) == 0
    with torch.no_grad():
        assert torch.allclose(vit.module(x), explicit_vit_forward(vit.module, x)[0], atol=1e-5)


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_depth_is_rollout_up_to_each_block(fixture, request):
    model = request.getfixturevalue(fixture)
    x = _image(13, model.spec.input_size[0])
    maps = attention.depth(model, x)
    assert len(maps) == len(_attention_modules(model.module))
    assert np.allclose(maps[-1], attention.raw_maps(model, x, methods=["rollout"], target=0)["rollout"][0], atol=1e-6)
    if fixture == "vit":
        _, explicit = explicit_vit_forward(model.module, x)
        assert np.allclose(maps[0], _unit_resized(reference.rollout(explicit[:1]).view(4, 4), 64), atol=1e-6)


def test_capture_holds_the_models_lock(vit):
    seen = []
    with attention.recording(vit):
        thread = threading.Thread(target=lambda: seen.append(vit.lock.acquire(blocking=False)))
        thread.start()
        thread.join()
    assert seen == [False]


def test_maps_are_unit_range_at_the_input_size(vit):
    maps = attention.raw_maps(vit, _image(7, 64), methods=["rollout", "grad_rollout", "legrad"], target=3)
    assert list(maps) == ["rollout", "grad_rollout", "legrad"]
    for heatmap, seconds in maps.values():
        assert heatmap.shape == (64, 64) and heatmap.dtype == np.float32
        assert 0 <= heatmap.min() < 0.1 and 0.9 < heatmap.max() <= 1 and seconds > 0  # scaled on the grid, then resized


def test_class_specific_methods_depend_on_the_class_rollout_does_not(vit):
    x = _image(8, 64)
    first = attention.raw_maps(vit, x, methods=list(attention.METHODS), target=0)
    second = attention.raw_maps(vit, x, methods=list(attention.METHODS), target=4)
    for name, method in attention.METHODS.items():
        same = np.allclose(first[name][0], second[name][0], atol=1e-6)
        assert same != method.class_specific, name


def test_unknown_methods_options_and_backbones_are_refused(vit, tiny):
    x = _image(9, 64)
    with pytest.raises(UnknownMethodError, match="rollout"):
        attention.raw_maps(vit, x, methods=["rolout"], target=0)
    with pytest.raises(InvalidInputError, match="mean, max, min"):
        attention.raw_maps(vit, x, methods=["rollout"], target=0, head_fusion="median")
    with pytest.raises(InvalidInputError, match="discard ratio"):
        attention.raw_maps(vit, x, methods=["rollout"], target=0, discard_ratio=1.0)
    assert attention.supports(vit) and not attention.supports(tiny)
    with pytest.raises(InvalidInputError, match="Grad-CAM"):
        attention.raw_maps(tiny, x, methods=["rollout"], target=0)
    assert tiny.spec.name == TINY


# ---------------------------------------------------------------------------------------------
# Swin: windows, shifts, padding and patch merging


def _dense(window, weights):
    """The (H*W x H*W) token matrix of one head (or fused heads) of a windowed block: row i = e_i A."""
    n = window.height * window.width
    return window.propagate(torch.eye(n), weights)


def test_swin_window_positions_reproduce_the_attention_output(swin):
    """Dense matrices built from the window layout give the attention module's own output (shift and padding)."""
    seen = []
    handles = [a.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
               for a in _attention_modules(swin.module)]
    try:
        with attention.recording(swin) as records, torch.no_grad():
            swin.module(_image(10, 40))
    finally:
        for handle in handles:
            handle.remove()
    assert {r.window.shift for r in records} == {(0, 0), (2, 2)} and records[0].window.height == 10
    for (module, x, out), rec in zip(seen, records, strict=True):
        _, h, w, dim = x.shape
        heads = module.num_heads
        v = (x.reshape(h * w, dim) @ module.qkv.weight[2 * dim:].T).view(h * w, heads, dim // heads)
        mixed = torch.cat([_dense(rec.window, rec.weights[:, i]) @ v[:, i] for i in range(heads)], dim=1)
        assert torch.allclose(module.proj(mixed), out.reshape(h * w, dim), atol=1e-5)


def _merge(fine_h, fine_w, coarse_h, coarse_w):
    """Patch merging as a mixing matrix: each coarse token is a quarter of each of its 2 x 2 children."""
    m = torch.zeros(coarse_h * coarse_w, fine_h * fine_w)
    for y in range(fine_h):
        for x in range(fine_w):
            m[(y // 2) * coarse_w + x // 2, y * fine_w + x] = 0.25
    return m


@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_swin_windowed_rollout_equals_the_dense_rollout_with_merges(swin, method):
    x = _image(11, 40)
    target = 3
    with attention.recording(swin) as records, torch.enable_grad():
        logits = swin.module(x)
        grads = torch.autograd.grad(logits[0, target], [r.weights for r in records])
    matrices = []
    for rec, grad in zip(records, grads, strict=True):
        if method == "rollout":
            dense = _dense(rec.window, rec.weights.detach().mean(1)) + torch.eye(rec.window.height * rec.window.width)
            matrices.append(dense / dense.sum(-1, keepdim=True))
        else:
            fused = (grad * rec.weights.detach()).clamp(min=0).mean(1)
            matrices.append(torch.eye(rec.window.height * rec.window.width) + _dense(rec.window, fused))
    last = records[-1].window
    r = torch.full((1, last.height * last.width), 1 / (last.height * last.width))
    for i in reversed(range(len(records))):
        if i + 1 < len(records) and records[i + 1].stage != records[i].stage:
            a, b = records[i].window, records[i + 1].window
            r = r @ _merge(a.height, a.width, b.height, b.width)
        r = r @ matrices[i]
    ours = _grid(swin, x, method, target)
    assert ours.shape == (100,)
    assert torch.allclose(ours, r[0], rtol=1e-4, atol=1e-8)


def test_swin_maps_at_the_input_size_and_legrad_on_the_last_stage(swin):
    x = _image(12, 40)
    grids = attention.grids(swin, x, methods=list(attention.METHODS), target=2)
    assert grids["rollout"][0].shape == (10, 10) and grids["legrad"][0].shape == (5, 5)
    maps = attention.raw_maps(swin, x, methods=list(attention.METHODS), target=2)
    assert all(m.shape == (40, 40) and 0 <= m.min() and m.max() <= 1 for m, _ in maps.values())
    other = attention.raw_maps(swin, x, methods=list(attention.METHODS), target=7)
    assert np.allclose(maps["rollout"][0], other["rollout"][0])
    assert not np.allclose(maps["legrad"][0], other["legrad"][0])
    assert _patched(swin.module) == [] and hooks.count(swin.module) == 0
