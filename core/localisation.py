"""Do heatmaps point at the object? Scores against ground-truth masks (the generated shapes set).

Three scores per CAM method, averaged over images:
- heat share: the fraction of the map's total heat that falls inside the mask (a uniform map scores the
  mask's area fraction);
- pointing game (Zhang et al., 2016): whether the hottest pixel lies inside the mask, with a tolerance
  of 15 px at 224 px, scaled to the image;
- energy-based pointing game (Wang et al., 2020, Score-CAM): the heat share of the mask's bounding box, the
  score of data sets that only have boxes (a uniform map scores the box's area fraction).
A random smooth map (`RANDOM`) is scored alongside as the floor a real method must beat.

One shape on a plain background cannot tell a class-specific map from a class-agnostic one: the object is the
only thing there. `pair_pictures` draws two shapes of different classes in one picture, with a mask each, and
`pairs` explains every picture once for each shape's class: a map that follows the class puts its heat on the
asked shape, a class-agnostic map (attention rollout, Eigen-CAM, the random map) is the same for both targets
and splits its heat alike, whichever shape is asked.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core import cams, predictions, preprocessing, shape_drawing
from core.datasets import SHAPES, Dataset
from core.errors import InvalidInputError
from core.models import LoadedModel

Progress = Callable[[float, str], None]
RANDOM = "randomcam"  # baseline: a smooth random map, seeded per image
POINTING_TOLERANCE = 15 / 224  # of the image's shorter side


@dataclass(frozen=True)
class LocalisationRow:
    method: str
    title: str
    heat_share: float  # mean share of heat inside the mask, in [0, 1]
    pointing: float  # pointing-game hit rate, in [0, 1]
    energy_box: float  # mean share of heat inside the mask's bounding box, in [0, 1]
    images: int
    seconds: float  # total time spent on this method


@dataclass(frozen=True)
class Localisation:
    rows: tuple[LocalisationRow, ...]  # best heat share first
    mask_share: float  # mean area of the masks: what a uniform map would score
    box_share: float = float("nan")  # mean area of the masks' bounding boxes: a uniform map's energy_box


def heat_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heat inside the mask; 0 for an all-zero map. Both (H, W), the same size."""
    heatmap, mask = _pair(heatmap, mask)
    total = float(heatmap.sum())
    return float(heatmap[mask].sum()) / total if total > 0 else 0.0


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray, *, tolerance: float | None = None) -> bool:
    """Whether the hottest pixel lies within `tolerance` px of the mask (default 15 px per 224 px)."""
    heatmap, mask = _pair(heatmap, mask)
    if not mask.any():
        return False
    tolerance = POINTING_TOLERANCE * min(mask.shape) if tolerance is None else tolerance
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ys, xs = np.nonzero(mask)
    return bool(((ys - y) ** 2 + (xs - x) ** 2).min() <= tolerance**2)


