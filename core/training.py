"""Transfer learning on a labelled set: feature extraction or fine-tuning of a pretrained backbone with
a new head, and two small CNNs trained from scratch as baselines, all on one seeded stratified split.

The shared, cached model is never trained: a run deep-copies it (holding its lock) into a private
`LoadedModel` with its own lock and a spec of its own (the dataset's classes, a `build` that refuses
to be called). Feature extraction trains the new head on penultimate features computed once, so
each epoch is a few matrix products; the head is then installed on a copy of the backbone, which
gives a full network for predictions, CAMs and export. Fine-tuning and the baselines train through
a DataLoader, with optional augmentation.
"""

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from core import embeddings, evaluation, hooks, preprocessing, registry, splits
from core.datasets import Dataset
from core.errors import InvalidInputError, did_you_mean
from core.models import LoadedModel
from core.registry import BackboneSpec
from core.runtime import resolve_device

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)
HEADS = ("linear", "mlp")
OPTIMIZERS = ("sgd", "adam", "adamw")
ENDINGS = ("completed", "early stopping", "stopped", "diverged")


# ---------------------------------------------------------------------------------------------
# Baselines trained from scratch


def small_cnn(num_classes: int) -> nn.Module:
    """Two 3x3 convolutions (16 and 32 channels) with ReLU and max pooling, then a Linear on a 4x4 pooled map."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()),
            pool2=nn.MaxPool2d(2),
        )),
        pool=nn.AdaptiveAvgPool2d(4),
        flatten=nn.Flatten(),
        classifier=nn.Linear(32 * 16, num_classes),
    ))


def deeper_cnn(num_classes: int) -> nn.Module:
    """Four conv -> batch norm -> ReLU blocks (32-64-128-128 channels), global pooling, dropout, a Linear."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(OrderedDict(
        features=nn.Sequential(OrderedDict(
            block1=block(3, 32), pool1=nn.MaxPool2d(2),
            block2=block(32, 64), pool2=nn.MaxPool2d(2),
            block3=block(64, 128), pool3=nn.MaxPool2d(2), drop3=nn.Dropout2d(0.1),
            block4=block(128, 128),
        )),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        dropout=nn.Dropout(0.3),
        classifier=nn.Linear(128, num_classes),
    ))


@dataclass(frozen=True)
class Baseline:
    """A from-scratch architecture: how to build it and where its layers are."""

    name: str
    title: str
    build: Callable[[int], nn.Module]  # build(num_classes)
    cam_layer: str  # the last convolution block
    head: str
    stages: tuple[str, ...]


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("small_cnn", "Small CNN (2 conv layers, from scratch)", small_cnn, "features.conv2", "classifier",
                 ("features.conv1", "features.conv2")),
        Baseline("deeper_cnn", "Deeper CNN (batch norm, dropout, from scratch)", deeper_cnn, "features.block4",
                 "classifier", tuple(f"features.block{i}" for i in range(1, 5))),
    )
}


@dataclass(frozen=True)
class Strategy:
    name: str  # key used by the CLI, the UI and TrainConfig
    title: str
    pretrained: bool  # starts from the chosen pretrained backbone
    baseline: str | None = None  # else: the from-scratch architecture in BASELINES


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("feature-extraction", "Feature extraction (frozen backbone, new head)", True),
        Strategy("fine-tune", "Fine-tuning (unfreeze the last stages)", True),
        Strategy("small-cnn", BASELINES["small_cnn"].title, False, "small_cnn"),
        Strategy("deeper-cnn", BASELINES["deeper_cnn"].title, False, "deeper_cnn"),
    )
}


def no_builder(pretrained: bool) -> nn.Module:
    """The `build` of a trained model's spec: there is nothing to download or rebuild from."""
    raise RuntimeError("A trained model has no builder: rebuild it from its export with core.checkpoints.load.")


def baseline_spec(name: str, classes: Sequence[str], size: int) -> BackboneSpec:
    """The spec of a from-scratch baseline: inputs `size` x `size`, scaled to [-1, 1]."""
    baseline = BASELINES[name]
    return BackboneSpec(
        name=name, title=baseline.title, source="trained here", build=no_builder, cam_layer=baseline.cam_layer,
        head=baseline.head, categories=tuple(classes), weights_file=None, input_size=(size, size), resize_size=size,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", fixed_size=True, stages=baseline.stages,
    )


