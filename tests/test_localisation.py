"""core.localisation: heat share and pointing game against the shapes set's masks."""

import numpy as np
import pytest

from core import datasets, localisation
from core.errors import InvalidInputError


def test_scores_of_hand_made_maps():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    inside = np.zeros((20, 20), np.float32)
    inside[7, 7] = 1
    assert localisation.heat_share(inside, mask) == 1.0
    assert localisation.pointing_hit(inside, mask)
    outside = np.zeros((20, 20), np.float32)
    outside[18, 18] = 1
    assert localisation.heat_share(outside, mask) == 0.0
    assert not localisation.pointing_hit(outside, mask, tolerance=2)
    assert localisation.pointing_hit(outside, mask, tolerance=13)
    assert localisation.heat_share(np.ones((20, 20)), mask) == pytest.approx(mask.mean())
    assert localisation.heat_share(np.zeros((20, 20)), mask) == 0.0
    with pytest.raises(InvalidInputError, match="same size"):
        localisation.heat_share(np.ones((3, 3)), mask)


def test_energy_based_pointing_game_scores_the_bounding_box():
    mask = np.zeros((20, 20), bool)
    mask[5, 5:12] = mask[5:9, 8] = True  # a T: its box is rows 5-8, columns 5-11
    boxed = localisation.box(mask)
    assert boxed.sum() == 4 * 7 and boxed[8, 5] and not boxed[9, 5] and not boxed[5, 12]
    assert not localisation.box(np.zeros((4, 4), bool)).any()
    beside = np.zeros((20, 20), np.float32)
    beside[8, 5] = 1  # in the box, off the object
    assert localisation.heat_share(beside, mask) == 0.0 and localisation.heat_share(beside, boxed) == 1.0


def test_random_map_is_seeded():
    a = localisation.random_map((30, 20), seed=1)
    assert a.shape == (20, 30) and a.min() == 0 and a.max() == pytest.approx(1)
    assert np.array_equal(a, localisation.random_map((30, 20), seed=1))


def test_a_real_cam_beats_a_random_map_on_shapes(lite0):
    data = datasets.shapes(0, 16, 96)
    table = localisation.score(lite0, data, methods=("gradcam", "eigencam"))
    ranked = [row.method for row in table.rows]
    assert ranked[-1] == localisation.RANDOM, ranked
    best, floor = table.rows[0], table.rows[-1]
    assert best.heat_share > floor.heat_share + 0.1 and best.pointing > floor.pointing
    assert floor.heat_share == pytest.approx(table.mask_share, abs=0.08)
    assert table.mask_share < table.box_share < 1 and best.energy_box > floor.energy_box
    assert all(row.energy_box >= row.heat_share for row in table.rows)  # the box holds the mask


def test_needs_masks(tiny):
    with pytest.raises(InvalidInputError, match="no object masks"):
        localisation.score(tiny, datasets.digits(0, 20))
