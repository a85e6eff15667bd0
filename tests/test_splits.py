"""The one stratified split (core.splits): the Datasets page's linear probe and a training run hold out the
same test images for the same labels, seed and test share."""

import numpy as np
import pytest

from core import datasets, evaluation, splits, training
from core.errors import InvalidInputError


def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(4), [10, 20, 3, 7])
    parts = splits.stratified(labels, test_fraction=0.2, val_fraction=0.2, seed=3)
    together = np.concatenate([parts.train, parts.val, parts.test])
    assert sorted(together) == list(range(len(labels)))
    for part in (parts.train, parts.val, parts.test):
        assert set(labels[part]) == {0, 1, 2, 3}
        assert np.all(np.diff(part) > 0)
    assert [int((labels[parts.test] == c).sum()) for c in range(4)] == [2, 4, 1, 1]  # 20%, half up, at least one
    with pytest.raises(InvalidInputError, match="at least 3"):
        splits.stratified(np.array([0, 0, 1, 1, 1]), test_fraction=0.15, val_fraction=0.15)
    with pytest.raises(InvalidInputError, match="at least 2"):
        splits.stratified(np.array([0, 1, 1, 1]), test_fraction=0.3)
    with pytest.raises(InvalidInputError, match="leave room"):
        splits.stratified(np.array([0, 0, 1, 1]), test_fraction=0.6, val_fraction=0.4)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_test_set_depends_only_on_labels_seed_and_test_share(seed):
    labels = np.repeat(np.arange(5), [30, 11, 8, 25, 6])
    tests = {tuple(splits.stratified(labels, test_fraction=0.15, val_fraction=v, seed=seed).test) for v in (0, 0.1, 0.15, 0.3)}
    assert len(tests) == 1
    # float noise: 1 - 0.7 - 0.15 is 0.15000000000000002, the training config's test share
    assert tuple(splits.stratified(labels, test_fraction=1 - 0.7 - 0.15, val_fraction=0.15, seed=seed).test) in tests


def test_the_probe_and_a_training_run_test_on_the_same_images():
    """Issue #12: with the same seed and test share, the Datasets page's probe and the Transfer learning page's
    run hold out the same images (they used two different split functions before)."""
    data = datasets.digits(0, 120)
    features = np.random.default_rng(0).normal(size=(len(data), 8)).astype(np.float32)
    probe = evaluation.linear_probe(features, data.labels, test_fraction=0.15, seed=4)
    config = training.TrainConfig(strategy="feature-extraction", train_fraction=0.7, val_fraction=0.15, seed=4)
    run_split = splits.stratified(data.labels, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                                  seed=config.seed)
    assert np.array_equal(probe.test, run_split.test)
    assert np.array_equal(probe.train, np.sort(np.concatenate([run_split.train, run_split.val])))


def test_the_sample_keeps_every_class_and_is_seeded():
    labels = np.repeat(np.arange(3), [50, 30, 2])
    rows = splits.sample(labels, 20, seed=5)
    assert len(rows) == 20 and set(labels[rows]) == {0, 1, 2}
    assert np.array_equal(rows, splits.sample(labels, 20, seed=5))
    assert not np.array_equal(rows, splits.sample(labels, 20, seed=6))
