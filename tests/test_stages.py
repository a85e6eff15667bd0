"""One notion of a stage: the records of core.stages, and every page that says "stage" agreeing on them."""

import pytest
import torch
from torch import nn

from core import lessons, models, registry, sanity, stages, training
from core.errors import InvalidInputError

BACKBONES = [name for name in registry.names() if registry.get(name).source != "tests"]


@pytest.fixture(scope="module", params=BACKBONES)
def backbone(request) -> models.LoadedModel:
    return models.load(request.param, device="cpu", pretrained=False)


def test_learn_and_transfer_learning_pages_agree_for_every_backbone(backbone):
    """The Learn page's plans and the Transfer learning page's summary name the same modules and counts."""
    found = stages.of(backbone)
    new_head = (backbone.module.get_submodule(backbone.spec.head).in_features + 1) * 5
    transfer = lessons.transfer_plans(backbone, classes=5)
    assert [plan.unfreeze for plan in transfer.plans] == [0, 1, None]
    for plan in transfer.plans:
        summary = training.parameter_summary(backbone, plan.strategy, plan.unfreeze, classes=5)
        trains = [group for group in summary.groups if group.trainable]
        assert plan.modules == tuple(module for group in trains for module in group.modules), plan.name
        assert plan.trainable == summary.trainable and plan.frozen == summary.frozen, plan.name
        unfrozen = stages.last(found, plan.unfreeze) if plan.strategy == "fine-tune" else ()
        assert plan.trainable == new_head + sum(stage.params for stage in unfrozen), plan.name
        assert plan.trainable_stages == (*(stage.name for stage in unfrozen), backbone.spec.head)
    assert transfer.last_stage == found[-1].name


def test_every_backbone_has_sensible_stages(backbone):
    """Every stage of the spec owns parameters, they partition the network with the head, the last one is real."""
    found = stages.of(backbone)
    assert tuple(stage.name for stage in found) == backbone.spec.stages  # none dropped: CAM through depth shows them all
    head = stages.head(backbone.module, backbone.spec.head)
    owned = [name for stage in (*found, head) for name in stage.parameters]
    assert sorted(owned) == sorted(name for name, _ in backbone.module.named_parameters())  # each exactly once
    backbone_params = sum(stage.params for stage in found)
    assert backbone_params + head.params == sum(p.numel() for p in backbone.module.parameters())
    assert found[-1].params >= 0.05 * backbone_params, "fine-tuning 'the last stage' would train almost nothing"
    modules = dict(backbone.module.named_modules())
    assert all(module in modules or module in dict(backbone.module.named_parameters())
               for stage in found for module in stage.modules)


def test_stage_records_of_a_small_network():
    network = nn.Sequential()
    network.add_module("stem", nn.Conv2d(3, 4, 3))
    network.add_module("a", nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()))
    network.add_module("between", nn.BatchNorm2d(4))
    network.add_module("b", nn.Conv2d(4, 8, 1))
    network.add_module("after", nn.Linear(8, 8))
    network.add_module("head", nn.Linear(8, 2))
    found = stages.split(network, ("a", "b", "missing", "head.x"), "head")
    assert [s.name for s in found] == ["a", "b"]
    assert found[0].modules == ("stem", "a") and found[1].modules == ("between", "b", "after")
    assert found[0].params == 4 * 27 + 4 + 4 * 4 + 4
    assert stages.split(network, (), "head")[0].name == stages.BACKBONE
    assert stages.head(network, "head").params == 18 and stages.head(network, "nowhere").modules == ()
    assert stages.last(found, 1) == found[1:] and stages.last(found, None) == found and stages.last(found, 0) == ()
    with pytest.raises(InvalidInputError, match="2 stages"):
        stages.last(found, 3)


def test_the_full_sanity_cascade_randomises_every_parameter(lite0):
    """The cascade's steps are the head and the stage records: at the end nothing pretrained is left."""
    assert sanity.cascade(lite0) == [lite0.spec.head, *reversed(lite0.spec.stages)]
    copy = sanity.randomized(lite0, len(sanity.cascade(lite0)))
    original = dict(lite0.module.named_parameters())
    kept = [name for name, p in copy.module.named_parameters()
            if torch.equal(p, original[name]) and p.ndim >= 2]  # 1-d ones may already be 1 or 0
    assert kept == []
    one = sanity.randomized(lite0, 2)  # the head and the last stage (conv_head + bn2), nothing else
    changed = {name.split(".")[0] for name, p in one.module.named_parameters() if not torch.equal(p, original[name])}
    assert changed == {"classifier", "conv_head", "bn2"}
