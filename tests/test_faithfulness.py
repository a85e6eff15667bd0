"""Faithfulness scores come out and order sensibly on a case we construct."""

import numpy as np
import pytest

from core import cams, faithfulness, preprocessing
from core.errors import InvalidInputError
from tests.test_cams import _cat_on_canvas


@pytest.fixture(scope="module")
def cat_case(lite0):
    image, _ = _cat_on_canvas()
    small = image.resize((image.width // 3, image.height // 3))  # keep ROAD's imputation quick
    tensor = preprocessing.to_tensor(small, lite0.spec)
    raw = cams.raw_maps(lite0, tensor, methods=["gradcam"], target=285, layer="bn2")["gradcam"][0]
    return small, tensor, raw


def test_gradcam_beats_random_and_inverted_maps(lite0, cat_case):
    _, tensor, gradcam = cat_case
    rng = np.random.default_rng(0)
    maps = [gradcam, rng.random(gradcam.shape).astype(np.float32), 1.0 - gradcam]
    real, random, inverted = faithfulness.score(lite0, tensor, maps, 285)
    assert real.road_combined > random.road_combined > inverted.road_combined
    assert real.road_most_first < 0 < real.road_combined  # removing the hot pixels hurts the cat class
    assert inverted.road_least_first < real.road_least_first  # removing the "cold" (real hot) pixels hurts
    for s in (real, random, inverted):
        assert all(-1.0 <= v <= 1.0 for v in (s.confidence_change, s.road_most_first, s.road_least_first))


def test_scores_from_image_sized_heatmaps(lite0, cat_case):
    image, _, _ = cat_case
    (result,) = cams.compute(lite0, image, methods=["gradcam"], target=285)
    scores = faithfulness.score_heatmaps(lite0, image, {"gradcam": result.heatmap}, 285)
    assert set(scores) == {"gradcam"} and scores["gradcam"].road_combined > 0


def test_wrong_map_size_is_refused(lite0, cat_case):
    _, tensor, _ = cat_case
    with pytest.raises(InvalidInputError, match="tensor's size"):
        faithfulness.score(lite0, tensor, [np.zeros((3, 3), np.float32)], 285)


def test_rank_correlation():
    rng = np.random.default_rng(1)
    a = rng.random((40, 60)).astype(np.float32)
    assert faithfulness.rank_correlation(a, a) == pytest.approx(1.0)
    assert faithfulness.rank_correlation(a, 1 - a) == pytest.approx(-1.0)
    assert abs(faithfulness.rank_correlation(a, rng.random((40, 60)))) < 0.2
    assert faithfulness.rank_correlation(a, np.zeros_like(a)) == 0.0
