"""The dashboard's caches of labelled sets and what is computed over them: the datasets themselves (one
dispatch in core.datasets), the feature maps' PCA, evaluations, the probe model, dataset heatmaps, localisation,
and a training run's heatmaps and export. Thin wrappers around core, keyed by plain values, as in
dashboard.cache (whose models, budgets and results stores these share); background work is dashboard.jobs.
"""

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import cams, checkpoints, datasets, embeddings, evaluation, images, localisation, models, probing, roots
from core import runtime, training
from dashboard import budget as _budget
from dashboard import cache

BUILTIN_SETS = ("digits", "shapes")
TORCHVISION_SETS = datasets.TORCHVISION_SETS
TORCHVISION_ROOT = Path.home() / ".cache" / "visionlens" / "datasets"


@st.cache_resource(max_entries=8, show_spinner="Reading the dataset…")
def dataset(kind: str, source: str, seed: int, limit: int, _data: bytes | None = None) -> datasets.Dataset:
    """A dataset shared by every session (never mutated), sampled to at most `limit` images.

    kind: one of core.datasets.KINDS; "zip": source = the bytes' sha256; "folder": a path, which a browser user
    names only under the operator's data roots (core.roots refuses any other).
    """
    return datasets.open_source(kind, source, seed=seed, n=limit, data=_data, root=TORCHVISION_ROOT,
                                folder=lambda path: roots.open_dataset(path, roots.configured()))


@dataclass(frozen=True)
class ServerDatasets:
    folders: tuple[roots.DataFolder, ...]
    problems: tuple[str, ...]
    roots: tuple[str, ...]


def server_datasets() -> ServerDatasets:
    """The class-folder datasets under the data roots in force (listing re-done at most every 30 s)."""
    configured = roots.configured()
    paths = tuple(str(p) for p in configured.paths)
    listing = _listed(paths)
    return ServerDatasets(listing.folders, configured.problems + listing.problems, paths)


@st.cache_data(ttl=30, show_spinner="Listing the datasets on this server…")
def _listed(paths: tuple[str, ...]) -> roots.Listing:
    return roots.list_datasets(roots.Roots(tuple(Path(p) for p in paths), "listing"))


def dataset_results() -> _budget.Store:
    """Features, maps, evaluations and average CAMs of datasets (the background jobs put theirs here too)."""
    return cache.results("datasets")


def dataset_pca(features_key: tuple, _features, seed: int):
    """(points (N, 2) float32, trustworthiness) of the PCA map, cached by the features' key + seed. Fast, so it
    runs in the calling thread; t-SNE runs in the background (jobs.dataset_tsne_job)."""
    def compute():
        points = embeddings.pca(_features, seed=seed)
        return points, embeddings.trustworthiness(_features, points)

    return dataset_results().get(("map", features_key, "pca", 0, 0, seed), compute)


def dataset_evaluation_key(features_key: tuple, mode: str, test_fraction: float, seed: int) -> tuple:
    return ("evaluation", features_key, mode, test_fraction, seed)


def dataset_evaluation(
    features_key: tuple, _embedded: embeddings.Embeddings, _dataset: datasets.Dataset, categories: tuple[str, ...],
    mode: str, test_fraction: float, seed: int,
) -> evaluation.Evaluation:
    key = dataset_evaluation_key(features_key, mode, test_fraction, seed)
    return dataset_results().get(key, lambda: evaluation.evaluate(
        _embedded.features, _embedded.logits, _dataset.labels, _dataset.classes, categories=categories, mode=mode,
        test_fraction=test_fraction, seed=seed,
    ))


def _probe_models() -> _budget.Store:
    return cache.results("probe models", models=True, max_entries=2)  # each is a private copy of a backbone: keep few


def dataset_probe_model(name: str, device: str, pretrained: bool, head: probing.DatasetHead) -> models.LoadedModel:
    """The backbone with the evaluation's linear probe as its head (a copy; the shared model is untouched)."""
    return _probe_models().get(("probe model", head.key), lambda: probing.probe_model(
        cache.model(name, device, pretrained), head.evaluation, size=head.size))


