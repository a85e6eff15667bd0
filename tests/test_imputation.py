"""Noisy linear imputation: the same system and solution as pytorch-grad-cam's (the ROAD paper's code)."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights

from core import imputation


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 30, 41)).astype(np.float32)
    removed = rng.random((30, 41)) < 0.6
    removed[:8, :8] = True  # a block touching two borders
    return image, removed


def test_system_equals_the_papers(case):
    image, removed = case
    theirs_a, theirs_b = NoisyLinearImputer.setup_sparse_system((~removed).astype(np.float32), image, neighbors_weights)
    a, b = imputation.system(image, removed)
    assert a.shape == theirs_a.shape == (removed.sum(), removed.sum())
    np.testing.assert_allclose(a.toarray(), theirs_a.toarray(), atol=1e-12)
    np.testing.assert_allclose(b, theirs_b, atol=1e-12)


def test_imputation_equals_the_papers_and_keeps_the_kept_pixels(case):
    image, removed = case
    theirs = NoisyLinearImputer(noise=0.0)(torch.from_numpy(image), torch.from_numpy((~removed).astype(np.float32)))
    ours = imputation.impute(image, removed, noise=0.0)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
    assert np.array_equal(ours[:, ~removed], image[:, ~removed])
    noisy = imputation.impute(image, removed, rng=np.random.default_rng(1))
    assert np.array_equal(noisy[:, ~removed], image[:, ~removed])
    spread = (noisy - ours)[:, removed]
    assert abs(spread.std() - imputation.NOISE) < 0.002  # the paper's noise on the filled pixels only


def test_a_filled_hole_is_smooth_not_black():
    image = np.ones((3, 20, 20), np.float32)
    removed = np.zeros((20, 20), bool)
    removed[5:15, 5:15] = True
    filled = imputation.impute(image, removed, noise=0.0)
    np.testing.assert_allclose(filled, 1.0, atol=1e-6)  # a constant image stays constant


def test_many_in_order_with_their_own_seeds(case):
    image, removed = case
    cases = [(image, removed, 3), (image, ~removed, 4), (image, removed, 3)]
    out = list(imputation.impute_many(cases, workers=2))
    assert np.array_equal(out[0], out[2]) and not np.array_equal(out[0], out[1])
    assert np.array_equal(out[0], imputation.impute(image, removed, rng=np.random.default_rng(3)))


def test_nothing_or_everything_removed(case):
    image, removed = case
    assert np.array_equal(imputation.impute(image, np.zeros_like(removed)), image)
    with pytest.raises(ValueError, match="at least one pixel"):
        imputation.impute(image, np.ones_like(removed))
