"""Cascading randomisation changes the output and the heatmap, and leaves the cached model untouched."""

import numpy as np
import pytest
import torch

from core import cams, datasets, faithfulness, models, predictions, sanity
from core.errors import InvalidInputError


def _state(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def test_cascade_changes_predictions_and_maps_but_not_the_original(lite0, chelsea):
    before = _state(lite0)
    layers = sanity.cascade(lite0)
    assert layers[0] == "classifier" and layers[1] == "bn2" and layers[-1] == "blocks.0"
    (trained,) = cams.compute(lite0, chelsea, methods=["gradcam"], target=285)
    similarities = []
    for steps in (1, 3, len(layers)):
        copy = sanity.randomized(lite0, steps)
        assert copy.lock is not lite0.lock and copy.module is not lite0.module and not copy.pretrained
        probs = predictions.predict(copy, chelsea, top_k=1)[0]
        assert probs.index != 285 or probs.prob < 0.2
        (random,) = cams.compute(copy, chelsea, methods=["gradcam"], target=285)
        similarities.append(faithfulness.rank_correlation(trained.heatmap, random.heatmap))
    assert similarities[-1] < 0.5, similarities  # a fully random network looks elsewhere
    after = _state(lite0)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert predictions.predict(lite0, chelsea)[0].index in range(281, 286)


def test_zero_steps_is_an_identical_copy_and_bounds(lite0, chelsea):
    copy = sanity.randomized(lite0, 0)
    a = cams.compute(lite0, chelsea, methods=["gradcam"], target=285)[0].heatmap
    b = cams.compute(copy, chelsea, methods=["gradcam"], target=285)[0].heatmap
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError, match="between 0 and"):
        sanity.randomized(lite0, 99)


def test_random_target_is_reproducible_and_different(lite0):
    first = sanity.random_target(lite0, avoid=285, seed=3)
    assert first == sanity.random_target(lite0, avoid=285, seed=3) and first != 285


@pytest.mark.parametrize("method", ["grad_rollout", "legrad", "rollout"])
def test_attention_maps_change_when_the_vit_is_randomised_from_the_head_down(method):
    """Adebayo et al.'s check on the trained Shapes ViT: its attention maps depend on what it learned. A new head
    alone changes the class-specific maps and leaves rollout's exactly as it was (rollout never reads the head);
    the whole network randomised changes every one."""
    vit = models.load("shapes_vit")
    image = datasets.shapes(seed=5, n=1, size=64).images[0]
    target = predictions.predict(vit, image, top_k=1)[0].index
    (trained,) = cams.compute(vit, image, methods=[method], target=target)
    layers = sanity.cascade(vit)
    (new_head,) = cams.compute(sanity.randomized(vit, 1), image, methods=[method], target=target)
    if cams.METHODS[method].class_specific:
        assert faithfulness.rank_correlation(trained.heatmap, new_head.heatmap) < 0.9
    else:
        np.testing.assert_allclose(trained.heatmap, new_head.heatmap, atol=1e-6)
    (random,) = cams.compute(sanity.randomized(vit, len(layers)), image, methods=[method], target=target)
    assert faithfulness.rank_correlation(trained.heatmap, random.heatmap) < 0.5
    (again,) = cams.compute(vit, image, methods=[method], target=target)
    np.testing.assert_array_equal(trained.heatmap, again.heatmap)  # the shared model was left as it was
