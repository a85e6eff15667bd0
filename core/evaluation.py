"""Accuracy, confusion and per-class metrics of a backbone on a labelled set.

Predictions come from the backbone's own ImageNet head when every folder name maps to an ImageNet
class (zero-shot: the best-scoring class among the mapped ones), otherwise from a linear probe
(logistic regression on frozen penultimate features, trained on a stratified split and scored on the rest).
Metrics are scikit-learn's.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from core import splits
from core.errors import InvalidInputError

MODES = ("auto", "zero-shot", "linear probe")


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int  # true images of this class among those evaluated


@dataclass(frozen=True)
class Mapping:
    """Folder classes -> ImageNet classes: `targets[i]` is the ImageNet index of class i, or None."""

    classes: tuple[str, ...]
    targets: tuple[int | None, ...]
    labels: tuple[str | None, ...]  # the ImageNet names, for display
    how: tuple[str, ...]  # "WordNet id", "class name", "synonym" or "" (not mapped)

    @property
    def complete(self) -> bool:
        return all(t is not None for t in self.targets)


@dataclass(frozen=True, eq=False)
class Probe:
    """A logistic regression on frozen features: which rows trained it and what it says about the rest.

    `weight` and `bias` are the whole probe (standardisation folded in) as one linear map over the raw
    features, one row per folder class: `logits(x) = x @ weight.T + bias` ranks the classes as the probe
    does, so a copy of the backbone with this Linear as its head explains the probe's classes.
    """

    train: np.ndarray  # (n_train,) int64 dataset indices
    test: np.ndarray  # (n_test,) int64 dataset indices
    predicted: np.ndarray  # (n_test,) int64 class indices for `test`
    train_accuracy: float
    weight: np.ndarray = field(repr=False)  # (C, D) float32
    bias: np.ndarray = field(repr=False)  # (C,) float32
    classifier: object = field(repr=False)  # the fitted scikit-learn pipeline

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, C) float32 class scores of (N, D) raw features: the classifier's decision_function, per class.

        With two classes the classifier has one score d (positive: class 1); the logits are (-d/2, d/2),
        whose softmax is its predict_proba. A class with no training image gets a score far below the others.
        """
        return (np.asarray(features, dtype=np.float32) @ self.weight.T + self.bias).astype(np.float32)


@dataclass(frozen=True)
class Evaluation:
    """How well the predictions match the labels, on the rows in `indices`."""

    method: str  # "zero-shot" or "linear probe"
    classes: tuple[str, ...]
    indices: np.ndarray  # (M,) int64 dataset indices evaluated (the test split for a probe)
    true: np.ndarray  # (M,) int64
    predicted: np.ndarray  # (M,) int64
    accuracy: float
    confusion: np.ndarray  # (C, C) int64, rows = true class, columns = predicted class
    per_class: tuple[ClassMetrics, ...]
    mapping: Mapping | None = None  # zero-shot only
    train_size: int = 0  # linear probe only
    train_accuracy: float | None = None
    probe: Probe | None = field(default=None, repr=False)  # linear probe only: its weights, for heatmaps

    @property
    def normalised(self) -> np.ndarray:
        """(C, C) float64 confusion with each row divided by its total (rows with no images stay 0)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, totals, out=np.zeros(self.confusion.shape), where=totals > 0)

    @property
    def misclassified(self) -> np.ndarray:
        """Dataset indices whose prediction is wrong."""
        return self.indices[self.true != self.predicted]

    def cell(self, true: int, predicted: int) -> np.ndarray:
        """Dataset indices of the images of class `true` predicted as `predicted`."""
        return self.indices[(self.true == true) & (self.predicted == predicted)]

    def prediction_of(self, index: int) -> int | None:
        """The predicted class of dataset row `index`, or None when it was not evaluated (a training row)."""
        where = np.flatnonzero(self.indices == index)
        return int(self.predicted[where[0]]) if len(where) else None


def metrics(
    true: Sequence[int], predicted: Sequence[int], classes: Sequence[str], *, method: str = "given",
    indices: Sequence[int] | None = None,
) -> Evaluation:
    """Accuracy, confusion matrix and per-class precision / recall / F1 (scikit-learn's, zero_division=0)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1 or len(true) == 0:
        raise InvalidInputError(f"Need as many predictions as labels (one each), got {true.shape} and {predicted.shape}.")
    labels = np.arange(len(classes))
    if true.min() < 0 or predicted.min() < 0 or max(true.max(), predicted.max()) >= len(classes):
        raise InvalidInputError(f"Labels must be class indices between 0 and {len(classes) - 1}.")
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)
    rows = tuple(
        ClassMetrics(str(c), float(p), float(r), float(f), int(s))
        for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    )
    return Evaluation(
        method=method,
        classes=tuple(classes),
        indices=np.arange(len(true), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64),
        true=true,
        predicted=predicted,
        accuracy=float(accuracy_score(true, predicted)),
        confusion=confusion_matrix(true, predicted, labels=labels).astype(np.int64),
        per_class=rows,
    )