# ---------------------------------------------------------------------------------------------
# Heads


class MLPHead(nn.Sequential):
    """Linear -> ReLU -> Dropout -> Linear; the final Linear is `[3]`."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))


@dataclass(frozen=True)
class Head:
    """A classification head and where it sits: `slot` is the path of the backbone's final Linear it replaces."""

    kind: str  # "linear" or "mlp"
    slot: str
    in_features: int
    classes: int
    hidden: int = 0  # mlp only
    dropout: float = 0.0  # mlp only

    @property
    def path(self) -> str:
        """The path of the head's final Linear (what `BackboneSpec.head` names)."""
        return self.slot if self.kind == "linear" else f"{self.slot}.3"

    @property
    def params(self) -> int:
        if self.kind == "linear":
            return (self.in_features + 1) * self.classes
        return (self.in_features + 1) * self.hidden + (self.hidden + 1) * self.classes

    def build(self) -> nn.Module:
        if self.kind == "linear":
            return nn.Linear(self.in_features, self.classes)
        return MLPHead(self.in_features, self.hidden, self.classes, self.dropout)


def head_of(model: LoadedModel) -> Head:
    """The head of `model`, read from its module: an MLPHead around `spec.head`, or the Linear itself."""
    parent_path, _, _ = model.spec.head.rpartition(".")
    parent = hooks.find(model.module, parent_path) if parent_path else None
    if isinstance(parent, MLPHead):
        return Head("mlp", parent_path, parent[0].in_features, parent[3].out_features, parent[0].out_features,
                    float(parent[2].p))
    linear = hooks.find(model.module, model.spec.head)
    if not isinstance(linear, nn.Linear):
        raise InvalidInputError(f"{model.spec.title}'s head '{model.spec.head}' is a {type(linear).__name__}, not a Linear.")
    return Head("linear", model.spec.head, linear.in_features, linear.out_features)


