"""Deep Feature Factorization and Guided Grad-CAM."""

import numpy as np
import pytest
import torch

from core import cams, concepts, hooks, models
from core.errors import InvalidInputError, LayerNotFoundError
from tests.conftest import sample


def test_concepts_cover_the_image_and_are_named(lite0):
    image = sample("astronaut")
    result = concepts.factorize(lite0, image, k=4)
    assert result.named and len(result.concepts) == 4 and result.layer == "bn2"
    assert result.overlay.shape == (image.height, image.width, 3) and result.overlay.dtype == np.uint8
    assert sum(c.share for c in result.concepts) == pytest.approx(1.0, abs=1e-6)
    for concept in result.concepts:
        assert concept.heatmap.shape == (image.height, image.width)
        assert 0 <= concept.heatmap.min() <= concept.heatmap.max() <= 1
        probs = [p for _, _, p in concept.labels]
        assert len(concept.labels) == 2 and probs == sorted(probs, reverse=True)
    labels = {label for c in result.concepts for _, label, _ in c.labels}
    assert labels & {"space shuttle", "football helmet", "crash helmet", "missile", "projectile"}, labels
    assert hooks.count(lite0.module) == 0


def test_concepts_on_an_early_layer_are_unnamed_and_bad_k_is_refused(lite0, chelsea):
    result = concepts.factorize(lite0, chelsea, k=3, layer="blocks.3")
    assert not result.named and all(c.labels == () for c in result.concepts)
    with pytest.raises(InvalidInputError, match="between 2 and"):
        concepts.factorize(lite0, chelsea, k=1)
    with pytest.raises(LayerNotFoundError):
        concepts.factorize(lite0, chelsea, layer="global_pool")


def test_concepts_on_vit_through_its_reshape(chelsea):
    model = models.load("vit_b_16", device="cpu", pretrained=False)
    result = concepts.factorize(model, chelsea, k=3)
    assert result.named and len(result.concepts) == 3


def test_guided_gradcam_leaves_the_shared_model_untouched(lite0, chelsea):
    relu6_before = sum(isinstance(m, torch.nn.ReLU6) for m in lite0.module.modules())
    result = cams.guided(lite0, chelsea, target=285)
    assert result.target == 285 and result.label == "Egyptian cat"
    for array in (result.guided_backprop, result.guided_gradcam):
        assert array.shape == (chelsea.height, chelsea.width, 3) and array.dtype == np.uint8 and array.std() > 1
    assert sum(isinstance(m, torch.nn.ReLU6) for m in lite0.module.modules()) == relu6_before
    assert hooks.count(lite0.module) == 0 and all(not p.requires_grad for p in lite0.module.parameters())