def box(mask: np.ndarray) -> np.ndarray:
    """The mask's bounding box as a mask of the same size (all False for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros_like(mask)
    if mask.any():
        ys, xs = np.nonzero(mask)
        out[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] = True
    return out


def random_map(size: tuple[int, int], *, seed: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: uniform noise on a 7 x 7 grid, upscaled smoothly (a CAM-like blob field)."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(np.float32(rng.random((7, 7))), mode="F")
    heat = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    heat = heat - heat.min()
    return heat / heat.max() if heat.max() > 0 else heat


def _pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    mask = np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise InvalidInputError(f"Heatmap {heatmap.shape} and mask {mask.shape} must have the same size.")
    return np.clip(heatmap, 0.0, None), mask


def score(
    model: LoadedModel,
    dataset: Dataset,
    *,
    methods: Sequence[str] = ("gradcam", "gradcam++", "layercam", "eigencam"),
    baseline: bool = True,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> Localisation:
    """Heat share and pointing game of each method over the dataset's images, best first.

    Each image is explained for the backbone's own top-1 class; the one-pass methods share one pass.

    Raises:
        InvalidInputError: the dataset has no masks (only the shapes set has them), or a bad method.
    """
    if dataset.masks is None:
        raise InvalidInputError(f"The {dataset.name} set has no object masks; localisation needs the shapes set.")
    if not methods and not baseline:
        raise InvalidInputError("Choose at least one CAM method to score.")
    chosen = [cams.check_method(m, model).name for m in methods]
    report = on_progress or (lambda fraction, message: None)
    names = [*chosen, *([RANDOM] if baseline else [])]
    shares: dict[str, list[float]] = {n: [] for n in names}
    hits: dict[str, list[bool]] = {n: [] for n in names}
    energies: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    for index in range(len(dataset)):
        image, mask = dataset.images[index], dataset.masks[index]
        boxed = box(mask)
        heatmaps: dict[str, np.ndarray] = {}
        if chosen:
            for result in cams.compute(model, image, methods=chosen):
                heatmaps[result.method] = result.heatmap
                seconds[result.method] += result.seconds
        if baseline:
            began = time.perf_counter()
            heatmaps[RANDOM] = random_map(image.size, seed=seed * 1_000_003 + index)
            seconds[RANDOM] += time.perf_counter() - began
        for name, heat in heatmaps.items():
            shares[name].append(heat_share(heat, mask))
            hits[name].append(pointing_hit(heat, mask))
            energies[name].append(heat_share(heat, boxed))
        report((index + 1) / len(dataset), f"{index + 1} of {len(dataset)} images")
    rows = [
        LocalisationRow(
            name, cams.METHODS[name].title if name in cams.METHODS else "Random map (baseline)",
            float(np.mean(shares[name])), float(np.mean(hits[name])), float(np.mean(energies[name])),
            len(dataset), seconds[name],
        )
        for name in names
    ]
    rows.sort(key=lambda r: (-r.heat_share, -r.pointing))
    return Localisation(tuple(rows), float(np.mean([np.mean(m) for m in dataset.masks])),
                        float(np.mean([np.mean(box(m)) for m in dataset.masks])))


# ---------------------------------------------------------------------------------------------
# Two shapes per picture: does the map follow the class it is asked for?


@dataclass(frozen=True)
class PairPicture:
    image: Image.Image
    labels: tuple[int, int]  # class indices (into `classes`) of the two shapes, different
    masks: tuple[np.ndarray, np.ndarray]  # (H, W) bool, disjoint
    classes: tuple[str, ...]


@dataclass(frozen=True)
class PairRow:
    method: str
    title: str
    asked_share: float  # mean share of the map's heat on the shape whose class was explained
    other_share: float  # ... on the other shape
    split: float  # mean asked / (asked + other) heat: 0.5 for a map that does not follow the class
    asked_pointing: float  # how often the hottest pixel lies on the asked shape
    other_pointing: float  # ... on the other shape (the tolerance cannot reach both: `draw_pair`'s gap)
    moved: float  # mean share of the heat that moves when the target changes (0: the same map for both)
    explanations: int  # two per picture
    seconds: float


@dataclass(frozen=True)
class PairLocalisation:
    rows: tuple[PairRow, ...]  # largest asked - other heat share first
    mask_share: float  # mean area of one shape's mask: what a uniform map scores on either
    top_two: float  # how often the model's two most probable classes are the picture's two shapes


def pair_pictures(seed: int = 0, n: int = 150, size: int = 128, *,
                  classes: Sequence[str] = SHAPES[:4]) -> list[PairPicture]:
    """`n` pictures of two shapes of different classes (`shape_drawing.draw_pair`), deterministic from `seed`.
    Every ordered pair of classes comes up equally often (n a multiple of their number, in shuffled order)."""
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(set(classes)) < 2:
        raise InvalidInputError(f"Shapes must be two or more of {', '.join(SHAPES)}; got {list(classes)}.")
    rng = np.random.default_rng(seed)
    ordered = [(a, b) for a in range(len(classes)) for b in range(len(classes)) if a != b]
    order = np.resize(np.arange(len(ordered)), n)
    rng.shuffle(order)
    pictures = []
    for k in order:
        a, b = ordered[k]
        image, mask_a, mask_b = shape_drawing.draw_pair(rng, (classes[a], classes[b]), size)
        pictures.append(PairPicture(image, (a, b), (mask_a, mask_b), tuple(classes)))
    return pictures


def pairs(
    model: LoadedModel,
    pictures: Sequence[PairPicture],
    *,
    methods: Sequence[str] = ("gradcam",),
    baseline: bool = True,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> PairLocalisation:
    """Each picture explained for each of its two shapes' classes; per method, the heat share and pointing on
    the asked shape and on the other one, and how much heat moves between the two targets.

    The random baseline is one seeded map per picture, the same for both targets (class-agnostic by design).

    Raises:
        InvalidInputError: the model's classes are not the pictures' classes, no pictures, or a bad method.
    """
    if not pictures:
        raise InvalidInputError("No pair pictures to score.")
    if tuple(model.categories) != pictures[0].classes:
        raise InvalidInputError(f"The model's classes {list(model.categories)} are not the pictures' "
                                f"{list(pictures[0].classes)}.")
    if not methods and not baseline:
        raise InvalidInputError("Choose at least one CAM method to score.")
    chosen = [cams.check_method(m, model).name for m in methods]
    report = on_progress or (lambda fraction, message: None)
    names = [*chosen, *([RANDOM] if baseline else [])]
    scores: dict[str, list[tuple[float, float, float, bool, bool]]] = {n: [] for n in names}
    moved: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    top_two = []
    for index, picture in enumerate(pictures):
        with torch.no_grad():
            ranked = predictions.probabilities(model, preprocessing.to_tensor(picture.image, model.spec))[0]
        top_two.append(set(ranked.argsort(descending=True)[:2].tolist()) == set(picture.labels))
        maps: list[dict[str, np.ndarray]] = []
        for asked in (0, 1):
            heatmaps: dict[str, np.ndarray] = {}
            if chosen:
                for result in cams.compute(model, picture.image, methods=chosen, target=picture.labels[asked]):
                    heatmaps[result.method] = result.heatmap
                    seconds[result.method] += result.seconds
            if baseline:
                began = time.perf_counter()
                heatmaps[RANDOM] = random_map(picture.image.size, seed=seed * 1_000_003 + index)
                seconds[RANDOM] += time.perf_counter() - began
            mine, theirs = picture.masks[asked], picture.masks[1 - asked]
            for name, heat in heatmaps.items():
                on_mine, on_theirs = heat_share(heat, mine), heat_share(heat, theirs)
                split = on_mine / (on_mine + on_theirs) if on_mine + on_theirs > 0 else 0.5
                scores[name].append((on_mine, on_theirs, split, pointing_hit(heat, mine), pointing_hit(heat, theirs)))
            maps.append(heatmaps)
        for name in names:
            moved[name].append(_moved(maps[0][name], maps[1][name]))
        report((index + 1) / len(pictures), f"{index + 1} of {len(pictures)} pictures")
    rows = []
    for name in names:
        asked, other, split, hit, miss = (float(np.mean(column)) for column in zip(*scores[name], strict=True))
        title = cams.METHODS[name].title if name in cams.METHODS else "Random map (baseline)"
        rows.append(PairRow(name, title, asked, other, split, hit, miss, float(np.mean(moved[name])),
                            len(scores[name]), seconds[name]))
    rows.sort(key=lambda r: (-(r.asked_share - r.other_share), -r.asked_pointing))
    area = float(np.mean([np.mean(m) for p in pictures for m in p.masks]))
    return PairLocalisation(tuple(rows), area, float(np.mean(top_two)))


def _moved(first: np.ndarray, second: np.ndarray) -> float:
    """Half the L1 distance between the two maps, each scaled to sum 1: the share of heat that moved."""
    a, b = (np.clip(np.nan_to_num(np.asarray(m, dtype=np.float64)), 0, None) for m in (first, second))
    if a.sum() == 0 or b.sum() == 0:
        return float(a.sum() != b.sum())
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())
