"""Token layouts: `core.layout` turns ViT tokens and Swin's channels-last maps into (B, C, H, W), and CAMs, feature
maps and concepts all go through it. Checked against reshapes written here, independently of the spec's own."""

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import FinerCAM, GradCAM
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core import cams, concepts, features, hooks, layout, models, preprocessing
from core.errors import LayerNotFoundError
from core.models import LoadedModel


def vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, C) -> (B, C, sqrt N, sqrt N): drop the class token, tokens row by row (not the spec's code)."""
    batch, count, channels = tokens.shape
    side = int(round((count - 1) ** 0.5))
    return tokens[:, 1:].transpose(1, 2).reshape(batch, channels, side, side)


def swin_grid(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W)."""
    return maps.movedim(-1, 1)


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    return models.load("vit_b_16", device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def swin() -> LoadedModel:
    return models.load("swin_t", device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def square() -> Image.Image:
    """A photo at the transformers' input size: maps at the tensor's size need no resize to compare."""
    from tests.conftest import sample

    return sample("chelsea").resize((224, 224))


def _output(model: LoadedModel, image: Image.Image, layer: str) -> torch.Tensor:
    with model.lock, hooks.capture(model.module, [layer]) as captured, torch.inference_mode():
        model.module(preprocessing.to_tensor(image, model.spec))
    return captured[layer]


INDEPENDENT = {"vit_b_16": vit_grid, "swin_t": swin_grid}


def test_vit_tokens_drop_the_class_token_and_run_row_by_row(vit, square):
    tokens = _output(vit, square, vit.spec.cam_layer)
    assert tokens.shape == (1, 197, 768) and layout.is_tokens(vit.spec, tokens)
    maps = layout.to_maps(vit.spec, tokens)
    assert maps.shape == (1, 768, 14, 14)
    torch.testing.assert_close(maps, vit_grid(tokens), rtol=0, atol=0)
    row, column = 3, 11  # patch token 1 + 3 * 14 + 11 is the map at (3, 11)
    torch.testing.assert_close(maps[0, :, row, column], tokens[0, 1 + row * 14 + column], rtol=0, atol=0)
    assert layout.reshape_for(vit.spec, tokens) is vit.spec.reshape


def test_swin_channels_last_becomes_channels_first(swin, square):
    stage = _output(swin, square, "features.7")
    assert stage.shape == (1, 7, 7, 768) and layout.is_tokens(swin.spec, stage)
    torch.testing.assert_close(layout.to_maps(swin.spec, stage), swin_grid(stage), rtol=0, atol=0)
    conv = _output(swin, square, "features.0.0")  # the patch embedding's convolution is channels-first already
    assert conv.shape == (1, 96, 56, 56) and not layout.is_tokens(swin.spec, conv)
    assert layout.to_maps(swin.spec, conv) is conv and layout.reshape_for(swin.spec, conv) is None


def test_a_cnn_has_no_token_layout(tiny, chelsea):
    output = _output(tiny, chelsea, tiny.spec.cam_layer)
    assert layout.reshape_for(tiny.spec, output) is None and layout.to_maps(tiny.spec, output) is output


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_layer_maps_is_one_pass_through_the_same_reshape(request, square, fixture):
    model = request.getfixturevalue(fixture)
    tensor = preprocessing.to_tensor(square, model.spec)
    maps, reshape = layout.layer_maps(model, hooks.find(model.module, model.spec.cam_layer), tensor)
    torch.testing.assert_close(maps, INDEPENDENT[model.name](_output(model, square, model.spec.cam_layer)))
    assert reshape is model.spec.reshape and hooks.count(model.module) == 0


def test_layer_maps_refuses_a_layer_without_a_tensor(vit, square):
    tensor = preprocessing.to_tensor(square, vit.spec)
    with pytest.raises(LayerNotFoundError, match="does not output a tensor"):
        layout.layer_maps(vit, hooks.find(vit.module, "encoder.layers.encoder_layer_0.self_attention"), tensor)
    assert hooks.count(vit.module) == 0


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_cams_equal_the_library_with_an_independent_reshape(request, square, fixture):
    model = request.getfixturevalue(fixture)
    tensor = preprocessing.to_tensor(square, model.spec)
    module = hooks.find(model.module, model.spec.cam_layer)
    ours = cams.raw_maps(model, tensor, methods=["gradcam", "finercam"], target=7, layer=model.spec.cam_layer)
    reshape = INDEPENDENT[model.name]
    with GradCAM(model=model.module, target_layers=[module], reshape_transform=reshape) as cam:
        grad = cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(7)])[0]
    with FinerCAM(model=model.module, target_layers=[module], reshape_transform=reshape) as cam:
        finer = cam(input_tensor=tensor.clone().requires_grad_(True), targets=None, target_idx=7)[0]
    np.testing.assert_allclose(ours["gradcam"][0], grad, atol=2e-5)  # the shared pass
    np.testing.assert_allclose(ours["finercam"][0], finer, atol=2e-5)  # the library path
    assert hooks.count(model.module) == 0


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_feature_maps_are_the_independently_reshaped_channels(request, square, fixture):
    model = request.getfixturevalue(fixture)
    result = features.feature_maps(model, square, limit=4)
    maps = INDEPENDENT[model.name](_output(model, square, model.spec.cam_layer))[0].numpy()
    assert result.map_shape == maps.shape
    means = maps.mean(axis=(1, 2))
    assert list(result.channels) == list(np.argsort(-means, kind="stable")[:4])
    first = maps[result.channels[0]]
    np.testing.assert_allclose(result.maps[0], (first - first.min()) / (first.max() - first.min()), atol=1e-5)


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_concepts_equal_the_library_with_an_independent_reshape(request, square, fixture):
    model = request.getfixturevalue(fixture)
    result = concepts.factorize(model, square, k=3)
    tensor = preprocessing.to_tensor(square, model.spec)
    factorizer = DeepFeatureFactorization(model=model.module, target_layer=hooks.find(model.module, result.layer),
                                          reshape_transform=INDEPENDENT[model.name])
    try:
        with torch.no_grad():
            _, explanations = factorizer(tensor, n_components=3)
    finally:
        factorizer.activations_and_grads.release()
    expected = np.clip(np.nan_to_num(explanations[0]), 0, 1)
    assert expected.shape == (3, 224, 224)
    # each concept's heatmap is kept where it dominates (grad-cam's show_factorization_on_image zeroes the rest)
    expected[expected.argmax(axis=0)[None] != np.arange(3)[:, None, None]] = 0
    np.testing.assert_allclose(np.stack([c.heatmap for c in result.concepts]), expected, atol=1e-5)
    assert hooks.count(model.module) == 0


def test_only_layout_applies_the_spec_reshape():
    """Elsewhere in core a spec's `reshape` may be compared with None (is this a token model?), never applied."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((root / "core").rglob("*.py")):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        compared = {id(side) for node in ast.walk(tree) if isinstance(node, ast.Compare)
                    for side in (node.left, *node.comparators)
                    if all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops)}
        for node in ast.walk(tree):
            spec = node.value if isinstance(node, ast.Attribute) and node.attr == "reshape" else None
            named_spec = (isinstance(spec, ast.Name) and spec.id == "spec") or (
                isinstance(spec, ast.Attribute) and spec.attr == "spec")
            if named_spec and id(node) not in compared:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, f"the spec's reshape is applied outside core/layout.py at {found}"
