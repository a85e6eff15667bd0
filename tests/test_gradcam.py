"""core.gradcam: Grad-CAM piece by piece equals the Explain page's map, and leaves the model as it was."""

import numpy as np
import pytest
import torch

from core import cams, gradcam, hooks, models, preprocessing
from core.errors import InvalidInputError
from tests.conftest import sample


@pytest.fixture(scope="module")
def resnet18() -> models.LoadedModel:
    return models.load("resnet18", device="cpu", pretrained=False)


@pytest.fixture(scope="module")
def cat():
    return sample("chelsea")


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
    activations, _ = cams.shared_pass(model, tensor, model.module.get_submodule(model.spec.cam_layer),
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
