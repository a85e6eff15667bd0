"""How faithful is a heatmap to the model? ROAD over several removal fractions, beside baseline maps.

ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML):
rank the pixels by the map, remove a fraction of them, fill the holes by noisy linear imputation
(core.imputation) and watch the target class's softmax probability. For each fraction f in FRACTIONS:
- most-relevant-first: the f of the pixels the map ranks highest are removed (a faithful map: a big drop);
- least-relevant-first: the f it ranks lowest are removed (a faithful map: little change).
Exactly round(f * pixels) are removed in both directions (ties in the map broken by one seeded random
order per image), unlike pytorch-grad-cam's `ROADLeastRelevantFirst(percentile=p)`, which keeps the p%
most relevant and so removes 100 - p%.

Scores are changes of that probability, in [-1, 1]:
- `road_most_first`: the mean over the fractions, most relevant first. Lower is better.
- `road_least_first`: the mean, least relevant first. Higher is better.
- `faithfulness`: (road_least_first - road_most_first) / 2, the one number (ROAD combined). Higher is
  better; a map unrelated to the model gets about 0.
- `confidence_change`: the (normalised) input multiplied by the map (grad-cam's CamMultImage). Higher is better.

One image and one threshold are noisy, so every map is scored beside baselines in the same pass
(`scorecard`): a random map, the inverted map of the best method and a Sobel edge map of the image.
A method that does not beat the random map on an image is no better than a random map there.
Scores of several images average with `mean` (per fraction), the stable ranking over a dataset.
"""

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core import imputation, predictions, preprocessing
from core.errors import Cancelled, InvalidInputError
from core.models import LoadedModel

FRACTIONS = (0.2, 0.4, 0.6, 0.8)
BASELINES = ("random", "inverted", "edges")
BASELINE_TITLES = {
    "random": "Random map (baseline)",
    "inverted": "Inverted best map (baseline)",
    "edges": "Sobel edges (baseline)",
}
RANDOM_CELL = 32  # pixels per value of the random map: blobs of about a CNN's last-stage cell, like a CAM's
BATCH = 16  # perturbed images per model pass

EXPLANATION = (  # follows "Faithfulness: "
    "half of how much more the class probability drops when the pixels the map ranks highest are removed than "
    "when those it ranks lowest are removed, averaged over removing {fractions} of the pixels (ROAD combined). "
    "Higher is better; a map unrelated to the model gets about 0."
)
REMOVAL = (
    "Removed pixels are filled by noisy linear imputation: each becomes the weighted mean of its 8 neighbours, "
    "solved for all of them at once, plus Gaussian noise of 0.01 (ROAD: Rong et al. 2022, \u201cA Consistent and "
    "Efficient Evaluation Strategy for Attribution Methods\u201d, ICML), so no sharp hole edges tell the model "
    "where pixels went. Both directions remove exactly the same fractions."
)


