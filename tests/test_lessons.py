"""core.lessons: the Learn page's maths, checked against PyTorch and against real backbones."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import cams, convolution, gradcam, hooks, lessons, models, preprocessing
from core.errors import InvalidInputError
from tests.conftest import sample


@pytest.fixture(scope="module")
def resnet18() -> models.LoadedModel:
    return models.load("resnet18", device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def cat():
    return sample("chelsea")  # 451 x 300: a non-square input, so heights and widths differ


# ---------------------------------------------------------------------------------------------
# Convolution


def test_identity_kernel_returns_the_image():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = convolution.convolve(image, "identity")
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(convolution.visible(out, "identity"), image)


@pytest.mark.parametrize("name", list(convolution.KERNELS))
def test_convolve_is_pytorchs_conv2d_per_channel(name):
    image = np.random.default_rng(1).random((12, 15, 3), dtype=np.float32)
    weights = torch.from_numpy(convolution.KERNELS[name].weights.copy())
    planes = torch.from_numpy(image).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    expected = F.conv2d(planes, weights[None, None], padding=1)[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(convolution.convolve(image, name), expected, atol=1e-5)
    worked = convolution.worked(image[..., 0], name, at=(0, 14))  # a corner pixel: the kernel hangs over the border
    assert worked.value == pytest.approx(expected[0, 14, 0], abs=1e-5)
    assert float(convolution.KERNELS[name].weights.sum()) in (pytest.approx(1.0), pytest.approx(0.0))


def test_custom_kernel_and_bad_kernels():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    doubled = convolution.convolve(image, [[0, 0, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(doubled, 2 * image)
    edges = convolution.visible(convolution.convolve(image, "sobel_x"), "sobel_x")
    assert edges.dtype == np.uint8 and edges.max() == 255
    with pytest.raises(InvalidInputError, match="Did you mean 'sobel_x'"):
        convolution.convolve(image, "sobelx")
    with pytest.raises(InvalidInputError, match="3x3"):
        convolution.convolve(image, np.ones((5, 5)))
    with pytest.raises(InvalidInputError, match="finite"):
        convolution.convolve(image, [[0, 0, 0], [0, float("nan"), 0], [0, 0, 0]])


# ---------------------------------------------------------------------------------------------
# Output size


@pytest.mark.parametrize(
    ("n", "kernel", "padding", "stride", "dilation", "expected"),
    [
        (224, 7, 3, 2, 1, 112),  # ResNet's stem
        (224, 3, 1, 1, 1, 224),  # 'same' for odd kernels at stride 1
        (224, 3, 0, 1, 1, 222),
        (5, 3, 0, 2, 1, 2),
        (6, 3, 0, 2, 1, 2),  # the floor drops the last, incomplete step
        (7, 2, 0, 2, 1, 3),
        (32, 3, 2, 1, 2, 32),  # dilation 2: the kernel spans 5 pixels
        (1, 1, 0, 1, 1, 1),
    ],
)
def test_output_size_formula(n, kernel, padding, stride, dilation, expected):
    assert convolution.output_size(n, kernel=kernel, padding=padding, stride=stride, dilation=dilation) == expected
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    assert conv(torch.zeros(1, 1, n, n)).shape[-1] == expected


@pytest.mark.parametrize(
    ("n", "kernel", "padding", "stride"), [(112, 3, 1, 2), (7, 3, 0, 2), (8, 3, 1, 2), (5, 2, 0, 2)]
)
def test_ceil_mode_matches_pytorch_pooling(n, kernel, padding, stride):
    pool = nn.MaxPool2d(kernel, stride=stride, padding=padding, ceil_mode=True)
    expected = pool(torch.zeros(1, 1, n, n)).shape[-1]
    assert convolution.output_size(n, kernel=kernel, padding=padding, stride=stride, ceil_mode=True) == expected


@pytest.mark.parametrize(("n", "kernel", "stride"), [(224, 3, 2), (225, 3, 2), (56, 5, 2), (15, 5, 1), (7, 3, 3)])
def test_same_padding_gives_ceil_n_over_s(n, kernel, stride):
    total = convolution.same_padding(n, kernel=kernel, stride=stride)
    padded = F.pad(torch.zeros(1, 1, n, n), (total // 2, total - total // 2) * 2)
    assert F.conv2d(padded, torch.zeros(1, 1, kernel, kernel), stride=stride).shape[-1] == -(-n // stride)


def test_output_size_refuses_impossible_settings():
    with pytest.raises(InvalidInputError, match="does not fit"):
        convolution.output_size(2, kernel=5, padding=0, stride=1)
    with pytest.raises(InvalidInputError, match="stride"):
        convolution.output_size(10, kernel=3, padding=1, stride=0)
    with pytest.raises(InvalidInputError, match="padding"):
        convolution.output_size(10, kernel=3, padding=-1, stride=1)


@pytest.mark.parametrize("backbone", ["lite0", "resnet18"])
def test_formula_agrees_with_every_conv_and_pool_layer(backbone, request, cat):
    model = request.getfixturevalue(backbone)
    expected = {
        type(m).__name__ for m in model.module.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d)
    }
    for image in (None, cat):
        checks = lessons.conv_layers(model, image)
        convs = sum(isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) for m in model.module.modules())
        assert len(checks) == convs  # every layer of these kinds runs, and each is checked
        assert {c.type for c in checks} == expected
        wrong = [c for c in checks if not c.matches]
        assert not wrong, wrong
    assert checks[0].input_hw == (224, 337)  # the cat is wider than tall: whole image, no crop
    assert hooks.count(model.module) == 0
    if backbone == "lite0":
        same = [c.layer for c in checks if c.same]
        assert same == ["conv_stem", "blocks.1.0.conv_dw", "blocks.2.0.conv_dw", "blocks.3.0.conv_dw",
                        "blocks.5.0.conv_dw"]
        stem = checks[0]
        assert stem.output_hw == (112, 169)  # ceil(224 / 2), ceil(337 / 2)
        assert stem.padding == (1, 2) and stem.padding_text == "same: 0+1 / 1+1"  # chosen for this input size
    else:
        pool = next(c for c in checks if c.layer == "maxpool")
        assert pool.kind == "pool" and pool.padding_text == "1" and pool.output_hw == (56, 85)


# ---------------------------------------------------------------------------------------------
# Pooling


def test_pool_max_and_average():
    image = np.array([[1, 2, 5, 6, 9], [3, 4, 7, 8, 9], [0, 0, 1, 1, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(convolution.pool(image, 2, "max"), [[4, 8]])
    np.testing.assert_array_equal(convolution.pool(image, 2, "average"), [[2, 6]])  # 2.5 and 6.5 round to even
    rgb = np.random.default_rng(2).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    pooled = convolution.pool(rgb, 4, "max")
    assert pooled.shape == (7, 10, 3) and pooled.dtype == np.uint8
    torch_max = F.max_pool2d(torch.from_numpy(rgb).permute(2, 0, 1).float()[None], 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pooled, torch_max)
    with pytest.raises(InvalidInputError, match="Unknown pooling"):
        convolution.pool(rgb, 2, "median")
    with pytest.raises(InvalidInputError, match="window"):
        convolution.pool(rgb, 31, "max")


# ---------------------------------------------------------------------------------------------
# Receptive field


def test_receptive_field_of_resnet18_is_435(resnet18):
    steps = lessons.receptive_field(resnet18)
    fields = [s.rf for s in steps]
    assert fields == sorted(fields) and fields[0] == 7
    assert steps[-1] == lessons.FieldStep("layer4.1.conv2", 435, 32)
    assert not any("downsample" in s.layer for s in steps)  # shortcuts are not on the main path
    assert hooks.count(resnet18.module) == 0


def test_receptive_field_of_lite0_grows_and_ends_at_stride_32(lite0):
    steps = lessons.receptive_field(lite0)
    fields = [s.rf for s in steps]
    assert fields == sorted(fields) and steps[0] == lessons.FieldStep("conv_stem", 3, 2)
    assert steps[-1].jump == 32 and steps[-1].layer == "conv_head"


def test_field_outline_draws_a_centred_square():
    picture = np.zeros((100, 120, 3), dtype=np.uint8)
    drawn = convolution.field_outline(picture, 40, jump=8)
    assert drawn.shape == picture.shape and not picture.any()  # the input is not modified
    assert tuple(drawn[30, 45]) == (255, 64, 0)  # the outline's top edge: rows 30 to 69, columns 40 to 79
    assert tuple(drawn[69, 79]) == (255, 64, 0) and tuple(drawn[50, 60]) == (255, 64, 0)  # corner, centre
    assert tuple(drawn[40, 50]) == (0, 0, 0) and tuple(drawn[25, 60]) == (0, 0, 0)  # inside, outside


# ---------------------------------------------------------------------------------------------
# Residual connections, depth, transfer learning


def test_residuals_of_resnet18_and_lite0(resnet18, lite0, cat):
    resnet = lessons.residuals(resnet18, cat)
    assert [b.block for b in resnet.blocks] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert [b.shortcut for b in resnet.blocks if b.shortcut != "identity"] == [
        "layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"
    ]
    assert all(b.branch_norm > 0 and b.shortcut_norm > 0 for b in resnet.blocks)
    lite = lessons.residuals(lite0, cat)
    assert len(lite.blocks) == 9 and len(lite.plain) == 7
    first = lite.blocks[0]
    assert first.block == "blocks.1.1" and first.branch_map.shape == (56, 85) and 0 < first.ratio < 5
    assert hooks.count(resnet18.module) == hooks.count(lite0.module) == 0


def test_residual_maps_are_read_before_in_place_additions(resnet18, cat):
    """ResNet adds the shortcut into bn2's output in place: F(x) must be the value before that."""
    tensor = preprocessing.to_tensor(cat, resnet18.spec)
    block = resnet18.module.layer1[0]
    store = {}

    def keep(_module, _args, output) -> None:  # returns None: the output itself is left alone
        store.setdefault("f", output.clone())

    with torch.inference_mode(), hooks.attached(block.bn2, keep):
        resnet18.module(tensor)
    branch = store["f"][0].abs().mean(dim=0).numpy()
    measured = lessons.residuals(resnet18, cat).blocks[0]
    np.testing.assert_allclose(measured.branch_map, branch, rtol=1e-5, atol=1e-6)


