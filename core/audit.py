"""Explanations over a whole dataset: a heatmap for every image at about the cost of classifying it.

One batched pass per batch gives everything: the forward pass yields the logits (prediction, top-k) and,
through a hook on the head's input, the penultimate features (the same ones `embeddings.extract` gives);
a backward pass from each image's explained class score stops at the target layer (the layer's output is
swapped for a leaf tensor), so it costs about the head's share of a forward pass. The map itself is made
by pytorch-grad-cam's own code (`cams.weigh`) from the captured batch, kept at `MAP_SIDE` x `MAP_SIDE` in
float16. For a square image (or a fixed-size network) in fp32 it is the map `cams.compute` gives for the same
image (tested); other images are resized whole to the square, as `embeddings.extract` does.

Statistics of every map (`statistics`) are what an analyst sorts by to find the images that are right for
the wrong reasons: how concentrated the heat is, how much of it lies on the image border, where its centre
is, and where object masks exist (the shapes set) how much of it falls on the object and whether the
hottest point does (the pointing game, as `core.localisation` scores it).
"""

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from core import audit_attention, audit_both, cams, embeddings, hooks, preprocessing
from core.audit_export import described, table_bytes, write  # noqa: F401 (core.audit's export, by name)
from core.cam_methods import METHODS, applicable, check_method
from core.datasets import Dataset
from core.errors import Cancelled, InvalidInputError
from core.map_statistics import (  # noqa: F401 (the audit's statistics, used by name through core.audit)
    BORDER, MAP_SIDE, agreement, border_band, mask_cells, shrink, statistics, uniform_border, upsample)
from core.models import LoadedModel
from core.runtime import HalvingBatches

Progress = Callable[[float, str], None]
TOP_K = 5
TARGETS = ("predicted", "true", "both")
STATISTICS = ("heat_half_area", "heat_entropy", "heat_border", "centroid_x", "centroid_y")
MASK_STATISTICS = ("heat_in_mask", "pointing_hit")
#: the reviews an analyst asks for, as (title, statistic, descending, correct: True/False/None for all)
REVIEWS = (
    ("Most heat outside the object", "heat_in_mask", False, None),
    ("Correct, but most heat outside the object", "heat_in_mask", False, True),
    ("Most heat on the border", "heat_border", True, None),
    ("Correct, with most heat on the border", "heat_border", True, True),
    ("Wrong, with the most concentrated heat", "heat_half_area", False, False),
    ("Most concentrated heat", "heat_half_area", False, None),
    ("Most spread-out heat", "heat_entropy", True, None),
)