def fractions_text(fractions: Sequence[float] = FRACTIONS) -> str:
    """'20, 40, 60 and 80%'."""
    parts = [f"{f * 100:g}" for f in fractions]
    return (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + "%"


def explanation(fractions: Sequence[float] = FRACTIONS) -> str:
    """What the faithfulness number means, in words (to follow "Faithfulness: ")."""
    return EXPLANATION.format(fractions=fractions_text(fractions))


@dataclass(frozen=True)
class Faithfulness:
    """One map's scores: probability changes in [-1, 1], per removal fraction and averaged."""

    fractions: tuple[float, ...]
    most_first: tuple[float, ...]  # per fraction: that fraction of the most relevant pixels removed
    least_first: tuple[float, ...]  # per fraction: that fraction of the least relevant pixels removed
    confidence_change: float

    @property
    def road_most_first(self) -> float:
        return float(np.mean(self.most_first))

    @property
    def road_least_first(self) -> float:
        return float(np.mean(self.least_first))

    @property
    def faithfulness(self) -> float:
        return (self.road_least_first - self.road_most_first) / 2

    def to_dict(self) -> dict:
        """Its JSON (scores.json): the scores by their names in words, then per fraction."""
        return {
            "faithfulness": self.faithfulness,
            "road_most_relevant_first": self.road_most_first,
            "road_least_relevant_first": self.road_least_first,
            "confidence_change": self.confidence_change,
            "fractions_removed": list(self.fractions),
            "most_relevant_first_by_fraction": list(self.most_first),
            "least_relevant_first_by_fraction": list(self.least_first),
        }


@dataclass(frozen=True)
class Scorecard:
    """Every method's scores and the baselines', for one image (or averaged over several with `mean`)."""

    target: int
    methods: dict[str, Faithfulness]
    baselines: dict[str, Faithfulness]  # keys BASELINES
    inverted: str  # the method whose map was inverted for the "inverted" baseline
    seconds: float
    images: int = 1

    @property
    def best(self) -> str:
        return max(self.methods, key=lambda m: self.methods[m].faithfulness)

    def beats_random(self, method: str) -> bool:
        return self.methods[method].faithfulness > self.baselines["random"].faithfulness

    def to_dict(self) -> dict:
        """Its JSON (scores.json): each method's scores and whether it beats the random map, the baselines'."""
        return {
            "target": self.target, "seconds": round(self.seconds, 3),
            "methods": {m: {**s.to_dict(), "beats_random": self.beats_random(m)} for m, s in self.methods.items()},
            "baselines": {b: s.to_dict() for b, s in self.baselines.items()},
            "inverted_method": self.inverted,
            **({"images": self.images} if self.images != 1 else {}),  # averaged over several images
        }


def score(
    model: LoadedModel, tensor: torch.Tensor, maps: Sequence[np.ndarray], target: int, *,
    fractions: Sequence[float] = FRACTIONS, seed: int = 0, on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Faithfulness]:
    """One Faithfulness per map, every imputation and model pass batched.

    Args:
        tensor: one preprocessed image, (1, 3, h, w), as given to the CAM.
        maps: (h, w) float maps at the tensor's size (cams.raw_maps gives these). Only the ranking of their pixels
            matters for ROAD; the confidence change multiplies the input by them as they are (CAMs are in [0, 1]).
        seed: ties in the maps and the imputation noise (the same noise for every map: common random numbers).
    Raises:
        InvalidInputError: a map of another size, a fraction outside (0, 1), a class index out of range.
        Cancelled: should_stop() became true (checked between batches).
    """
    if not maps:
        return []
    fractions = _check(model, tensor, maps, target, fractions)
    return _Scorer(model, tensor, target, fractions, seed, on_progress, should_stop, len(maps)).run(maps)


def scorecard(
    model: LoadedModel, image, heatmaps: dict[str, np.ndarray], target: int, *,
    fractions: Sequence[float] = FRACTIONS, seed: int = 0, on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Scorecard:
    """Score heatmaps given at the image's own size (as CamResult.heatmap) and the baselines, in one pass.

    The maps are resized to the model's input, where pixels are removed. Baselines: a random map (one uniform
    value per RANDOM_CELL-pixel cell, smoothly upscaled), the inverted map (1 - map) of the method that scores
    best, and the Sobel gradient magnitude of the image. Raises as `score`.
    """
    import cv2

    if not heatmaps:
        raise InvalidInputError("Give at least one heatmap to score.")
    started = time.perf_counter()
    tensor = preprocessing.to_tensor(image, model.spec)
    height, width = tensor.shape[-2:]
    names = list(heatmaps)
    maps = [cv2.resize(np.asarray(heatmaps[n], np.float32), (width, height), interpolation=cv2.INTER_AREA)
            for n in names]
    extra = [random_map((height, width), seed=seed), edge_map(tensor, model.spec.mean, model.spec.std)]
    fractions = _check(model, tensor, maps, target, fractions)
    scorer = _Scorer(model, tensor, target, fractions, seed, on_progress, should_stop, len(maps) + 3)
    first = scorer.run(maps + extra)
    methods = dict(zip(names, first[: len(names)], strict=True))
    best = max(names, key=lambda n: methods[n].faithfulness)
    (inverted,) = scorer.run([1.0 - maps[names.index(best)]])
    baselines = {"random": first[-2], "inverted": inverted, "edges": first[-1]}
    return Scorecard(target, methods, baselines, best, time.perf_counter() - started)


def scorecards(
    model: LoadedModel, images: Sequence, heatmaps: Sequence[dict[str, np.ndarray]], targets: Sequence[int], *,
    fractions: Sequence[float] = FRACTIONS, seed: int = 0, on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Scorecard]:
    """`scorecard` for each image (its heatmaps and target), one progress from 0 to 1 over all of them.

    `mean(scorecards(...))` is the ranking over a set of images. Raises as `score`.
    """
    if not len(images) == len(heatmaps) == len(targets):
        raise InvalidInputError(f"Give one heatmap dict and one target per image: {len(images)} images, "
                                f"{len(heatmaps)} heatmap dicts, {len(targets)} targets.")
    cards = []
    for index, (image, maps, target) in enumerate(zip(images, heatmaps, targets, strict=True)):
        report = None
        if on_progress is not None:
            def report(fraction, message, index=index):
                on_progress((index + fraction) / len(images), f"image {index + 1} of {len(images)}: {message}")
        cards.append(scorecard(model, image, maps, target, fractions=fractions, seed=seed, on_progress=report,
                               should_stop=should_stop))
    return cards


def mean(cards: Sequence[Scorecard]) -> Scorecard:
    """The scores of several images averaged per fraction (same methods and fractions in every card).

    `target` and `inverted` of the result are the most common among the cards; `seconds` and `images` add up.
    """
    if not cards:
        raise InvalidInputError("Give at least one scorecard to average.")
    methods = list(cards[0].methods)
    if any(list(c.methods) != methods for c in cards):
        raise InvalidInputError("Scorecards to average must score the same methods.")
    inverted = Counter(c.inverted for c in cards).most_common(1)[0][0]
    targets = Counter(c.target for c in cards).most_common(1)[0][0]
    return Scorecard(
        targets,
        {m: average([c.methods[m] for c in cards]) for m in methods},
        {b: average([c.baselines[b] for c in cards]) for b in BASELINES},
        inverted, sum(c.seconds for c in cards), sum(c.images for c in cards),
    )


def average(scores: Sequence[Faithfulness]) -> Faithfulness:
    """Faithfulness records averaged field by field (they must share their fractions)."""
    if any(s.fractions != scores[0].fractions for s in scores):
        raise InvalidInputError("Scores to average must remove the same fractions.")
    return Faithfulness(
        scores[0].fractions,
        tuple(float(v) for v in np.mean([s.most_first for s in scores], axis=0)),
        tuple(float(v) for v in np.mean([s.least_first for s in scores], axis=0)),
        float(np.mean([s.confidence_change for s in scores])),
    )


def random_map(shape: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """(h, w) float32 in [0, 1]: one uniform value per RANDOM_CELL-pixel cell, bilinearly upscaled."""
    import cv2

    height, width = shape
    grid = np.random.default_rng([seed, 1]).random((max(1, round(height / RANDOM_CELL)),
                                                     max(1, round(width / RANDOM_CELL)))).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def edge_map(tensor: torch.Tensor, mean_rgb: Sequence[float], std_rgb: Sequence[float]) -> np.ndarray:
    """(h, w) float32 in [0, 1]: the Sobel gradient magnitude of the (de-normalised) image's grey levels."""
    import cv2

    rgb = tensor[0].detach().cpu().numpy() * np.asarray(std_rgb, np.float32)[:, None, None]
    rgb = rgb + np.asarray(mean_rgb, np.float32)[:, None, None]
    grey = np.ascontiguousarray((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float32))
    magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    top = float(magnitude.max())
    return (magnitude / top).astype(np.float32) if top > 0 else np.zeros_like(grey)


def removed_pixels(cam: np.ndarray, fraction: float, *, most_first: bool, order: np.ndarray) -> np.ndarray:
    """(h, w) bool: the round(fraction * pixels) pixels the map ranks highest (most_first) or lowest.

    order: a permutation of the pixels that breaks ties in `cam` (the same for every map of one image).
    """
    ranked = np.lexsort((order, np.nan_to_num(cam, nan=0.0).ravel()))  # ascending relevance
    count = int(round(fraction * cam.size))
    chosen = ranked[cam.size - count:] if most_first else ranked[:count]
    removed = np.zeros(cam.size, dtype=bool)
    removed[chosen] = True
    return removed.reshape(cam.shape)


def rank_correlation(a: np.ndarray, b: np.ndarray, *, size: int = 56) -> float:
    """Spearman rank correlation of two heatmaps after resizing both to size x size (1: same ranking)."""
    import cv2
    from scipy.stats import spearmanr

    small = [cv2.resize(np.asarray(m, np.float32), (size, size), interpolation=cv2.INTER_AREA).ravel() for m in (a, b)]
    if small[0].std() == 0 or small[1].std() == 0:
        return 0.0
    return float(spearmanr(small[0], small[1]).statistic)


def _check(model, tensor, maps, target, fractions) -> tuple[float, ...]:
    height, width = tensor.shape[-2:]
    for cam in maps:
        if np.shape(cam) != (height, width):
            raise InvalidInputError(f"Maps must be at the tensor's size {(height, width)}, got {np.shape(cam)}.")
    last = len(model.categories) - 1
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not 0 <= int(target) <= last:
        raise InvalidInputError(f"Class index must be an integer between 0 and {last}, got {target!r}.")
    fractions = tuple(float(f) for f in fractions)
    if not fractions or not all(0.0 < f < 1.0 for f in fractions):
        raise InvalidInputError(f"Removal fractions must be between 0 and 1 (exclusive), got {fractions}.")
    return fractions


class _Scorer:
    """The perturbed images of one image's maps, imputed on the cores and classified BATCH at a time."""

    def __init__(self, model, tensor, target, fractions, seed, on_progress, should_stop, maps_expected):
        self.model, self.target, self.fractions = model, int(target), fractions
        self.image = tensor[0].detach().cpu().numpy().astype(np.float32)
        self.order = np.random.default_rng(seed).permutation(self.image.shape[1] * self.image.shape[2])
        self.seed, self.on_progress, self.should_stop = seed, on_progress, should_stop
        self.total = maps_expected * (2 * len(fractions) + 1)  # perturbed images, for the progress
        self.done = 0
        self.before = float(self._probabilities(self.image[None])[0])

    def run(self, maps: Sequence[np.ndarray]) -> list[Faithfulness]:
        maps = [np.nan_to_num(np.asarray(m, np.float32), nan=0.0, posinf=1.0, neginf=0.0) for m in maps]
        jobs = [(i, kind, k) for i in range(len(maps)) for kind in ("mult", "most", "least")
                for k in (range(1) if kind == "mult" else range(len(self.fractions)))]
        after: dict[tuple, float] = {}
        for start in range(0, len(jobs), BATCH):
            if self.should_stop is not None and self.should_stop():
                raise Cancelled("Faithfulness scoring was stopped: nothing was kept.")
            chunk = jobs[start:start + BATCH]
            batch = self._perturbed(maps, chunk)
            for job, p in zip(chunk, self._probabilities(batch), strict=True):
                after[job] = float(p) - self.before
            self.done += len(chunk)
            if self.on_progress is not None:
                self.on_progress(min(self.done / self.total, 1.0),
                                 f"{self.done} of {self.total} perturbed images scored")
        return [
            Faithfulness(self.fractions, tuple(after[(i, "most", k)] for k in range(len(self.fractions))),
                         tuple(after[(i, "least", k)] for k in range(len(self.fractions))), after[(i, "mult", 0)])
            for i in range(len(maps))
        ]

    def _perturbed(self, maps, chunk) -> np.ndarray:
        imputed = [(self.image, removed_pixels(maps[i], self.fractions[k],
                                               most_first=kind == "most", order=self.order),
                    # common random numbers: every map gets the same noise for the same direction and fraction
                    (self.seed, 1 if kind == "most" else 2, k))
                   for i, kind, k in chunk if kind != "mult"]
        filled = iter(imputation.impute_many(imputed))
        return np.stack([self.image * maps[i][None] if kind == "mult" else next(filled)
                         for i, kind, k in chunk])

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        if self.model.device.type == "cpu":  # on a CPU, channels_last input alone makes the pass about 1.2x faster
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return predictions.probabilities(self.model, tensor)[:, self.target].numpy()