def test_depth_layers(lite0, resnet18):
    assert lessons.depth_layers(lite0) == ["blocks.0", "blocks.1", "blocks.4", "bn2"]
    assert lessons.depth_layers(resnet18) == ["layer1", "layer2", "layer3", "layer4"]  # the stages of core.stages
    assert lessons.depth_layers(lite0, count=1) == ["bn2"]


def test_transfer_plans_count_every_parameter(lite0, resnet18):
    for model, last in ((lite0, "bn2"), (resnet18, "layer4")):
        plan = lessons.transfer_plans(model, classes=10)
        head = model.module.get_submodule(model.spec.head)
        backbone = model.params - sum(p.numel() for p in head.parameters())
        assert plan.new_head == (head.in_features + 1) * 10 and plan.last_stage == last
        extract, last_stage, everything = plan.plans
        assert extract.trainable == plan.new_head and extract.frozen == backbone
        assert all(p.total == backbone + plan.new_head for p in plan.plans)
        assert extract.trainable < last_stage.trainable < everything.trainable and everything.frozen == 0
    layer4 = sum(p.numel() for p in resnet18.module.layer4.parameters())
    assert lessons.transfer_plans(resnet18, classes=3).plans[1].trainable == layer4 + 513 * 3
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        lessons.transfer_plans(lite0, classes=1)


