"""Two-shape pictures: does a map follow the class it is asked for? (core.shape_drawing.draw_pair,
core.localisation.pair_pictures / pairs, with the project's trained Shapes ViT and Shapes CNN.)"""

import numpy as np
import pytest
from PIL import Image

from core import cams, localisation, models, shape_drawing
from core.errors import InvalidInputError

PICTURES = 8  # of seed 0, every one explained for both shapes


@pytest.fixture(scope="module")
def pictures():
    return localisation.pair_pictures(0, PICTURES)


def test_draw_pair_is_seeded_and_its_masks_are_the_drawn_shapes():
    first = shape_drawing.draw_pair(np.random.default_rng(5), ("star", "circle"), 128)
    again = shape_drawing.draw_pair(np.random.default_rng(5), ("star", "circle"), 128)
    other = shape_drawing.draw_pair(np.random.default_rng(6), ("star", "circle"), 128)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])
    picture, star, circle = first
    pixels = np.asarray(picture).astype(int)
    assert star.shape == circle.shape == (128, 128) and star.any() and circle.any() and not (star & circle).any()
    for mask in (star, circle):  # each mask is one flat colour, painted over the textured background
        assert (pixels[mask] == pixels[mask][0]).all()
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 3, 0):ys.max() + 4, max(xs.min() - 3, 0):xs.max() + 4] = True
        around = pixels[ring & ~mask]
        assert (np.abs(around - pixels[mask][0]).sum(axis=1) > 0).mean() > 0.95
    # Each mask is its own shape: a circle fills pi/4 of its bounding box, a five-pointed star far less.
    assert 0.72 < circle.sum() / localisation.box(circle).sum() < 0.84
    assert star.sum() / localisation.box(star).sum() < 0.6
    # The outlines lie far enough apart that the pointing game's tolerance cannot reach both.
    ys, xs = np.nonzero(star)
    yc, xc = np.nonzero(circle)
    nearest = np.sqrt(((ys[:, None] - yc[None, :]) ** 2 + (xs[:, None] - xc[None, :]) ** 2).min())
    assert nearest > 2 * localisation.POINTING_TOLERANCE * 128
    with pytest.raises(InvalidInputError, match="two shapes"):
        shape_drawing.draw_pair(np.random.default_rng(0), ("star",), 128)


def test_pair_pictures_balance_the_ordered_class_pairs(pictures):
    many = localisation.pair_pictures(1, 24)
    counts = {}
    for p in many:
        assert p.labels[0] != p.labels[1] and p.classes == ("circle", "square", "triangle", "star")
        counts[p.labels] = counts.get(p.labels, 0) + 1
    assert len(counts) == 12 and set(counts.values()) == {2}
    again = localisation.pair_pictures(0, PICTURES)
    assert [p.labels for p in again] == [p.labels for p in pictures]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(again, pictures, strict=True))


@pytest.fixture(scope="module")
def vit_scores(pictures):
    model = models.load("shapes_vit", device="cpu")
    return localisation.pairs(model, pictures, methods=("rollout", "grad_rollout", "legrad"))


@pytest.fixture(scope="module")
def cnn_scores(pictures):
    model = models.load("shapes_cnn", device="cpu")
    return localisation.pairs(model, pictures, methods=("gradcam", "eigencam"))


def _row(table, method):
    return next(r for r in table.rows if r.method == method)


def test_gradient_weighted_rollout_follows_the_asked_shape_rollout_cannot(vit_scores):
    grad, roll, noise = (_row(vit_scores, m) for m in ("grad_rollout", "rollout", localisation.RANDOM))
    assert grad.explanations == roll.explanations == 2 * PICTURES
    assert grad.asked_share > 1.5 * grad.other_share and grad.split > 0.6
    assert grad.asked_pointing > 0.6 > 0.3 > grad.other_pointing
    # rollout's map is the same whichever class is asked: equal shares on the two shapes, no heat moves.
    assert roll.moved == 0.0 and roll.split == pytest.approx(0.5) and roll.asked_share == pytest.approx(roll.other_share)
    assert roll.asked_pointing == roll.other_pointing
    assert noise.moved == 0.0 and noise.split == pytest.approx(0.5)
    assert grad.moved > 0.1
    assert vit_scores.rows[0].method == "grad_rollout"  # the best asked-minus-other share


def test_gradcam_on_the_cnn_follows_the_asked_shape(cnn_scores):
    grad, eigen = _row(cnn_scores, "gradcam"), _row(cnn_scores, "eigencam")
    assert grad.asked_share > 4 * grad.other_share and grad.asked_pointing > 0.6 and grad.other_pointing < 0.2
    assert eigen.moved == 0.0 and eigen.split == pytest.approx(0.5)  # Eigen-CAM does not read the class
    assert cnn_scores.mask_share == pytest.approx(np.mean([m.mean() for p in localisation.pair_pictures(0, PICTURES)
                                                           for m in p.masks]))


def test_pairs_refuses_what_it_cannot_score(pictures, lite0):
    with pytest.raises(InvalidInputError, match="classes"):
        localisation.pairs(lite0, pictures, methods=("gradcam",))
    model = models.load("shapes_cnn", device="cpu")
    with pytest.raises(InvalidInputError, match="No pair pictures"):
        localisation.pairs(model, [], methods=("gradcam",))
    assert cams.METHODS["rollout"].class_specific is False  # what the table's "class-specific" column reads
    assert isinstance(pictures[0].image, Image.Image) and pictures[0].image.size == (128, 128)
