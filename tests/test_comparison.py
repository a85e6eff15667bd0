"""Backbones side by side."""

import numpy as np
import pytest

from core import comparison, model_costs, models
from core.errors import InvalidInputError
from tests.conftest import sample


def test_three_offline_backbones_on_the_cat(lite0):
    others = [models.load(n, device="cpu") for n in ("efficientnet_lite1", "efficientnet_lite2")]
    image = sample("chelsea")
    result = comparison.compare([lite0, *others], image, common_target=285, repeats=2)
    assert result.common_target == 285 and len(result.reports) == 3
    for report in result.reports:
        assert report.predictions[0].index in range(281, 286)
        assert report.common.target == 285 and report.own.target == report.predictions[0].index
        assert report.common.heatmap.shape == (image.height, image.width)
        assert report.latency_ms > 0 and report.params > 4_000_000 and 0.3 < report.gmacs < 1.5
    assert result.agreement.shape == (3, 3) and np.allclose(np.diag(result.agreement), 1)
    assert np.allclose(result.agreement, result.agreement.T)
    assert (result.agreement[np.triu_indices(3, 1)] > 0.3).all(), result.agreement  # all look at the cat


def test_counted_gmacs_match_torchvision_metadata_for_resnet18():
    model = models.load("resnet18", device="cpu", pretrained=False)
    counted = model_costs._counted_gmacs(model.name, model.pretrained, model)
    assert counted == pytest.approx(model.spec.gmacs, rel=0.05)  # torchvision says 1.81 G multiply-adds


def test_limits(lite0):
    with pytest.raises(InvalidInputError, match="1 to 4"):
        comparison.compare([lite0] * 5, sample("chelsea"))


def test_a_cnns_gradcam_beside_a_transformers_attention_method(tiny, tiny_vit, chelsea):
    result = comparison.compare([tiny, tiny_vit], chelsea, method="gradcam", transformer_method="rollout", repeats=1)
    assert [r.method for r in result.reports] == ["gradcam", "rollout"]
    assert result.reports[1].own.method == "rollout" and result.reports[0].own.method == "gradcam"
    same = comparison.compare([tiny, tiny_vit], chelsea, method="gradcam", repeats=1)
    assert [r.method for r in same.reports] == ["gradcam", "gradcam"]
