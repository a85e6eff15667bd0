"""The project's one stratified split and one stratified sample.

Every page and command that holds images out (the Datasets page's linear probe, a training run's
validation and test sets) splits through `stratified`, so the same labels, seed and test share give the
same test images everywhere. The test set is cut first and depends only on (labels, test share, seed):
choosing a validation share never moves an image into or out of the test set.
"""

from dataclasses import dataclass

import numpy as np

from core.errors import InvalidInputError


@dataclass(frozen=True)
class Split:
    """Dataset row indices of each set, sorted, disjoint, stratified by class."""

    train: np.ndarray  # (n_train,) int64
    val: np.ndarray  # empty when no validation share was asked for
    test: np.ndarray


def stratified(labels: np.ndarray, *, test_fraction: float, val_fraction: float = 0.0, seed: int = 0) -> Split:
    """Each class shuffled (seeded, per class in label order) and cut: test first, then validation, the rest trains.

    Every class gets at least one image in each set asked for (test, validation when `val_fraction` > 0, train).

    Raises:
        InvalidInputError: fractions that leave no room, or a class too small to have one image in each set.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        raise InvalidInputError(f"The test share ({test_fraction}) and validation share ({val_fraction}) must be "
                                "positive and leave room for a training set.")
    sets = 3 if val_fraction > 0 else 2
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < sets:
            needs = "training, validation and test" if sets == 3 else "training and test"
            raise InvalidInputError(f"Class {int(c)} has {len(rows)} image(s); each class needs at least {sets} "
                                    f"(one each for {needs}). Add images or use a larger sample.")
        rows = rng.permutation(rows)
        n_test = min(max(1, _rounded(len(rows) * test_fraction)), len(rows) - sets + 1)
        n_val = 0
        if sets == 3:
            n_val = min(max(1, _rounded(len(rows) * val_fraction)), len(rows) - n_test - 1)
        test.append(rows[:n_test])
        val.append(rows[n_test:n_test + n_val])
        train.append(rows[n_test + n_val:])
    return Split(*(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test)))


def _rounded(x: float) -> int:
    """Half up, and blind to float noise: 1 - 0.7 - 0.15 of 30 images is 4.5000000000000001, and gives 5 as 4.5 does."""
    return int(np.floor(x + 0.5 + 1e-9))


def sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` row indices drawn per class in proportion to its size (at least one each while n allows), sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = np.maximum(1, np.floor(counts / counts.sum() * n)).astype(int)
    while share.sum() > n:  # more classes than n: drop from the largest shares
        share[np.argmax(share)] -= 1
    remainder = n - share.sum()
    order = np.argsort(-(counts / counts.sum() * n - share))
    for c in order[:remainder]:
        share[c] = min(share[c] + 1, counts[c])
    picked = [rng.choice(np.flatnonzero(labels == c), size=min(s, cnt), replace=False)
              for c, s, cnt in zip(classes, share, counts, strict=True) if s > 0]
    return np.sort(np.concatenate(picked))
