"""core.lessons: what a loaded network does, layer by layer, checked against its own forward pass."""

import numpy as np
import pytest
import torch
from torch import nn

from core import hooks, lessons, models, preprocessing
from core.errors import InvalidInputError
from tests.conftest import sample


@pytest.fixture(scope="module")
def resnet18() -> models.LoadedModel:
    return models.load("resnet18", device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def cat():
    return sample("chelsea")  # 451 x 300: a non-square input, so heights and widths differ


# ---------------------------------------------------------------------------------------------
# Convolution and pooling layers


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
    assert lessons.depth_layers(resnet18) == ["relu", "layer1", "layer3", "layer4"]  # 4 of its stages (stem first)
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



def test_hooks_are_removed_when_the_forward_pass_fails(lite0):
    """A probe that raises inside a hook still leaves the shared model clean."""

    def boom(*_args):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        lessons._probe(lite0, None, [(lite0.module.conv_stem, boom), (lite0.module.bn2, boom)])
    assert hooks.count(lite0.module) == 0