@dataclass(frozen=True)
class Audit:
    """Per-image predictions, features, low-resolution maps and map statistics of a dataset, in its order."""

    model: str
    method: str
    layer: str
    target: str  # "predicted" or "true": which class each map explains; "both": maps_true explains the true one
    precision: str  # what the forward pass ran in ("fp32", "bf16", "fp16")
    image_size: int  # the square side every image was resized to (whole image, no crop)
    seconds: float
    dataset: str
    classes: tuple[str, ...]  # the dataset's classes (labels index these)
    categories: tuple[str, ...] = field(repr=False)  # the model's classes (predictions index these)
    files: tuple[str, ...] = field(repr=False)
    labels: np.ndarray = field(repr=False)  # (N,) int64 into classes
    predictions: np.ndarray = field(repr=False)  # (N,) int64 into categories
    top_classes: np.ndarray = field(repr=False)  # (N, k) int64, most probable first
    top_probabilities: np.ndarray = field(repr=False)  # (N, k) float32 softmax
    explained: np.ndarray = field(repr=False)  # (N,) int64: the class each map explains (into categories)
    features: np.ndarray = field(repr=False)  # (N, D) float32: the input of the final Linear
    maps: np.ndarray = field(repr=False)  # (N, MAP_SIDE, MAP_SIDE) float16 in [0, 1]
    stats: dict[str, np.ndarray] = field(repr=False)  # name -> (N,) float32 (pointing_hit: bool)
    logits: np.ndarray | None = field(default=None, repr=False)  # (N, classes) float32, with keep_logits only
    maps_true: np.ndarray | None = field(default=None, repr=False)  # target "both": the true class's maps

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images_per_second(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def comparable(self) -> bool:
        """Whether the model's classes are the dataset's (a fine-tuned or built-in head), so `correct` means something."""
        return tuple(self.categories) == tuple(self.classes)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: prediction == label, where the model's classes are the dataset's; all False otherwise."""
        if not self.comparable:
            return np.zeros(len(self), dtype=bool)
        return self.predictions == self.labels

    def rows(self) -> dict[str, list]:
        """The per-image table as columns: file, label, prediction, probability, correct, top-k, statistics."""
        return columns(self.classes, self.categories, self.files, self.labels, self.predictions, self.top_classes,
                       self.top_probabilities, self.explained, self.stats)

    def summary(self) -> list[dict]:
        """Per dataset class: images, accuracy (where comparable) and the mean of every statistic."""
        out = []
        correct = self.correct
        for index, name in enumerate(self.classes):
            rows = self.labels == index
            entry = {"class": name, "images": int(rows.sum())}
            if self.comparable:
                entry["accuracy"] = float(correct[rows].mean()) if rows.any() else float("nan")
            for stat, values in self.stats.items():
                entry[stat] = float(np.nanmean(values[rows])) if rows.any() and not np.isnan(values[rows]).all() \
                    else float("nan")
            out.append(entry)
        return out

    def mean_maps(self, *, correct: bool | None = None) -> np.ndarray:
        """(classes, side, side) float32: each dataset class's mean map, over its correct (True), wrong (False)
        or all (None) images; NaN where a class has no such image."""
        keep = np.ones(len(self), dtype=bool) if correct is None else (self.correct == correct)
        side = self.maps.shape[1]
        out = np.full((len(self.classes), side, side), np.nan, dtype=np.float32)
        for index in range(len(self.classes)):
            rows = keep & (self.labels == index)
            if rows.any():
                out[index] = self.maps[rows].astype(np.float32).mean(axis=0)
        return out

    def ranked(self, statistic: str, *, descending: bool = True, correct: bool | None = None) -> np.ndarray:
        """Row indices sorted by `statistic` (for "correct, with the most heat outside the object": statistic
        "heat_in_mask", descending=False, correct=True)."""
        if statistic not in self.stats:
            raise InvalidInputError(f"Unknown statistic '{statistic}'. Available: {', '.join(self.stats)}.")
        rows = np.arange(len(self)) if correct is None else np.flatnonzero(self.correct == correct)
        values = self.stats[statistic][rows].astype(np.float64)
        order = np.argsort(-values if descending else values, kind="stable")
        return rows[order]

    def heatmap(self, index: int, width: int, height: int, *, true: bool = False) -> np.ndarray:
        """(height, width) float32 in [0, 1]: image `index`'s stored map (`true`: of its true class, target
        "both"), upsampled (bilinear) to that size."""
        return upsample((self.maps_true if true else self.maps)[index], width, height)

    def to_dict(self) -> dict:
        """The settings and the per-class summary (what `python -m core audit --json` prints)."""
        return {
            "model": self.model, "method": self.method, "layer": self.layer, "target": self.target,
            "precision": self.precision, "image_size": self.image_size, "dataset": self.dataset,
            "images": len(self), "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "accuracy": float(self.correct.mean()) if self.comparable and len(self) else None,
            "classes": self.summary(),
        }


def columns(classes: Sequence[str], categories: Sequence[str], files: Sequence[str], labels: np.ndarray,
            predictions: np.ndarray, top_classes: np.ndarray, top_probabilities: np.ndarray, explained: np.ndarray,
            stats: dict[str, np.ndarray]) -> dict[str, list]:
    """The export's per-image columns (file, label, prediction, probability, correct, explained, topK and
    topK_probability, the statistics) of some rows: every engine's table, whole or one shard at a time."""
    comparable = tuple(categories) == tuple(classes)
    table: dict[str, list] = {
        "file": list(files),
        "label": [classes[i] for i in labels],
        "prediction": [categories[i] for i in predictions],
        "probability": top_probabilities[:, 0].astype(float).tolist(),
        # null where the model's classes are other than the set's
        "correct": (np.asarray(predictions) == np.asarray(labels)).tolist() if comparable else [None] * len(labels),
        "explained": [categories[i] for i in explained],
    }
    for rank in range(top_classes.shape[1]):
        table[f"top{rank + 1}"] = [categories[i] for i in top_classes[:, rank]]
        table[f"top{rank + 1}_probability"] = top_probabilities[:, rank].astype(float).tolist()
    for name, values in stats.items():
        table[name] = np.asarray(values).tolist()
    return table


