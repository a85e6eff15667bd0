"""Faithfulness scores rank maps correctly: a model whose answer we know, the fractions really removed, Lite0."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core import cams, faithfulness, imputation, models, registry
from core.errors import Cancelled, InvalidInputError
from tests.conftest import sample

SIDE = 48
REGION = (slice(16, 32), slice(8, 24))  # the only pixels the model looks at


class _RegionModel(nn.Module):
    """Class 0's logit is 2 x (mean of the region over channels) - 2; class 1's is 0."""

    def forward(self, x):
        mean = x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.stack([2 * mean - 2, torch.zeros_like(mean)], dim=1)


@pytest.fixture(scope="module")
def region_model() -> models.LoadedModel:
    spec = registry.BackboneSpec(
        name="region_model_for_tests", title="Region model (tests)", source="tests", build=lambda _: _RegionModel(),
        cam_layer="", head="", categories=("region", "other"), weights_file=None, input_size=(SIDE, SIDE),
    )
    return models.LoadedModel(spec, _RegionModel().eval(), torch.device("cpu"), False, 0)


@pytest.fixture(scope="module")
def region_case():
    rng = np.random.default_rng(0)
    tensor = rng.normal(0.0, 0.3, (1, 3, SIDE, SIDE)).astype(np.float32)  # textured background, mean 0
    tensor[:, :, REGION[0], REGION[1]] += 2.0  # the bright region the class depends on
    region = np.zeros((SIDE, SIDE), np.float32)
    region[REGION] = 1.0
    maps = {"region": region, "random": rng.random((SIDE, SIDE)).astype(np.float32), "complement": 1.0 - region}
    return torch.from_numpy(tensor), maps


def test_ground_truth_region_best_complement_worst_random_between(region_model, region_case):
    tensor, maps = region_case
    region, random, complement = faithfulness.score(region_model, tensor, list(maps.values()), 0)
    # every score the page shows, each in its own direction
    assert region.faithfulness > random.faithfulness > complement.faithfulness
    assert region.road_most_first < random.road_most_first < complement.road_most_first  # lower is better
    assert region.road_least_first > random.road_least_first > complement.road_least_first
    assert region.confidence_change > random.confidence_change > complement.confidence_change
    for k in range(len(faithfulness.FRACTIONS)):  # and at every fraction shown
        assert region.most_first[k] < random.most_first[k] < complement.most_first[k]
        assert region.least_first[k] > random.least_first[k] > complement.least_first[k]
    # the complement never touches the region when it removes its "most relevant" pixels: no change at all
    assert complement.most_first[0] == pytest.approx(0.0, abs=1e-6)
    assert region.faithfulness > 0.2 and complement.faithfulness < -0.2 and abs(random.faithfulness) < 0.1


def test_the_documented_fraction_is_removed_both_ways(region_model, region_case, monkeypatch):
    tensor, maps = region_case
    relevance = maps["random"]  # no ties: the removed set tells the direction
    seen = []
    real = imputation.impute

    def spy(image, removed, **kwargs):
        kept, gone = relevance[~removed], relevance[removed]
        direction = "most" if gone.min() >= kept.max() else "least" if gone.max() <= kept.min() else "mixed"
        seen.append((direction, round(float(removed.mean()), 3)))
        return real(image, removed, **kwargs)

    monkeypatch.setattr(imputation, "impute", spy)
    (scores,) = faithfulness.score(region_model, tensor, [relevance], 0)
    expected = [(d, round(round(f * SIDE * SIDE) / (SIDE * SIDE), 3)) for d in ("most", "least")
                for f in faithfulness.FRACTIONS]
    assert sorted(seen) == sorted(expected)
    assert scores.fractions == faithfulness.FRACTIONS == (0.2, 0.4, 0.6, 0.8)
    assert "20, 40, 60 and 80%" in faithfulness.explanation()


def test_removed_pixels_breaks_ties_and_counts_exactly():
    flat = np.zeros((10, 10), np.float32)  # all ties: still exactly the fraction, in a seeded order
    order = np.random.default_rng(0).permutation(100)
    most = faithfulness.removed_pixels(flat, 0.3, most_first=True, order=order)
    least = faithfulness.removed_pixels(flat, 0.3, most_first=False, order=order)
    assert most.sum() == least.sum() == 30 and not (most & least).any()
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert faithfulness.removed_pixels(ramp, 0.2, most_first=True, order=order).ravel()[80:].all()
    assert faithfulness.removed_pixels(ramp, 0.2, most_first=False, order=order).ravel()[:20].all()


def test_scorecard_has_every_baseline_and_progress(region_model, region_case):
    tensor, maps = region_case
    rgb = np.clip(tensor[0].numpy().transpose(1, 2, 0) * 0.225 + 0.45, 0, 1)  # as to_tensor will normalise it
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    steps = []
    card = faithfulness.scorecard(region_model, image, {"region": maps["region"], "complement": maps["complement"]}, 0,
                                  on_progress=lambda f, msg: steps.append(f))
    assert set(card.baselines) == set(faithfulness.BASELINES) and card.best == "region" and card.inverted == "region"
    assert card.beats_random("region") and not card.beats_random("complement")
    # the inverted best map is the complement: the same removals, so the same scores
    assert card.baselines["inverted"].faithfulness == pytest.approx(card.methods["complement"].faithfulness, abs=0.02)
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)
    # several images: one progress over all of them, and their mean is the stable ranking
    steps.clear()
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # the region moves: the same maps now miss it
    cards = faithfulness.scorecards(region_model, [image, flipped], [{"region": maps["region"]}] * 2, [0, 0],
                                    on_progress=lambda f, msg: steps.append((f, msg)))
    assert cards[0].methods == {"region": card.methods["region"]}  # seeded: the same scores again
    assert cards[1].methods["region"].faithfulness < cards[0].methods["region"].faithfulness
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1][0] == pytest.approx(1.0)
    assert steps[0][1].startswith("image 1 of 2: ") and steps[-1][1].startswith("image 2 of 2: ")
    both = faithfulness.mean(cards)
    assert both.images == 2 and set(both.baselines) == set(faithfulness.BASELINES)
    assert both.methods["region"].faithfulness == pytest.approx(
        (cards[0].methods["region"].faithfulness + cards[1].methods["region"].faithfulness) / 2)
    with pytest.raises(InvalidInputError, match="one target per image"):
        faithfulness.scorecards(region_model, [image], [{"region": maps["region"]}], [0, 0])


def test_baseline_maps():
    random = faithfulness.random_map((64, 96), seed=3)
    assert random.shape == (64, 96) and random.dtype == np.float32 and 0 <= random.min() < random.max() <= 1
    assert np.array_equal(random, faithfulness.random_map((64, 96), seed=3))
    tensor = torch.zeros(1, 3, 32, 32)
    tensor[..., 16:] = 1.0
    edges = faithfulness.edge_map(tensor, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert edges.max() == 1.0 and edges[:, 15:17].min() == 1.0 and edges[:, :13].max() == 0.0


def test_stop_and_bad_input(region_model, region_case):
    tensor, maps = region_case
    with pytest.raises(Cancelled):
        faithfulness.score(region_model, tensor, [maps["region"]], 0, should_stop=lambda: True)
    with pytest.raises(InvalidInputError, match="tensor's size"):
        faithfulness.score(region_model, tensor, [np.zeros((3, 3), np.float32)], 0)
    with pytest.raises(InvalidInputError, match="Class index"):
        faithfulness.score(region_model, tensor, [maps["region"]], 2)
    with pytest.raises(InvalidInputError, match="between 0 and 1"):
        faithfulness.score(region_model, tensor, [maps["region"]], 0, fractions=(0.5, 1.0))
    assert faithfulness.score(region_model, tensor, [], 0) == []


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "rocket"])
def test_gradcam_beats_random_and_inverted_on_lite0(lite0, photo):
    image = sample(photo)
    (result,) = cams.compute(lite0, image, methods=["gradcam"])
    card = faithfulness.scorecard(lite0, image, {"gradcam": result.heatmap}, result.target)
    gradcam = card.methods["gradcam"].faithfulness
    assert gradcam > card.baselines["random"].faithfulness and card.beats_random("gradcam")
    assert gradcam > card.baselines["inverted"].faithfulness
    assert gradcam > 0 and card.methods["gradcam"].road_most_first < card.methods["gradcam"].road_least_first


def test_rank_correlation():
    rng = np.random.default_rng(1)
    a = rng.random((40, 60)).astype(np.float32)
    assert faithfulness.rank_correlation(a, a) == pytest.approx(1.0)
    assert faithfulness.rank_correlation(a, 1 - a) == pytest.approx(-1.0)
    assert abs(faithfulness.rank_correlation(a, rng.random((40, 60)))) < 0.2
    assert faithfulness.rank_correlation(a, np.zeros_like(a)) == 0.0
