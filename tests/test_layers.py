"""`core.layers`: the CAM layer, layout and stages read from one pass through the network (issue 13), and the
engine's activations after in-place ops (the DenseNet-121 bug), each checked against pytorch-grad-cam."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core import cams, hooks, layers, layout, models, registry
from core.models import LoadedModel
from core.registry import BackboneSpec

#: today's hand-written defaults, which `find` must reproduce from the network alone. One justified change:
#: torchvision's Swin-T ends with a LayerNorm over its last stage (`norm`) before pooling; the classifier reads
#: that normalised output, not `features.7`'s (the DenseNet lesson: the layer the classifier consumes).
DEFAULTS = {
    "resnet18": ("layer4", ("layer1", "layer2", "layer3", "layer4")),
    "resnet50": ("layer4", ("layer1", "layer2", "layer3", "layer4")),
    "vgg16": ("features.29", ("features.3", "features.8", "features.15", "features.22", "features.29")),
    "alexnet": ("features.11", ("features.1", "features.4", "features.11")),
    "densenet121": ("features.norm5", ("features.denseblock1", "features.denseblock2", "features.denseblock3",
                                       "features.norm5")),
    "inception_v3": ("Mixed_7c", ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")),
    "mobilenet_v3_large": ("features.16", ("features.3", "features.6", "features.12", "features.16")),
    "efficientnet_b0": ("features.8", ("features.1", "features.2", "features.3", "features.5", "features.8")),
    "convnext_tiny": ("features.7", ("features.1", "features.3", "features.5", "features.7")),
    "vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", tuple(f"encoder.layers.encoder_layer_{i}" for i in (2, 5, 8))
                 + ("encoder.layers.encoder_layer_11.ln_1",)),
    "swin_t": ("norm", ("features.1", "features.3", "features.5", "norm")),
    "efficientnet_lite0": ("bn2", ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6", "bn2")),
}


def _built(name: str) -> tuple[BackboneSpec, nn.Module]:
    spec = registry.get(name)
    torch.manual_seed(0)
    return spec, spec.build(False).eval().requires_grad_(False)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_find_reproduces_the_hand_written_defaults(name):
    spec, module = _built(name)
    size = spec.input_size if spec.fixed_size else (128, 128)
    found = layers.find(module, input_size=size, head=spec.head)
    layer, stages = DEFAULTS[name]
    assert found.cam_layer == layer
    # every stage end the registry names at a resolution drop is found, the stem may be a stage of its own
    assert set(stages) <= set(found.stages) and found.stages[-1] == layer, found.stages
    assert found.reason == "" and hooks.count(module) == 0
    assert list(found.shapes)[0] != "" and found.shapes[layer] == tuple(found.shapes[layer])
    if name == "vit_b_16":
        assert (found.layout, found.prefix_tokens, found.grid) == ("tokens", 1, (14, 14))
        assert isinstance(found.reshape, layout.Tokens)
    elif name == "swin_t":
        assert found.layout == "nhwc" and isinstance(found.reshape, layout.ChannelsLast)
    else:
        assert found.layout == "nchw" and found.reshape is None


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vit_b_16", "swin_t"])
def test_the_registry_leaves_the_layer_to_load_which_finds_it(name):
    assert registry.get(name).cam_layer == "" and registry.get(name).stages == ()
    loaded = models.load(name, device="cpu", pretrained=False)
    layer, stages = DEFAULTS[name]
    assert loaded.spec.cam_layer == layer and set(stages) <= set(loaded.spec.stages)
    assert (loaded.spec.reshape is not None) == (name in ("vit_b_16", "swin_t"))
    assert hooks.count(loaded.module) == 0


def test_shapes_follow_execution_order():
    spec, module = _built("resnet18")
    found = layers.find(module, input_size=(64, 96), head="fc")
    paths = list(found.shapes)
    assert paths.index("conv1") < paths.index("layer1.0.conv1") < paths.index("layer4") < paths.index("fc")
    assert found.shapes["layer4"] == (1, 512, 2, 3) and found.grid == (2, 3)  # a non-square input
    assert found.shapes["fc"] == (1, 1000)


def _model(module: nn.Module, found: layers.Found, size, head: str) -> LoadedModel:
    with torch.inference_mode():
        classes = module(torch.zeros(1, 3, *size)).shape[1]
    spec = BackboneSpec(name="t", title="t", source="test", build=lambda p: module, cam_layer=found.cam_layer,
                        head=head, categories=tuple(map(str, range(classes))), weights_file=None, input_size=size,
                        reshape=found.reshape, family="transformer" if found.reshape else "cnn")
    return LoadedModel(spec=spec, module=module, device=torch.device("cpu"), pretrained=False, params=0)


def _r(model: LoadedModel, layer: str, method: str, cls, reshape=None, size=(96, 96), target=3) -> float:
    tensor = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    ours = cams.raw_maps(model, tensor, methods=[method], target=target, layer=layer)[method][0]
    with cls(model=model.module, target_layers=[model.module.get_submodule(layer)], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]
    assert ours.std() > 0 and theirs.std() > 0
    return float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])


def _timm(name: str, **options) -> nn.Module:
    import timm

    torch.manual_seed(0)
    module = timm.create_model(name, pretrained=False, **options).eval().requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.Linear) and not m.weight.any():
            m.weight.normal_(0, 0.02)
    return module


def test_a_non_square_token_grid_with_a_class_token():
    module = _timm("vit_tiny_patch16_224", img_size=(64, 96))
    found = layers.find(module, input_size=(64, 96), head="head", prefix_tokens=module.num_prefix_tokens)
    assert found.cam_layer == "blocks.11.norm1"  # the final norm gives its patch tokens no gradient
    assert (found.layout, found.prefix_tokens, found.grid) == ("tokens", 1, (4, 6))
    tokens = torch.arange(2 * 25 * 3, dtype=torch.float32).reshape(2, 25, 3)
    maps = found.reshape(tokens)
    assert maps.shape == (2, 3, 4, 6)
    torch.testing.assert_close(maps[1, :, 2, 5], tokens[1, 1 + 2 * 6 + 5])  # row by row after the class token
    assert _r(_model(module, found, (64, 96), "head"), found.cam_layer, "gradcam", GradCAM, found.reshape,
              size=(64, 96)) >= 0.99


@pytest.mark.parametrize(("name", "options", "prefix"), [
    ("deit_tiny_distilled_patch16_224", {}, 2),  # class + distillation tokens
    ("vit_small_patch14_reg4_dinov2", {"img_size": 126}, 5),  # class + 4 registers
    ("vit_tiny_patch16_224", {"img_size": 64, "class_token": False, "global_pool": "avg"}, 0),
])
def test_prefix_tokens_are_inferred_and_match_timm(name, options, prefix):
    module = _timm(name, **options)
    side = options.get("img_size", 224)
    assert module.num_prefix_tokens == prefix
    inferred = layers.find(module, input_size=(side, side), head="head")
    given = layers.find(module, input_size=(side, side), head="head", prefix_tokens=prefix)
    assert inferred.prefix_tokens == given.prefix_tokens == prefix
    assert inferred.cam_layer == given.cam_layer
    if prefix == 0:  # pooled over every token: the blocks' output (timm's `norm` is an Identity, fc_norm pooled)
        assert inferred.cam_layer == "blocks"


def test_nothing_spatial_and_a_convolution_head_are_reasons_not_failures():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    found = layers.find(flat, input_size=(32, 32), head="1")
    assert found.cam_layer == "" and "no layer keeps a spatial layout" in found.reason and found.stages == ()
    from torchvision.models import squeezenet1_1

    squeeze = squeezenet1_1().eval().requires_grad_(False)
    found = layers.find(squeeze, input_size=(96, 96), head="classifier.1")
    assert found.cam_layer.startswith("features.") and "is a Conv2d, not a Linear" in found.reason


def test_complete_fills_only_what_the_registry_left_empty(monkeypatch):
    named = registry.get("efficientnet_lite0")
    assert layers.complete(named, object()) is named  # named fields: no pass at all
    blank = replace(registry.get("resnet18"), name="blank_resnet18", cam_layer="", stages=())
    _, module = _built("resnet18")
    done = layers.complete(blank, module)
    assert done.cam_layer == "layer4" and done.stages[-1] == "layer4" and "layer1" in done.stages
    monkeypatch.setitem(registry._SPECS, "blank_resnet18", blank)
    loaded = models.load("blank_resnet18", device="cpu", pretrained=False)
    assert loaded.spec.cam_layer == "layer4" and hooks.count(loaded.module) == 0


def test_complete_gives_a_token_model_its_reshape(monkeypatch):
    spec = replace(registry.get("vit_b_16"), name="blank_vit", cam_layer="", stages=(), reshape=None)
    _, module = _built("vit_b_16")
    module.heads.head.weight.normal_(0, 0.02)
    done = layers.complete(spec, module)
    assert done.cam_layer == "encoder.layers.encoder_layer_11.ln_1" and done.reshape == layout.Tokens(1, (14, 14))
    assert done.prefix_tokens == 1


# ---------------------------------------------------------------------------------------------
# in-place ops after the CAM layer


def test_densenet_cams_see_the_relu_its_classifier_reads():
    """DenseNet-121's `features.norm5` goes through F.relu(inplace=True) before the classifier: pytorch-grad-cam
    sees the post-ReLU maps (r was 0.12 for XGrad-CAM before the engine read them after the forward)."""
    _, module = _built("densenet121")
    found = layers.find(module, input_size=(128, 128), head="classifier")
    model = _model(module, found, (128, 128), "classifier")
    for method, cls in (("gradcam", GradCAM), ("xgradcam", XGradCAM)):
        assert _r(model, found.cam_layer, method, cls, size=(128, 128), target=0) >= 0.99, method


def _activations(model: LoadedModel, layer: str, tensor: torch.Tensor) -> torch.Tensor:
    module = model.module.get_submodule(layer)
    activations, _ = cams.shared_pass(model, tensor, module, layer, 0, True)
    return activations


def test_an_in_place_sum_is_not_the_layer_but_an_in_place_relu_is():
    """ResNet's `bn1` is followed by ReLU(inplace=True): the activation is the ReLU's output (what the network
    reads, as pytorch-grad-cam sees it). A block's last `bn2` is followed by `out += identity`: that sum is another
    quantity, so the activation stays bn2's own output (pytorch-grad-cam on the CPU would show the sum, and on a
    GPU bn2's output: its `.cpu()` copies before the sum)."""
    _, module = _built("resnet18")
    found = layers.find(module, input_size=(96, 96), head="fc")
    model = _model(module, found, (96, 96), "fc")
    tensor = torch.randn(1, 3, 96, 96)
    with hooks.capture(module, ["relu", "layer4.1.bn2"]) as captured, torch.inference_mode():
        module(tensor)  # capture clones at the hook: the layer's own output, before any in-place op
    relu_after_bn1 = captured["relu"]  # the stem's ReLU module, whose first call rewrites bn1's output
    torch.testing.assert_close(_activations(model, "bn1", tensor), relu_after_bn1)
    torch.testing.assert_close(_activations(model, "layer4.1.bn2", tensor), captured["layer4.1.bn2"])
    assert _r(model, "bn1", "xgradcam", XGradCAM) >= 0.99  # was -0.003 with the pre-ReLU maps