# ---------------------------------------------------------------------------------------------
# Grad-CAM


@pytest.mark.parametrize("backbone", ["lite0", "resnet18"])
def test_gradcam_parts_equal_the_explain_pages_map(backbone, request, cat):
    model = request.getfixturevalue(backbone)
    parts = gradcam.parts(model, cat, top=6)
    tensor = preprocessing.to_tensor(cat, model.spec)
    maps = cams.raw_maps(model, tensor, methods=["gradcam"], target=parts.target, layer=model.spec.cam_layer)
    raw, _ = maps["gradcam"]
    np.testing.assert_allclose(parts.heatmap, raw, atol=1e-6)
    assert parts.heatmap.shape == tuple(tensor.shape[-2:]) and parts.overlay.shape == (*raw.shape, 3)
    assert parts.grid == (7, 11) and parts.maps.shape == (6, 7, 11) and len(parts.channels) == 6
    weights = parts.weights[list(parts.largest)]
    assert list(weights) == sorted(weights, reverse=True) and weights[0] == parts.weights.max()
    contributions = parts.contributions[list(parts.channels)]
    assert list(contributions) == sorted(contributions, reverse=True) and contributions[0] == parts.contributions.max()
    activations, _ = cams._shared_pass(model, tensor, model.module.get_submodule(model.spec.cam_layer),
                                       model.spec.cam_layer, parts.target, False)
    np.testing.assert_allclose(parts.means, activations[0].mean(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-6)
    assert parts.coarse.max() == pytest.approx(1.0) and parts.coarse.min() >= 0
    assert hooks.count(model.module) == 0
    assert all(p.grad is None for p in model.module.parameters())


def test_gradcam_parts_for_a_chosen_class_and_bad_input(lite0, cat):
    parts = gradcam.parts(lite0, cat, target=281, top=3)
    assert parts.target == 281 and parts.label == "tabby" and parts.layer == "bn2"
    with pytest.raises(InvalidInputError, match="between 0 and 999"):
        gradcam.parts(lite0, cat, target=1000)
    with pytest.raises(RuntimeError, match="outside torch.inference_mode"), torch.inference_mode():
        gradcam.parts(lite0, cat)
    assert hooks.count(lite0.module) == 0


def test_hooks_are_removed_when_the_forward_pass_fails(lite0):
    """A probe that raises inside a hook still leaves the shared model clean."""

    def boom(*_args):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        lessons._probe(lite0, None, [(lite0.module.conv_stem, boom), (lite0.module.bn2, boom)])
    assert hooks.count(lite0.module) == 0