def install(module: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` at dotted `path` in `module` (in place)."""
    parent_path, _, name = path.rpartition(".")
    parent = hooks.find(module, parent_path) if parent_path else module
    hooks.find(module, path)  # the slot must exist
    setattr(parent, name, new)


def architecture(base: str, head: Head) -> nn.Module:
    """An untrained network: `base` (a registered backbone or a baseline) with `head` installed. No download.

    Raises:
        InvalidInputError: an unknown base, or a head that does not fit it.
    """
    if base in BASELINES:
        baseline = BASELINES[base]
        if head.kind != "linear" or head.slot != baseline.head:
            raise InvalidInputError(f"{baseline.title} has a linear head at '{baseline.head}', not a {head.kind} head "
                                    f"at '{head.slot}'.")
        module = baseline.build(head.classes)
        expected = hooks.find(module, baseline.head).in_features
    else:
        if base not in registry.names():
            known = [*registry.names(), *BASELINES]
            raise InvalidInputError(f"Unknown backbone '{base}'.{did_you_mean(base, known)} Known: {', '.join(known)}.")
        spec = registry.get(base)
        if head.slot != spec.head:
            raise InvalidInputError(f"{spec.title}'s head sits at '{spec.head}', not at '{head.slot}'.")
        module = spec.build(False)
        try:
            old = module.get_submodule(head.slot)
        except AttributeError:
            raise InvalidInputError(f"{base} has no layer '{head.slot}' to hold the head.") from None
        if not isinstance(old, nn.Linear):
            raise InvalidInputError(f"{base}'s '{head.slot}' is a {type(old).__name__}, not the final Linear.")
        expected = old.in_features
        install(module, head.slot, head.build())
    if head.in_features != expected:
        raise InvalidInputError(f"The head takes {head.in_features} features, but {base} gives {expected}.")
    return module


# ---------------------------------------------------------------------------------------------
# Configuration and results


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on besides the backbone and the dataset."""

    strategy: str = "feature-extraction"  # a key of STRATEGIES
    head: str = "linear"  # "linear" or "mlp" (ignored by the baselines, which have their own)
    hidden: int = 256  # mlp: hidden units
    dropout: float = 0.2  # mlp: dropout before the last Linear
    unfreeze_stages: int | None = 1  # fine-tune: the last N stages of spec.stages train; None: all of them
    optimizer: str = "adam"  # "sgd" (with momentum), "adam" or "adamw"
    lr_head: float = 3e-3  # the new head (and every layer of a baseline)
    lr_backbone: float = 1e-4  # unfrozen backbone stages
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 10
    random_crop: bool = False  # random resized crop (scale 0.5-1): fine-tuning and baselines only
    flip: bool = False  # random horizontal flip: fine-tuning and baselines only
    clip_norm: float | None = None  # clip the gradients' global L2 norm to this
    seed: int = 0  # split, head initialisation, shuffling, augmentation, dropout
    train_fraction: float = 0.7
    val_fraction: float = 0.15  # the test set is the rest
    patience: int | None = None  # early stopping: epochs without a lower validation loss
    image_size: int | None = None  # square side images are resized to; None: the backbone's input size
    workers: int = 0  # DataLoader worker processes (fine-tuning and baselines)

    @property
    def test_fraction(self) -> float:
        return 1.0 - self.train_fraction - self.val_fraction

    def check(self) -> "TrainConfig":
        """This config, or InvalidInputError naming the first setting out of range."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise InvalidInputError(message)

        need(self.strategy in STRATEGIES, f"Unknown strategy '{self.strategy}'.{did_you_mean(self.strategy, STRATEGIES)} "
             f"Choose one of: {', '.join(STRATEGIES)}.")
        need(self.head in HEADS, f"Unknown head '{self.head}'. Choose one of: {', '.join(HEADS)}.")
        need(self.optimizer in OPTIMIZERS, f"Unknown optimiser '{self.optimizer}'. Choose one of: {', '.join(OPTIMIZERS)}.")
        need(1 <= self.hidden <= 8192, f"Hidden units must be between 1 and 8192, got {self.hidden}.")
        need(0.0 <= self.dropout < 1.0, f"Dropout must be in [0, 1), got {self.dropout}.")
        need(self.unfreeze_stages is None or self.unfreeze_stages >= 0,
             f"Stages to unfreeze must be 0 or more (or all), got {self.unfreeze_stages}.")
        need(0 < self.lr_head <= 10 and math.isfinite(self.lr_head), f"The head's learning rate must be in (0, 10], got {self.lr_head}.")
        need(0 <= self.lr_backbone <= 10, f"The backbone's learning rate must be in [0, 10], got {self.lr_backbone}.")
        need(0 <= self.momentum < 1, f"Momentum must be in [0, 1), got {self.momentum}.")
        need(0 <= self.weight_decay <= 1, f"Weight decay must be in [0, 1], got {self.weight_decay}.")
        need(1 <= self.batch_size <= 1024, f"The batch size must be between 1 and 1024, got {self.batch_size}.")
        need(1 <= self.epochs <= 1000, f"Epochs must be between 1 and 1000, got {self.epochs}.")
        need(self.clip_norm is None or self.clip_norm > 0, f"Gradient clipping needs a norm above 0, got {self.clip_norm}.")
        need(self.patience is None or self.patience >= 1, f"Early-stopping patience must be 1 or more, got {self.patience}.")
        need(self.image_size is None or 16 <= self.image_size <= 1024, f"The image size must be 16-1024 px, got {self.image_size}.")
        need(0 <= self.workers <= 16, f"Workers must be between 0 and 16, got {self.workers}.")
        need(0.05 <= self.train_fraction <= 0.95 and 0.025 <= self.val_fraction <= 0.9 and self.test_fraction >= 0.025 - 1e-9,
             f"Split fractions must leave room for all three sets: train {self.train_fraction}, validation "
             f"{self.val_fraction}, test {self.test_fraction:.3g} (each at least 0.025, train at least 0.05).")
        return self


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's batches, in training mode
    train_accuracy: float  # in [0, 1], over the same batches
    val_loss: float
    val_accuracy: float
    seconds: float  # this epoch, validation included
    best: bool  # the lowest validation loss so far (the checkpoint that is kept)


@dataclass(frozen=True)
class Group:
    """Parameters that train (or stay frozen) together: a stage of the backbone, or the head."""

    name: str  # the stage path, "new head", or "network" (a baseline)
    modules: tuple[str, ...]  # the top-level modules it covers, e.g. ("conv_stem", "bn1", "blocks.0")
    params: int
    trainable: bool


@dataclass(frozen=True)
class ParameterSummary:
    strategy: str
    groups: tuple[Group, ...]  # shallow to deep, the head last

    @property
    def trainable(self) -> int:
        return sum(g.params for g in self.groups if g.trainable)

    @property
    def frozen(self) -> int:
        return sum(g.params for g in self.groups if not g.trainable)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


@dataclass(frozen=True)
class OptimizerGroup:
    name: str  # "head", "backbone" or "network"
    lr: float
    weight_decay: float
    params: int  # number of scalar parameters


@dataclass(frozen=True, eq=False)
class RunResult:
    """One finished run: its curves, the checkpoint kept (lowest validation loss), and its test metrics."""

    config: TrainConfig
    backbone: str  # display name: the pretrained backbone's title, or the baseline's
    dataset: str
    classes: tuple[str, ...]
    split: splits.Split
    history: tuple[EpochStats, ...]
    best_epoch: int  # 1-based epoch whose weights were kept
    ended: str  # one of ENDINGS
    test: evaluation.Evaluation  # on split.test, with the kept weights
    trainable_params: int
    total_params: int
    groups: tuple[OptimizerGroup, ...]
    feature_seconds: float  # computing the frozen features (0 when they were given)
    train_seconds: float  # the epochs, validation included
    model: LoadedModel = field(repr=False)  # private: its own module, lock and spec (the dataset's classes)

    @property
    def strategy(self) -> Strategy:
        return STRATEGIES[self.config.strategy]

    @property
    def accuracy(self) -> float:
        return self.test.accuracy

    @property
    def macro_precision(self) -> float:
        return float(np.mean([m.precision for m in self.test.per_class]))

    @property
    def macro_recall(self) -> float:
        return float(np.mean([m.recall for m in self.test.per_class]))

    @property
    def macro_f1(self) -> float:
        return float(np.mean([m.f1 for m in self.test.per_class]))

    @property
    def seconds(self) -> float:
        return self.feature_seconds + self.train_seconds


# ---------------------------------------------------------------------------------------------
# Which parameters train


def _inside(name: str, path: str) -> bool:
    return path == "" or name == path or name.startswith(path + ".")


def _stage_groups(
    module: nn.Module, stages: Sequence[str], slot: str
) -> list[tuple[str, tuple[str, ...], list[tuple[str, nn.Parameter]]]]:
    """(stage, modules, named parameters) for the backbone outside `slot`, shallow to deep.

    A stage owns every parameter registered after the previous stage's last module, up to its own
    last module: the stem goes with the first stage, a layer between two stages with the later one,
    anything after the last stage with the last one. No stages: one group, "backbone".
    """
    named = [name for name, _ in module.named_modules()]
    position = {name: i for i, name in enumerate(named)}
    ends = []
    for stage in stages:
        if (slot and _inside(stage, slot)) or stage not in position:
            continue
        ends.append((max(i for i, name in enumerate(named) if _inside(name, stage)), stage))
    ends.sort()
    if not ends:
        ends = [(len(named), "backbone")]
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {stage: [] for _, stage in ends}
    covered: dict[str, dict[str, None]] = {stage: {} for _, stage in ends}
    for name, parameter in module.named_parameters():
        owner = name.rpartition(".")[0]
        if slot and _inside(owner, slot):
            continue
        where = position.get(owner, len(named))
        stage = next((s for end, s in ends if where <= end), ends[-1][1])
        groups[stage].append((name, parameter))
        if stage != "backbone" and _inside(owner, stage):
            covered[stage][stage] = None
        else:
            depth = 1 if stage == "backbone" else stage.count(".") + 1
            covered[stage][".".join(owner.split(".")[:depth]) or "(root)"] = None
    return [(stage, tuple(covered[stage]), groups[stage]) for _, stage in ends if groups[stage]]


def _trainable_stages(count: int, unfreeze: int | None, strategy: str) -> int:
    """How many of the `count` deepest stage groups train."""
    if strategy == "feature-extraction":
        return 0
    if strategy != "fine-tune" or unfreeze is None:
        return count
    if unfreeze > count:
        raise InvalidInputError(f"This backbone has {count} stages; cannot unfreeze the last {unfreeze}. "
                                f"Choose 0 to {count}, or all.")
    return unfreeze


def parameter_summary(
    model: LoadedModel | None,
    strategy: str,
    unfreeze_stages: int | None = None,
    *,
    classes: int,
    head: str = "linear",
    hidden: int = 256,
) -> ParameterSummary:
    """Which groups of parameters would train and which stay frozen, before training (the model is not touched).

    `model` may be None for the baselines. Raises InvalidInputError for an unknown strategy or stage count.
    """
    TrainConfig(strategy=strategy, head=head, hidden=hidden, unfreeze_stages=unfreeze_stages).check()
    if classes < 2:
        raise InvalidInputError(f"A classifier needs at least 2 classes, got {classes}.")
    chosen = STRATEGIES[strategy]
    if chosen.baseline is not None:
        baseline = BASELINES[chosen.baseline]
        network = baseline.build(classes)
        groups = [Group(stage, modules, sum(p.numel() for _, p in params), True)
                  for stage, modules, params in _stage_groups(network, baseline.stages, baseline.head)]
        classifier = sum(p.numel() for p in hooks.find(network, baseline.head).parameters())
        return ParameterSummary(strategy, (*groups, Group("classifier", (baseline.head,), classifier, True)))
    if model is None:
        raise InvalidInputError(f"{chosen.title} starts from a pretrained backbone: choose one.")
    with model.lock:  # a CAM method may swap a layer of the shared model while it runs
        old = _final_linear(model)
        stage_groups = _stage_groups(model.module, model.spec.stages, model.spec.head)
    training = _trainable_stages(len(stage_groups), unfreeze_stages, strategy)
    groups = [
        Group(stage, modules, sum(p.numel() for _, p in params), index >= len(stage_groups) - training)
        for index, (stage, modules, params) in enumerate(stage_groups)
    ]
    new = Head(head, model.spec.head, old.in_features, classes, hidden if head == "mlp" else 0)
    groups.append(Group("new head", (model.spec.head,), new.params, True))
    return ParameterSummary(strategy, tuple(groups))


def _final_linear(model: LoadedModel) -> nn.Linear:
    layer = hooks.find(model.module, model.spec.head)
    if not isinstance(layer, nn.Linear):
        raise InvalidInputError(f"{model.spec.title}'s head '{model.spec.head}' is a {type(layer).__name__}, not a "
                                "Linear: it cannot be replaced.")
    return layer


def optimizer(groups: Sequence[tuple[str, Sequence[nn.Parameter], float]], config: TrainConfig) -> torch.optim.Optimizer:
    """An optimiser with one parameter group per (name, parameters, learning rate); empty groups are left out.

    Each group keeps its name under the key "name".
    """
    param_groups = [
        {"params": list(params), "lr": lr, "weight_decay": config.weight_decay, "name": name}
        for name, params, lr in groups if len(params)
    ]
    if not param_groups:
        raise InvalidInputError("Nothing to train: every parameter is frozen.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr_head, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr_head)
    return torch.optim.AdamW(param_groups, lr=config.lr_head)


# ---------------------------------------------------------------------------------------------
# Images for fine-tuning and the baselines


class _Images(TorchDataset):
    """(3, S, S) normalised tensors and labels of some dataset rows, optionally augmented (preprocessing.Augment).

    Augmentation draws from its own seeded generator (never the global RNG). With worker processes,
    each worker reseeds from the seed and its worker id.
    """

    def __init__(self, pictures, labels, rows, size: int, spec: BackboneSpec, *, crop: bool, flip: bool, seed: int) -> None:
        self.pictures, self.labels, self.rows = pictures, labels, np.asarray(rows)
        self.augment = preprocessing.Augment(spec, size, crop=crop, flip=flip)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        row = int(self.rows[index])
        return self.augment(self.pictures[row], self.rng), int(self.labels[row])


def _reseed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng([info.dataset.seed, worker_id, info.seed % 2**32])


def _loader(images: _Images, batch_size: int, *, shuffle: bool, seed: int, workers: int, device: torch.device) -> DataLoader:
    drop_last = shuffle and len(images) > batch_size and len(images) % batch_size == 1  # BatchNorm needs 2+ per batch
    return DataLoader(
        images, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed) if shuffle else None, pin_memory=device.type == "cuda",
        worker_init_fn=_reseed_worker if workers else None, persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------------
# Training


def train(
    model: LoadedModel | None,
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    features: embeddings.Embeddings | None = None,
    device: str = "auto",
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train one run and score the kept checkpoint (lowest validation loss) on the test split.

    `model` is the shared pretrained backbone (None for the baselines); it is only read, under its
    lock. Feature extraction reuses `features` when given (penultimate features of every image of
    `dataset`, at `config.image_size`), else computes them once. `device` is used by the baselines;
    the other strategies train where `model` lives. `should_stop` is polled between batches: when it
    returns True the run ends and keeps the best epoch so far. Thread-safe: the run works on copies.

    Raises:
        InvalidInputError: bad settings, a class with fewer than 3 images, a backbone whose head is
            not a Linear, or a stop before the first epoch ended.
    """
    config.check()
    strategy = STRATEGIES[config.strategy]
    report = on_progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    if strategy.pretrained and model is None:
        raise InvalidInputError(f"{strategy.title} starts from a pretrained backbone: give one.")
    if len(dataset.classes) < 2:
        raise InvalidInputError("Training needs at least two classes.")
    parts = splits.stratified(dataset.labels, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                              seed=config.seed)
    if strategy.pretrained:
        size = config.image_size or model.spec.input_size[0]
        if model.spec.fixed_size and (size, size) != tuple(model.spec.input_size):
            raise InvalidInputError(f"{model.spec.title} only takes {model.spec.input_size[0]} px images; set the "
                                    f"image size to {model.spec.input_size[0]}.")
        target = model.device
    else:
        size = config.image_size or 64
        target = resolve_device(device)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # seeded init and dropout, the caller's RNG restored afterwards
        torch.manual_seed(config.seed)
        if config.strategy == "feature-extraction":
            return _feature_run(model, dataset, labels, parts, size, config, features, on_epoch, report, stop)
        return _image_run(model, dataset, labels, parts, size, config, target, on_epoch, report, stop)


FEATURE_BATCH = 32
STOPPED_EARLY = ("Training stopped before the first epoch ended: there is no checkpoint to keep. Train again and "
                 "let at least one epoch finish.")


def feature_settings(config: TrainConfig, spec: BackboneSpec) -> tuple[int, str, int]:
    """(batch size, precision, image size) of the frozen features a feature-extraction run computes.

    The one place these are chosen: the training process computes features with them, and the dashboard
    keys its feature cache on them ("auto": autocast on a GPU, fp32 on a CPU).
    """
    return FEATURE_BATCH, "auto", config.image_size or spec.input_size[0]


def _feature_run(model, dataset, labels, parts, size, config, features, on_epoch, report, stop) -> RunResult:
    feature_seconds = 0.0
    if features is None:
        batch_size, precision, _ = feature_settings(config, model.spec)
        features = embeddings.extract(
            model, dataset, size=size, precision=precision, batch_size=batch_size,
            on_progress=lambda fraction, message: report(fraction, f"Features: {message}"),
        )
        feature_seconds = features.seconds
    if len(features.features) != len(dataset) or features.image_size != size:
        raise InvalidInputError(
            f"The features were computed for {len(features.features)} images at {features.image_size} px; this run "
            f"needs {len(dataset)} images at {size} px."
        )
    with model.lock:
        old = _final_linear(model)
    head = Head(config.head, model.spec.head, old.in_features, len(dataset.classes), config.hidden, config.dropout)
    network = head.build()
    inputs = torch.from_numpy(np.asarray(features.features, dtype=np.float32))
    targets = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(config.seed)

    def train_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.from_numpy(parts.train)[torch.randperm(len(parts.train), generator=generator)]
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            yield inputs[rows], targets[rows]

    def batches_of(rows: np.ndarray) -> Callable[[], Iterable[tuple[Tensor, Tensor]]]:
        index = torch.from_numpy(rows)
        return lambda: [(inputs[index[s:s + 256]], targets[index[s:s + 256]]) for s in range(0, len(index), 256)]

    groups = [("head", list(network.parameters()), config.lr_head)]
    fitted = _fit(network, groups, train_batches, -(-len(parts.train) // config.batch_size), batches_of(parts.val),
                  config, on_epoch, report, stop, torch.device("cpu"))
    predicted = _predict(network, batches_of(parts.test)(), torch.device("cpu"))
    with model.lock:
        module = copy.deepcopy(model.module)
    install(module, head.slot, network.to(model.device))
    trained = _private(model, module, head, dataset, size)
    return _result(config, model.spec.title, dataset, labels, parts, fitted, predicted, head.params, trained,
                   feature_seconds)


def _image_run(model, dataset, labels, parts, size, config, target, on_epoch, report, stop) -> RunResult:
    strategy = STRATEGIES[config.strategy]
    if strategy.baseline is None:
        with model.lock:
            module = copy.deepcopy(model.module)
        old = _final_linear(replace(model, module=module))
        head = Head(config.head, model.spec.head, old.in_features, len(dataset.classes), config.hidden, config.dropout)
        install(module, head.slot, head.build().to(model.device))
        stage_groups = _stage_groups(module, model.spec.stages, head.slot)
        training = _trainable_stages(len(stage_groups), config.unfreeze_stages, config.strategy)
        backbone = [p for _, _, params in stage_groups[len(stage_groups) - training:] for _, p in params]
        head_params = list(hooks.find(module, head.slot).parameters())
        groups = [("head", head_params, config.lr_head), ("backbone", backbone, config.lr_backbone)]
        spec, title = model.spec, model.spec.title
    else:
        baseline = BASELINES[strategy.baseline]
        module = baseline.build(len(dataset.classes)).to(target)
        head = Head("linear", baseline.head, hooks.find(module, baseline.head).in_features, len(dataset.classes))
        groups = [("network", list(module.parameters()), config.lr_head)]
        title = baseline.title
        spec = replace(baseline_spec(baseline.name, dataset.classes, size), title=f"{title} → {dataset.name}")
    module.requires_grad_(False)
    for _, params, _ in groups:
        for p in params:
            p.requires_grad_(True)

    def images(rows: np.ndarray, augment: bool) -> _Images:
        return _Images(dataset.images, labels, rows, size, spec, crop=augment and config.random_crop,
                       flip=augment and config.flip, seed=config.seed)

    train_loader = _loader(images(parts.train, True), config.batch_size, shuffle=True, seed=config.seed,
                           workers=config.workers, device=target)
    evaluate_batch = max(config.batch_size, 64)

    def batches_of(rows: np.ndarray) -> Callable[[], Iterable[tuple[Tensor, Tensor]]]:
        return lambda: _loader(images(rows, False), evaluate_batch, shuffle=False, seed=0, workers=config.workers,
                               device=target)

    fitted = _fit(module, groups, lambda epoch: iter(train_loader), len(train_loader), batches_of(parts.val), config,
                  on_epoch, report, stop, target)
    predicted = _predict(module, batches_of(parts.test)(), target)
    trainable = sum(p.numel() for _, params, _ in groups for p in params)
    if strategy.baseline is None:
        trained = _private(model, module, head, dataset, size)
    else:
        module.eval().requires_grad_(False)
        trained = LoadedModel(spec=spec, module=module, device=target, pretrained=True,
                              params=sum(p.numel() for p in module.parameters()))
    return _result(config, title, dataset, labels, parts, fitted, predicted, trainable, trained, 0.0)


@dataclass(frozen=True)
class _Fitted:
    history: tuple[EpochStats, ...]
    best_epoch: int
    ended: str
    groups: tuple[OptimizerGroup, ...]
    seconds: float


def _fit(network, groups, train_batches, batches_per_epoch, val_batches, config, on_epoch, report, stop, device) -> _Fitted:
    """The epochs: train, validate, keep the weights of the lowest validation loss, stop early or on request."""
    optim = optimizer(groups, config)
    params = [p for g in optim.param_groups for p in g["params"]]
    history: list[EpochStats] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    ended, waited = "completed", 0
    started = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            began = time.perf_counter()
            _train_mode(network)
            total, correct, seen = 0.0, 0, 0
            for step, (x, y) in enumerate(train_batches(epoch), start=1):
                if stop():
                    ended = "stopped"
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optim.zero_grad(set_to_none=True)
                logits = network(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                if config.clip_norm is not None:
                    nn.utils.clip_grad_norm_(params, config.clip_norm)
                optim.step()
                total += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(dim=1) == y).sum())
                seen += len(y)
                report((epoch - 1 + step / max(batches_per_epoch, 1)) / config.epochs,
                       f"Epoch {epoch} of {config.epochs}: batch {step} of {batches_per_epoch}")
            if ended == "stopped":
                break
            train_loss = total / max(seen, 1)
            if not math.isfinite(train_loss):
                ended = "diverged"  # keep the best epoch so far; the message suggests a lower learning rate
                break
            val_loss, val_accuracy, _ = _score(network, val_batches(), device)
            best = val_loss < best_loss
            if best:
                best_loss, best_epoch, waited = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                waited += 1
            stats = EpochStats(epoch, train_loss, correct / max(seen, 1), val_loss, val_accuracy,
                               time.perf_counter() - began, best)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if config.patience is not None and waited >= config.patience:
                ended = "early stopping"
                break
    finally:
        network.eval()
        optim.zero_grad(set_to_none=True)
    if best_state is None:
        if ended == "diverged":
            raise InvalidInputError("Training diverged in the first epoch (the loss became NaN or infinite). Lower "
                                    "the learning rate or turn on gradient clipping.")
        raise InvalidInputError(STOPPED_EARLY)
    network.load_state_dict(best_state)
    summary = tuple(OptimizerGroup(g["name"], float(g["lr"]), float(g["weight_decay"]),
                                   sum(p.numel() for p in g["params"])) for g in optim.param_groups)
    return _Fitted(tuple(history), best_epoch, ended, summary, time.perf_counter() - started)


def _train_mode(network: nn.Module) -> None:
    """Training mode, except batch norms whose parameters are frozen: their running statistics stay as trained."""
    network.train()
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()


@torch.no_grad()
def _score(network: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predictions) in eval mode."""
    network.eval()
    total, correct, seen, predicted = 0.0, 0, 0, []
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = network(x).float()
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        guess = logits.argmax(dim=1)
        correct += int((guess == y).sum())
        seen += len(y)
        predicted.append(guess.cpu().numpy())
    return total / max(seen, 1), correct / max(seen, 1), np.concatenate(predicted).astype(np.int64)


def _predict(network: nn.Module, batches, device) -> np.ndarray:
    return _score(network, batches, device)[2]


def _private(model: LoadedModel, module: nn.Module, head: Head, dataset: Dataset, size: int) -> LoadedModel:
    """A frozen LoadedModel of its own: new lock, and a spec with the dataset's classes at the training size.

    `fixed_size` makes inference resize every image to the square the head was trained on.
    """
    module.eval()
    module.requires_grad_(False)
    spec = replace(
        model.spec, title=f"{model.spec.title} → {dataset.name}", source="trained here", build=no_builder,
        head=head.path, categories=tuple(dataset.classes), weights_file=None, weights_url=None,
        input_size=(size, size), resize_size=size, fixed_size=True, params=None, gmacs=None, top1=None,
    )
    return LoadedModel(spec=spec, module=module, device=model.device, pretrained=True,
                       params=sum(p.numel() for p in module.parameters()), lock=type(model.lock)())


def _result(
    config, title, dataset, labels, parts, fitted: _Fitted, predicted, trainable, trained, feature_seconds
) -> RunResult:
    scored = evaluation.metrics(labels[parts.test], predicted, dataset.classes, method=config.strategy,
                                indices=parts.test)
    return RunResult(
        config=config, backbone=title, dataset=dataset.name, classes=tuple(dataset.classes), split=parts,
        history=fitted.history, best_epoch=fitted.best_epoch, ended=fitted.ended, test=scored,
        trainable_params=trainable, total_params=trained.params, groups=fitted.groups,
        feature_seconds=feature_seconds, train_seconds=fitted.seconds, model=trained,
    )