# ---------------------------------------------------------------------------------------------
# Zero-shot: folder names -> ImageNet classes


@lru_cache(maxsize=1)
def _imagenet() -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(WordNet ids, synonyms per class) of ImageNet-1k in the standard class order, from timm's tables."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = tuple(info.label_names())
    synonyms = tuple(tuple(_normal(s) for s in info.index_to_description(i).split(",")) for i in range(len(wnids)))
    return wnids, synonyms


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def zero_shot_mapping(classes: Sequence[str], categories: Sequence[str]) -> Mapping:
    """Map each folder name to an ImageNet class by WordNet id (n02123045), class name or synonym.

    Only backbones with the 1,000 ImageNet categories are mapped by WordNet id and synonym; any other is mapped
    when its own classes are the folders' names (a trained model or a user's checkpoint on its own data), else
    it gets an empty mapping.
    """
    targets: list[int | None] = []
    how: list[str] = []
    if len(categories) != 1000:
        own = {_normal(c): i for i, c in enumerate(categories)}
        if classes and all(_normal(name) in own for name in classes):
            found = tuple(own[_normal(name)] for name in classes)
            return Mapping(tuple(classes), found, tuple(categories[t] for t in found), tuple("class name" for _ in classes))
        return Mapping(tuple(classes), tuple(None for _ in classes), tuple(None for _ in classes), tuple("" for _ in classes))
    wnids, synonyms = _imagenet()
    by_wnid = {w: i for i, w in enumerate(wnids)}
    by_name = {_normal(c): i for i, c in enumerate(categories)}
    by_synonym: dict[str, int] = {}
    for i, names in enumerate(synonyms):
        for name in names:
            by_synonym.setdefault(name, i)
    for name in classes:
        key = _normal(name)
        if name.strip() in by_wnid:
            targets.append(by_wnid[name.strip()])
            how.append("WordNet id")
        elif key in by_name:
            targets.append(by_name[key])
            how.append("class name")
        elif key in by_synonym:
            targets.append(by_synonym[key])
            how.append("synonym")
        else:
            targets.append(None)
            how.append("")
    labels = tuple(categories[t] if t is not None else None for t in targets)
    return Mapping(tuple(classes), tuple(targets), labels, tuple(how))