# ---------------------------------------------------------------------------------------------
# the batched pass


@dataclass(frozen=True)
class Plan:
    """The checked settings of an audit: what every batch of every engine runs (`explain_batch`)."""

    method: str
    target: str  # "predicted", "true" or "both"
    layer: str
    precision: str  # what runs: "fp32", "bf16" or "fp16"
    size: int  # the square side
    top_k: int = TOP_K

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def plan(model: LoadedModel, classes: Sequence[str], *, method: str = "gradcam", target: str = "predicted",
         layer: str | None = None, precision: str = "fp32", size: int | None = None, top_k: int = TOP_K) -> Plan:
    """The settings of an audit of a set with `classes` by `model`, checked (see `explain_dataset`)."""
    if target not in TARGETS:
        raise InvalidInputError(f"Unknown target '{target}'. Choose one of: {', '.join(TARGETS)}.")
    info = check_method(method, model)  # an attention method on a CNN: refused with the reason
    if not info.one_pass:
        raise InvalidInputError(
            f"{info.title} costs {info.cost}: a dataset is explained with a one-pass method "
            f"({', '.join(m for m in applicable(model) if METHODS[m].one_pass)}).")
    if target in ("true", "both") and tuple(model.categories) != tuple(classes):
        raise InvalidInputError(
            f"Explaining the true class{' beside the predicted one' if target == 'both' else ''} needs a model whose "
            "classes are the dataset's (train one on the Transfer learning page); this model's classes are its own. "
            "Explain the predicted class instead.")
    layer = audit_attention.LAYER if info.attention else layer or model.spec.cam_layer
    if not info.attention:  # the attention methods read every block
        hooks.find(model.module, layer)  # LayerNotFoundError now, not in the first batch
    dtype = embeddings.resolve_precision(precision, model.device, kind="audit")
    if dtype == torch.float16 and precision == "auto" and info.uses_gradients:
        dtype = None  # fp16 gradients without loss scaling can underflow to blank maps: 'auto' keeps fp32 there
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return Plan(method, target, layer, names[dtype], preprocessing.side(model.spec, size), top_k)


def explain_batch(model: LoadedModel, plan_: Plan, pixels: Tensor, labels: np.ndarray,
                  masks: Sequence[np.ndarray | None] | None = None, *, halving: HalvingBatches | None = None) -> dict:
    """One batch of (B, 3, S, S) uint8 squares with their (B,) labels -> every per-image result of the audit:
    features, logits, predictions, top_classes, top_probabilities, explained, maps and the `statistics`
    (with `masks`: one per image, None where it cannot be read); target "both" adds maps_true and the
    statistics of those suffixed "_true".

    The one per-batch step of an audit: `explain_dataset` runs it over a DataLoader, core.distributed in each
    model actor of a Ray Data pipeline. `halving` (kept across batches) halves the chunk on a CUDA OOM.
    """
    info = METHODS[plan_.method]
    module = None if info.attention else hooks.find(model.module, plan_.layer)
    truth = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    halving = halving or HalvingBatches(max(1, len(pixels)))

    def step(chunk: "_Pairs", true: bool = plan_.target == "true"):
        batch = preprocessing.normalise(chunk.pixels.to(model.device), model.spec)
        batch = batch.contiguous(memory_format=torch.channels_last)
        if info.attention:  # every block's attention, read on the batch's one pass (core.audit_attention)
            return audit_attention.batch_pass(model, plan_.method, batch, chunk.labels if true else None,
                                              plan_.dtype)
        return _pass(model, module, plan_.layer, batch, chunk.labels if true else None,
                     info.uses_gradients, plan_.dtype, plan_.method)

    def of_labels(rows: np.ndarray) -> np.ndarray:  # "both": the maps of these rows' labels
        picked = torch.as_tensor(rows)
        return np.concatenate([p[3] for p in halving.run(_Pairs(pixels[picked], truth[picked]),
                                                         lambda chunk: step(chunk, True))])

    parts = list(zip(*halving.run(_Pairs(pixels, truth), step), strict=True))
    features, logits, explained, maps = (np.concatenate(p) for p in parts)
    probabilities = torch.from_numpy(logits).softmax(dim=1)
    top = probabilities.topk(min(plan_.top_k, probabilities.shape[1]), dim=1)
    out = {
        "features": features.astype(np.float32, copy=False), "logits": logits.astype(np.float32, copy=False),
        "predictions": logits.argmax(axis=1).astype(np.int64),
        "top_classes": top.indices.numpy().astype(np.int64), "top_probabilities": top.values.numpy().astype(np.float32),
        "explained": explained.astype(np.int64), "maps": maps, "stats": statistics(maps, masks),
    }
    if plan_.target == "both":
        second = audit_both.true_maps(maps, out["stats"], explained, np.asarray(labels), masks,
                                      of_labels if info.class_specific else None)
        out.update(maps_true=second["maps_true"], stats={**out["stats"], **second["stats"]})
    return out