def dataset_cams(
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, index: int, targets: tuple[int | None, ...],
    method: str = "gradcam", head: probing.DatasetHead | None = None,
) -> list[cams.CamResult]:
    """One CAM per target class for image `index` of the dataset.

    Without `head`, targets are classes of the backbone's own ImageNet head (None: its top-1). With an
    evaluation's `head`, targets are folder classes (None: that head's top-1): a linear probe's classes are
    explained on the probe model (the backbone whose final Linear is the probe), zero-shot classes as the
    ImageNet classes they map to.
    """
    def compute():
        image = _dataset.images[index]
        if head is not None and head.probe:
            loaded, explained = dataset_probe_model(name, device, pretrained, head), targets
        else:
            loaded = cache.model(name, device, pretrained)
            explained = head.backbone_targets(targets) if head is not None else targets
        return [cams.compute(loaded, image, methods=[method], target=t)[0] for t in explained]

    return cache.cam_results().get(("dataset", _dataset.content_hash, name, device, pretrained, index, targets, method,
                               head.key if head is not None else None), compute)


def dataset_average_cam(
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, rows: tuple[int, ...], target: int | None,
    size: int = 96, head: probing.DatasetHead | None = None,
):
    """(size, size) float32 mean Grad-CAM over the images at `rows` (each resized to a square first).

    `target` and `head` as for dataset_cams: with an evaluation's head, `target` is a folder class.
    """
    def compute():
        return images.mean_heatmap((dataset_cams(name, device, pretrained, _dataset, row, (target,), head=head)[0].heatmap
                                    for row in rows), size)

    return dataset_results().get(("average cam", _dataset.content_hash, name, device, pretrained, rows, target,
                                  size, head.key if head is not None else None), compute)


def dataset_localisation(
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, methods: tuple[str, ...], _on_progress=None,
) -> localisation.Localisation:
    return dataset_results().get(
        ("localisation", _dataset.content_hash, name, device, pretrained, methods),
        lambda: localisation.score(cache.model(name, device, pretrained), _dataset, methods=methods,
                                   on_progress=_on_progress),
    )


def dataset_precisions(device: str) -> tuple[str, ...]:
    return embeddings.precisions(runtime.resolve_device(device))


@_budget.memoize(cache.data_budget)
def dataset_mean_picture(content_hash: str, _dataset: datasets.Dataset, rows: tuple[int, ...], side: int):
    """The pixel-wise mean of the images at `rows`, each resized to a (side, side) square, as a PIL image
    (cached by the dataset's content hash)."""
    return images.mean_picture((_dataset.images[r] for r in rows), side)


def dataset_thumbnail(_dataset: datasets.Dataset, index: int, side: int = 96):
    """(side, side, 3) uint8 preview of image `index` (the whole image, letterboxed on white)."""
    return images.thumbnail(_dataset.images[index], side)


# --- training ---


@st.cache_data(max_entries=32, show_spinner=False)
def training_summary(
    name: str, device: str, pretrained: bool, strategy: str, unfreeze: int | None, classes: int, head: str, hidden: int
) -> training.ParameterSummary:
    """Trainable and frozen parameter groups, before training (the shared model is only read)."""
    loaded = cache.model(name, device, pretrained) if training.STRATEGIES[strategy].pretrained else None
    return training.parameter_summary(loaded, strategy, unfreeze, classes=classes, head=head, hidden=hidden)


def training_cam(run, index: int) -> cams.CamResult:
    """Grad-CAM of the trained model for its predicted class on image `index` of the run's dataset."""
    return cache.cam_results().get(
        ("training", run.id, index),
        lambda: cams.compute(run.result.model, run.dataset.images[index], methods=["gradcam"])[0],
    )


def checkpoint_files(run) -> tuple:
    """(JSON, safetensors) as callables for st.download_button: packed on the first click, then kept."""
    store = _training_exports()
    result = run.result

    def files() -> tuple[bytes, bytes]:
        return store.get(run.id, lambda: checkpoints.serialize(result.model, trained=checkpoints.Trained.of(result)))

    return (lambda: files()[0]), (lambda: files()[1])


def _training_exports() -> _budget.Store:
    return cache.results("training exports", max_entries=4)


@_budget.memoize(cache.model_budget, around=lambda: cache.spinner("Checking and loading the model…"), max_entries=2)
def imported(json_key: str, weights_key: str, _json: bytes, _weights: bytes) -> models.LoadedModel:
    """A model from an export's two files (validated by core; nothing is unpickled), on the CPU."""
    return checkpoints.load((_json, _weights), device="cpu")