def zero_shot(logits: np.ndarray, mapping: Mapping) -> np.ndarray:
    """(N,) int64 folder-class predictions: the mapped ImageNet class with the highest logit."""
    if not mapping.complete:
        missing = [c for c, t in zip(mapping.classes, mapping.targets, strict=True) if t is None]
        raise InvalidInputError(
            f"Zero-shot needs every folder mapped to an ImageNet class; not mapped: {', '.join(missing)}. "
            "Rename the folders to ImageNet class names or WordNet ids, or use the linear probe."
        )
    columns = np.asarray(mapping.targets, dtype=np.int64)
    return np.asarray(logits)[:, columns].argmax(axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Linear probe


def linear_probe(
    features: np.ndarray, labels: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0, strength: float = 1.0,
    classes: int | None = None,
) -> Probe:
    """Logistic regression on standardised frozen features, trained on a stratified split.

    `strength` is the inverse L2 regularisation (scikit-learn's C). `classes` is the number of folder
    classes (default: the largest label + 1): the probe's linear map has one row per class.

    Raises:
        InvalidInputError: fewer than two images in some class, or a split with no room for a test set.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.05 <= test_fraction <= 0.9:
        raise InvalidInputError(f"The test share must be between 0.05 and 0.9, got {test_fraction}.")
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        raise InvalidInputError("A linear probe needs at least two classes with images.")
    if counts.min() < 2:
        small = present[counts < 2]
        raise InvalidInputError(
            f"Every class needs at least 2 images for a stratified split; class(es) {small.tolist()} have 1. "
            "Add images or use a larger sample."
        )
    parts = splits.stratified(labels, test_fraction=float(test_fraction), seed=seed)  # the training page's split too
    train, test = parts.train, parts.test
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))
    classifier.fit(features[train], labels[train])
    count = int(labels.max()) + 1 if classes is None else int(classes)
    weight, bias = _folded(classifier, count)
    return Probe(
        train.astype(np.int64), test.astype(np.int64), classifier.predict(features[test]).astype(np.int64),
        float(classifier.score(features[train], labels[train])), weight, bias, classifier,
    )


_ABSENT = -1e4  # the score of a class the probe never saw: far below any trained class


def _folded(classifier, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """((C, D), (C,)) float32: StandardScaler then LogisticRegression as one linear map of the raw features.

    (x - mean) / scale @ coef.T + intercept  =  x @ (coef / scale).T + (intercept - coef @ (mean / scale)).
    """
    scaler, regression = classifier[0], classifier[-1]
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else 0.0
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else 1.0
    coef = np.asarray(regression.coef_, dtype=np.float64)
    intercept = np.asarray(regression.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # two classes: one score d for classes_[1]; (-d/2, d/2) has the same softmax
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    coef = coef / scale
    intercept = intercept - coef @ np.broadcast_to(mean, coef.shape[1:])
    weight = np.zeros((classes, coef.shape[1]), np.float64)
    bias = np.full(classes, _ABSENT, np.float64)
    rows = np.asarray(regression.classes_, dtype=np.int64)
    weight[rows], bias[rows] = coef, intercept
    return weight.astype(np.float32), bias.astype(np.float32)


# ---------------------------------------------------------------------------------------------


def evaluate(
    features: np.ndarray,
    logits: np.ndarray | None,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    categories: Sequence[str] = (),
    mode: str = "auto",
    test_fraction: float = 0.3,
    seed: int = 0,
) -> Evaluation:
    """Predict every image (zero-shot) or the test split (linear probe) and score the predictions.

    `mode="auto"` uses zero-shot when every class maps to an ImageNet class, else the linear probe.

    Raises:
        InvalidInputError: an unknown mode, zero-shot without a complete mapping, or a set too small to split.
    """
    if mode not in MODES:
        raise InvalidInputError(f"Unknown mode '{mode}'. Choose one of: {', '.join(MODES)}.")
    labels = np.asarray(labels, dtype=np.int64)
    mapping = zero_shot_mapping(classes, categories)
    if mode == "zero-shot" or (mode == "auto" and mapping.complete and logits is not None):
        if logits is None:
            raise InvalidInputError("Zero-shot needs the backbone's logits; extract the features again.")
        predicted = zero_shot(logits, mapping)
        result = metrics(labels, predicted, classes, method="zero-shot")
        return _with(result, mapping=mapping)
    probe = linear_probe(features, labels, test_fraction=test_fraction, seed=seed, classes=len(classes))
    result = metrics(labels[probe.test], probe.predicted, classes, method="linear probe", indices=probe.test)
    return _with(result, mapping=mapping, train_size=len(probe.train), train_accuracy=probe.train_accuracy,
                 probe=probe)


def _with(result: Evaluation, **changes) -> Evaluation:
    from dataclasses import replace

    return replace(result, **changes)
