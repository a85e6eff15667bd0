"""The registry: names, messages, metadata, and that every stage and layer path resolves."""

import importlib.util

import pytest

from core import hooks, models, registry
from core.errors import UnknownModelError


def test_default_first_and_unknown_names_suggest():
    assert registry.names()[0] == "efficientnet_lite0"
    with pytest.raises(UnknownModelError, match="Did you mean 'resnet50'"):
        registry.get("resnet5")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("resnet18"))


def test_lite_weights_are_offline_and_torchvision_metadata_is_read():
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert models.weights_available(name)
        assert registry.get(name).mean == (0.5, 0.5, 0.5)
    spec = registry.get("resnet18")
    assert spec.params == 11_689_512 and spec.gmacs == pytest.approx(1.814, abs=1e-3) and len(spec.categories) == 1000
    assert spec.weights_file.name == "resnet18-f37072fd.pth"


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).source != "tests"])
def test_every_layer_path_in_the_spec_exists(name):
    listed = registry.get(name)
    model = models.load(name, device="cpu", pretrained=models.weights_available(name) and listed.source != "torchvision")
    spec = model.spec  # the layers a spec leaves empty are found when it loads (core.layers)
    if not spec.cam_layer and importlib.util.find_spec("core.layers") is None:
        pytest.skip("the CAM layer and stages are left to core.layers' finder, not on this branch")
    for path in (spec.cam_layer, spec.head, *spec.stages):
        hooks.find(model.module, path)
    assert spec.stages[-1] == spec.cam_layer or spec.cam_layer.startswith(spec.stages[-1])
    assert len(spec.stages) >= 1