KEPT = ("predictions", "top_classes", "top_probabilities", "explained", "features", "maps")  # of explain_batch's


def fill(rows: dict | None, part: dict, start: int, total: int, *, keep: Sequence[str] = KEPT) -> dict:
    """`rows` (`keep` and "stats" of all `total` images, allocated at the first batch) with `explain_batch`'s `part`
    written in at row `start`: no list of batches to concatenate (twice the memory at the end); logits only when
    `keep` names them."""
    rows = rows or {**{k: np.empty((total, *part[k].shape[1:]), part[k].dtype) for k in keep},
                    "stats": {k: np.empty(total, v.dtype) for k, v in part["stats"].items()}}
    pairs = [(rows[k], part[k]) for k in keep] + [(rows["stats"][k], v) for k, v in part["stats"].items()]
    for into, values in pairs:
        into[start:start + len(values)] = values
    return rows


def assemble(model: LoadedModel, plan_: Plan, *, dataset: str, classes: Sequence[str], files: Sequence[str],
             labels: np.ndarray, rows: dict, seconds: float) -> Audit:
    """The Audit of `explain_batch`'s results, `fill`ed into `rows` in the rows' order (with logits when kept)."""
    return Audit(model=model.name, method=plan_.method, layer=plan_.layer, target=plan_.target,
                 precision=plan_.precision, image_size=plan_.size, seconds=seconds, dataset=dataset,
                 classes=tuple(classes), categories=tuple(model.categories), files=tuple(files),
                 labels=np.asarray(labels, dtype=np.int64), logits=rows.get("logits"), maps_true=rows.get("maps_true"),
                 **{k: rows[k] for k in (*KEPT, "stats")})


def explain_dataset(
    model: LoadedModel,
    dataset: Dataset,
    *,
    method: str = "gradcam",
    target: str = "predicted",
    layer: str | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    size: int | None = None,
    top_k: int = TOP_K,
    keep_logits: bool = False,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Audit:
    """Prediction, top-k, features and a `method` map of every image of `dataset`, batched, with statistics.

    `method` is one of the one-pass methods (computed from the shared pass: Grad-CAM, HiResCAM, Grad-CAM++,
    XGrad-CAM, LayerCAM, Eigen-CAM...; on a transformer also rollout, grad_rollout and LeGrad, read from every
    block's attention on the batch's pass: `core.audit_attention`); `target` "predicted" explains each image's
    predicted class, "true" its label (needs the model's classes to be the dataset's), "both" the two
    (`maps_true`, statistics suffixed "_true"; the second map computed only for the wrong predictions,
    `core.audit_both`). Images are resized whole to `size` (default: the spec's input size), as
    `embeddings.extract` does. The model's lock is held per batch, so other sessions interleave; no hooks are left
    on the model. `keep_logits`: keep every class's logit too (what the features of `embeddings.extract` come
    with, for a zero-shot evaluation).

    Raises:
        InvalidInputError: an empty dataset, a bad batch size, precision, target or method.
        UnknownMethodError, LayerNotFoundError.
        Cancelled: should_stop() became true (polled between batches).
    """
    if len(dataset) == 0:
        raise InvalidInputError("The dataset is empty: nothing to explain.")
    if not 1 <= batch_size <= 1024:
        raise InvalidInputError(f"The batch size must be between 1 and 1024, got {batch_size}.")
    settings = plan(model, dataset.classes, method=method, target=target, layer=layer, precision=precision,
                    size=size, top_k=top_k)
    report = on_progress or (lambda fraction, message: None)
    source = embeddings.tensors(model, dataset, size=size, normalise=False)
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=0)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    filled: dict | None = None  # every image's results, preallocated at the first batch (`fill`)
    done = 0
    started = time.perf_counter()
    report(0.0, f"Explaining {len(dataset)} images with {METHODS[method].title}")
    halving = HalvingBatches(batch_size, on_halve=lambda old, new: report(
        done / len(dataset), f"The GPU ran out of memory at batch {old}: continuing at {new}"))
    for start, pixels in zip(range(0, len(dataset), batch_size), loader, strict=False):
        if should_stop is not None and should_stop():
            raise Cancelled(f"Explaining the dataset was stopped after {done} of {len(dataset)} images.")
        rows = list(range(start, start + len(pixels)))
        masks = None if dataset.masks is None else _Masks(dataset.masks, rows)
        part = explain_batch(model, settings, pixels, labels[rows], masks, halving=halving)
        keep = (*KEPT, *(("logits",) if keep_logits else ()), *(("maps_true",) if target == "both" else ()))
        filled = fill(filled, part, start, len(dataset), keep=keep)
        done += len(pixels)
        rate = done / max(time.perf_counter() - started, 1e-9)
        report(done / len(dataset), f"{done} of {len(dataset)} images ({rate:.0f} images/s)")
    return assemble(model, settings, dataset=dataset.name, classes=dataset.classes, files=dataset.files,
                    labels=labels, rows=filled, seconds=time.perf_counter() - started)


class _Masks(Sequence):
    """Masks `rows` of a dataset, each read on access: one that cannot be decoded is None (scored without it)."""

    def __init__(self, masks: Sequence[np.ndarray], rows: list[int]) -> None:
        self.masks, self.rows = masks, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray | None:
        try:
            return self.masks[self.rows[index]]
        except InvalidInputError:
            return None


class _Pairs:
    """(pixels, labels) sliced together, for HalvingBatches."""

    def __init__(self, pixels: Tensor, labels: Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, rows: slice) -> "_Pairs":
        return _Pairs(self.pixels[rows], self.labels[rows])


def _pass(model, module, layer, batch, truth, needs_grads, dtype, method):
    """One batch: (features, logits, explained classes, (B, side, side) float16 maps)."""
    autocast = torch.autocast(batch.device.type, dtype=dtype) if dtype is not None else nullcontext()
    head = model.spec.head
    with model.lock, hooks.leaf(module, requires_grad=needs_grads, name=layer) as store, \
            hooks.capture(model.module, [head], inputs=True) as captured, torch.enable_grad(), autocast:
        logits = model.module(batch)
        explained = (logits.detach().argmax(dim=1) if truth is None else truth.to(logits.device))
        grads = None
        if needs_grads:
            # each image's score depends only on its own activations (eval mode), so the gradient of the sum
            # is every image's own gradient
            score = logits.gather(1, explained.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, store["leaf"])
        features = captured[head].float().flatten(1).cpu().numpy()
    activations, grads = cams.as_maps(model, layer, hooks.consumed(store), grads)
    targets = explained.cpu().numpy()
    raw = cams.weigh(method, module, batch.cpu(), activations.float().cpu(),
                     grads.float().cpu() if grads is not None else None, targets)
    return features, logits.detach().float().cpu().numpy(), targets, shrink(raw)


# ---------------------------------------------------------------------------------------------
# export


def reviews(audit: Audit) -> list[tuple[str, str, bool, bool | None]]:
    """The REVIEWS that make sense for `audit`: mask statistics need masks, correct/wrong a comparable model."""
    return [r for r in REVIEWS if r[1] in audit.stats and (r[3] is None or audit.comparable)]
