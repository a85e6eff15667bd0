"""The only place the dashboard caches: thin wrappers around core, keyed by plain values.

Image bytes are keyed by their sha256 (`digest`) and passed unhashed (`_data`): st.cache_data
hashes only a sample of large values, and two images one pixel apart must not share a result.

Whatever holds pictures, heatmaps, features or models is kept under a byte budget (dashboard.budget):
`data_budget()` ($VISIONLENS_CACHE_MB) and `model_budget()` ($VISIONLENS_MODEL_CACHE_MB). st.cache_data is
left to small records (predictions, scores, layer lists), bounded by their entry counts. Pages show pictures
at `images.DISPLAY_SIDE` (`picture`, `overlay_jpeg`); models still see the whole decoded image (`decoded`).
"""

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import (
    cams,
    comparison,
    concepts,
    faithfulness,
    features,
    images,
    models,
    predictions,
    preprocessing,
    queueing,
    registry,
    runtime,
    sanity,
)
from dashboard import budget as _budget

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Plain process-wide objects, not st.cache_resource: background threads and deferred downloads (no script
# context) use them too.
_DATA_BUDGET = _budget.Budget("data", _budget.megabytes_from_env("VISIONLENS_CACHE_MB", _budget.DEFAULT_DATA_MB))
_MODEL_LIMIT = _budget.megabytes_from_env("VISIONLENS_MODEL_CACHE_MB", _budget.DEFAULT_MODEL_MB)
_MODEL_BUDGET = _budget.Budget("models", _MODEL_LIMIT, largest=_MODEL_LIMIT // 2)


def data_budget() -> _budget.Budget:
    """Pictures, heatmaps, overlays, features and results of every session: $VISIONLENS_CACHE_MB in all."""
    return _DATA_BUDGET


def model_budget() -> _budget.Budget:
    """Loaded models and private copies of them: $VISIONLENS_MODEL_CACHE_MB in all."""
    return _MODEL_BUDGET


def _spinner(text: str):
    """A spinner around a computation in a page's script thread; nothing in other threads."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return st.spinner(text) if get_script_run_ctx(suppress_warning=True) is not None else contextlib.nullcontext()


@_budget.memoize(model_budget, around=lambda: _spinner("Loading the model…"))
def model(name: str, device: str, pretrained: bool) -> models.LoadedModel:
    """One shared, frozen model per (name, device, weights). core serialises its use with model.lock."""
    return models.load(name, device=device, pretrained=pretrained)


@_budget.memoize(data_budget, max_entries=4)
def decoded(key: str, _data: bytes) -> images.DecodedImage:
    """The whole decoded image (up to images.MAX_SIDE). A 12-MP photo is 48 MB here, so only the last few are
    kept (for the burst of calls right after an upload): pages show `picture`, models get `model_input`."""
    return images.decode(_data)


@_budget.memoize(data_budget)
def model_input(name: str, key: str, _data: bytes):
    """The whole image at the input size of backbone `name` (preprocessing.resize), as a small picture.

    A model fed this computes exactly what it computes from the whole decoded image (preprocessing leaves a
    picture already at the input size as it is), without resizing 12 MP again on every call."""
    whole = decoded(key, _data).image
    spec = registry.get(name)
    small = preprocessing.resize(whole, spec)
    if preprocessing.input_size(small.size, spec) != (small.height, small.width):  # never seen; stay exact
        return whole
    return small


@dataclass(frozen=True)
class Picture:
    """An image as pages show it: at most images.DISPLAY_SIDE px long, with what the whole decode said."""

    image: "images.Image.Image"  # RGB at display_size(full_size)
    full_size: tuple[int, int]  # (width, height) of the decoded image the models see
    format: str
    notes: tuple[str, ...]


@_budget.memoize(data_budget)
def picture(key: str, _data: bytes) -> Picture:
    whole = decoded(key, _data)
    return Picture(images.fit(whole.image), whole.image.size, whole.format, whole.notes)


def display_size(key: str, _data: bytes) -> tuple[int, int]:
    """(width, height) the pages show this image at, and at which they compute its heatmaps."""
    return picture(key, _data).image.size


@_budget.memoize(data_budget)
def overlay_jpeg(key: str, _data: bytes, _result: cams.CamResult, result_key: tuple, opacity: float,
                 colormap: str) -> bytes:
    """JPEG of a heatmap (at display size) over the picture, keyed by the result's cache key + settings: a
    slider move recomputes one blend of a screen-sized picture, and moving back costs nothing."""
    return images.to_jpeg(_result.overlay(picture(key, _data).image, opacity=opacity, colormap=colormap))


def full_overlay_png(key: str, _data: bytes, result: cams.CamResult, opacity: float, colormap: str) -> bytes:
    """PNG of the overlay at the decoded image's full size (the download): the heatmap made again from the
    result's raw map at that size, exactly as an explanation of the whole image makes it. Not cached."""
    whole = decoded(key, _data).image
    full = result.resized(*whole.size)
    return images.to_png(full.overlay(whole, opacity=opacity, colormap=colormap), compress_level=1)


@st.cache_data(max_entries=64, show_spinner="Predicting…")
def top_k(name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int = 5) -> list[predictions.Prediction]:
    return predictions.predict(model(name, device, pretrained), model_input(name, key, _data), top_k=k)


def _results(name: str, *, models: bool = False, max_entries: int | None = None) -> _budget.Store:
    """Computed results shared by all sessions (keys are plain values), in the data budget or the models' one.

    Used instead of st.cache_data where the computation reports progress into page elements,
    which Streamlit forbids inside cached functions.
    """
    return _budget.Store(model_budget() if models else data_budget(), name, max_entries=max_entries)


@st.cache_resource(show_spinner=False)
def heavy_gate() -> queueing.SlotQueue:
    """The process-wide bounded queue every heavy computation goes through (Score-CAM, dataset features,
    t-SNE, benchmarks, training): $VISIONLENS_HEAVY_SLOTS at once, else half the cores."""
    return queueing.SlotQueue()


def heavy(label: str, _on_wait=None) -> queueing.Ticket:
    """Block the calling thread until it holds a heavy-work slot (a context manager releases it).

    `_on_wait(ticket)` runs about 4 times a second while queued: in a script thread an element update there
    also lets Streamlit interrupt the wait on a rerun, and the ticket then leaves the queue.
    """
    return heavy_gate().acquire(label, on_wait=_on_wait)


def _cam_results() -> _budget.Store:
    return _results("cams")


def cam(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, method: str, target: int | None,
    layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> cams.CamResult:
    """One method's result, its heatmap at `display_size` (`CamResult.resized` makes the full size)."""
    (result,) = cam_grid(name, device, pretrained, key, _data, (method,), target, layer, eigen_smooth, aug_smooth,
                         _on_progress=_on_progress)
    return result


def cam_key(name: str, device: str, pretrained: bool, key: str, methods: tuple[str, ...], target: int | None,
            layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False) -> tuple:
    """The cache key of cam_grid's result for these settings (overlay_jpeg keys its pictures by it)."""
    return (name, device, pretrained, key, tuple(methods), target, layer, eigen_smooth, aug_smooth)


def cam_grid(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, methods: tuple[str, ...],
    target: int | None, layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> list[cams.CamResult]:
    """Several methods at once (the gradient methods share one pass), cached by image sha256 + settings.

    The model explains the whole decoded image; the heatmaps are made at `display_size`."""
    memo_key = cam_key(name, device, pretrained, key, methods, target, layer, eigen_smooth, aug_smooth)

    def run() -> list[cams.CamResult]:
        return cams.compute(
            model(name, device, pretrained), model_input(name, key, _data), methods=list(methods), target=target,
            layer=layer, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, on_progress=_on_progress,
            size=display_size(key, _data),
        )

    store = _cam_results()
    slow = [cams.METHODS[m].title for m in methods if m in cams.METHODS and cams.METHODS[m].slow]
    if not slow:
        return store.get(memo_key, run)
    kept = store.peek(memo_key)
    if kept is not None:
        return kept
    # One pass per channel: a heavy-work slot first, the queue's state in the progress bar meanwhile. The slot is
    # taken before the store's compute-once wait, so sessions asking for the same map queue visibly ("Queued: N
    # ahead of you") and, when their turn comes, find it already computed.
    on_wait = (lambda ticket: _on_progress(0.0, ticket.describe())) if _on_progress else None
    with heavy(", ".join(slow), on_wait):
        return store.get(memo_key, run)


@_budget.memoize(data_budget, around=lambda: _spinner("Running every backbone on the image…"))
def compared(
    names: tuple[str, ...], device: str, pretrained: bool, key: str, _data: bytes, method: str, common: int | None
) -> comparison.Comparison:
    loaded = [model(n, device, pretrained) for n in names]
    return comparison.compare(loaded, decoded(key, _data).image, method=method, common_target=common,
                              size=display_size(key, _data))


@_budget.memoize(data_budget, around=lambda: _spinner("Guided backpropagation on a private copy of the model…"))
def guided(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, target: int | None, layer: str | None
) -> cams.GuidedResult:
    return cams.guided(model(name, device, pretrained), model_input(name, key, _data), target=target, layer=layer,
                       size=display_size(key, _data))


@_budget.memoize(data_budget, around=lambda: _spinner("Factorising the layer's activations into concepts…"))
def concepts_of(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int, layer: str | None
) -> concepts.Concepts:
    return concepts.factorize(model(name, device, pretrained), model_input(name, key, _data), k=k, layer=layer,
                              shown=picture(key, _data).image)


def randomized_model(name: str, device: str, pretrained: bool, steps: int) -> models.LoadedModel:
    """The shared model itself for steps == 0, else a private copy with the top `steps` layers randomised."""
    return model(name, device, pretrained) if steps == 0 else _randomized_copy(name, device, pretrained, steps)


@_budget.memoize(model_budget, around=lambda: _spinner("Randomising a copy of the model…"), max_entries=4)
def _randomized_copy(name: str, device: str, pretrained: bool, steps: int) -> models.LoadedModel:
    return sanity.randomized(model(name, device, pretrained), steps)


def depth(
    name: str, device: str, pretrained: bool, steps: int, key: str, _data: bytes, method: str, target: int,
    _on_progress=None,
) -> list[cams.CamResult]:
    """One CAM per stage of the backbone (shallow to deep), on the (possibly randomised) model."""
    loaded = randomized_model(name, device, pretrained, steps)
    image = model_input(name, key, _data)

    def compute():
        results = []
        for index, stage in enumerate(loaded.spec.stages):
            if _on_progress:
                _on_progress(index / len(loaded.spec.stages), f"Stage {stage}")
            results += cams.compute(loaded, image, methods=[method], target=target, layer=stage,
                                    size=display_size(key, _data))
        return results

    return _cam_results().get(("depth", name, device, pretrained, steps, key, method, target), compute)


def cascade(name: str, device: str, pretrained: bool) -> list[str]:
    return sanity.cascade(model(name, device, pretrained))


def random_target(name: str, device: str, pretrained: bool, *, avoid: int) -> int:
    return sanity.random_target(model(name, device, pretrained), avoid=avoid)


@_budget.memoize(data_budget, around=lambda: _spinner("Computing feature maps…"))
def depth_feature_maps(
    name: str, device: str, pretrained: bool, steps: int, key: str, _data: bytes, layer: str, limit: int
) -> features.FeatureMaps:
    loaded = randomized_model(name, device, pretrained, steps)
    return features.feature_maps(loaded, decoded(key, _data).image, layer=layer, limit=limit)


@st.cache_data(max_entries=32, show_spinner=False)
def estimate(name: str, device: str, pretrained: bool, key: str, _data: bytes, method: str, layer: str | None) -> float:
    return cams.estimate_seconds(model(name, device, pretrained), model_input(name, key, _data), method, layer=layer)


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def cam_layers(name: str, device: str, pretrained: bool) -> list[str]:
    return features.cam_layers(model(name, device, pretrained))


@st.cache_data
def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.jpg"))


@st.cache_data
def sample_bytes(name: str) -> bytes:
    return (SAMPLES / f"{name}.jpg").read_bytes()


def devices() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] if runtime.resolve_device("auto").type == "cuda" else [])


def device_label(device: str) -> str:
    return runtime.describe_device(runtime.resolve_device(device))


def specs() -> dict[str, registry.BackboneSpec]:
    return {name: registry.get(name) for name in registry.names()}


def weights_here(name: str) -> bool:
    return models.weights_available(name)


# --- feature maps and architecture ---


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def layer_table(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> list[features.LayerInfo]:
    """Every layer with its output shape for this image."""
    return features.layers(model(name, device, pretrained), decoded(key, _data).image)


@_budget.memoize(data_budget, around=lambda: _spinner("Computing feature maps…"))
def feature_maps(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, layer: str | None, limit: int
) -> features.FeatureMaps:
    return features.feature_maps(model(name, device, pretrained), decoded(key, _data).image, layer=layer, limit=limit)


@st.cache_data(max_entries=16, show_spinner=False)
def first_conv_filters(name: str, device: str, pretrained: bool) -> features.Filters:
    return features.first_conv_filters(model(name, device, pretrained))


@st.cache_data(max_entries=16, show_spinner="Reading the architecture…")
def architecture(name: str, device: str, pretrained: bool) -> features.Architecture:
    """Modules, output shapes for a grey image of the model's input size, parameter counts."""
    return features.architecture(model(name, device, pretrained))


# --- benchmarks ---

import time  # noqa: E402  (this section's imports stay in this section)

from core import benchmarks  # noqa: E402


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything a benchmark result depends on, as plain values (the cache key)."""

    names: tuple[str, ...]
    batches: tuple[int, ...]
    input_size: int | None  # None: each model's own
    precision: str
    device: str
    repeats: int | None  # None: until the median is stable
    warmup: int

    @property
    def total(self) -> int:
        return len(self.names) * len(set(self.batches))


@dataclass(frozen=True)
class BenchmarkResult:
    settings: BenchmarkSettings
    rows: tuple[benchmarks.BenchmarkRow, ...]
    machine: str
    method: str
    finished: float  # time.time()
    complete: bool  # False when stopped: not cached
    busy: str | None = None  # a warning when other work loaded the machine at the start


def _benchmark_results() -> _budget.Store:
    """Complete benchmark results by settings, shared by all sessions, the oldest dropped first."""
    return _results("benchmarks", max_entries=16)


class _BackgroundJob:
    """Work in a daemon thread, so that a page can poll it (progress, partial results) and offer Stop.

    Subclasses set their inputs, call `_start(name)`, and implement `_work()` returning the result. The
    thread calls core only (no Streamlit); `stop` is polled by core; `result` or `error` is set at the end.
    The job joins the heavy-work queue (`heavy_gate`) when it starts and runs `_work` once it holds a slot:
    `state` is "queued" (`queue_text` says how many are ahead), "running" or "done". Stop while queued
    ends it without running, with `error` a core `Cancelled`.
    """

    label = "Heavy work"  # how the queue names the job

    def _start(self, name: str) -> None:
        self.stop = threading.Event()
        self.started = time.time()
        self.running_since: float | None = None
        self.ran = False  # whether _work was called
        self.result = None
        self.error: BaseException | None = None
        # in the script thread: the place in the queue is taken at the click, and cache_resource has a context
        self.ticket = heavy_gate().enter(self.label)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def state(self) -> str:
        """One of "queued" (waiting for a heavy-work slot), "running" or "done"."""
        if self.done:
            return "done"
        return "queued" if self.ticket.state == "queued" else "running"

    @property
    def ahead(self) -> int | None:
        """Jobs queued before this one (0: next in line); None unless queued."""
        return self.ticket.ahead

    def queue_text(self) -> str:
        return self.ticket.describe()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done

    def _run(self) -> None:
        try:
            with self.ticket.gate.hold(self.ticket, should_stop=self.stop.is_set):
                self.running_since, self.ran = time.time(), True
                self.result = self._work()
        except BaseException as error:  # re-raised or shown in the script thread, where the app shows it
            self.error = error

    def _work(self):
        raise NotImplementedError


class BenchmarkJob(_BackgroundJob):
    """One benchmark in the background; `rows` grows as settings finish."""

    label = "Benchmark"

    def __init__(self, settings: BenchmarkSettings) -> None:
        self.settings = settings
        self.rows: list[benchmarks.BenchmarkRow] = []
        self._finished = _benchmark_results()  # fetched here: the thread has no script context
        self._start("visionlens-benchmark")

    def _work(self) -> BenchmarkResult:
        s = self.settings
        machine, busy = benchmarks.machine(), benchmarks.busy()
        rows = benchmarks.run(
            s.names, batches=s.batches, input_size=s.input_size, precision=s.precision, device=s.device,
            repeats=s.repeats, warmup=s.warmup, on_row=lambda row, done, total: self.rows.append(row),
            should_stop=self.stop.is_set,
        )
        result = BenchmarkResult(
            s, tuple(rows), machine, benchmarks.method(warmup=s.warmup, repeats=s.repeats, device=s.device,
                                                        precision=s.precision),
            time.time(), complete=len(rows) == s.total, busy=busy,
        )
        if result.complete:
            self._finished.put(s, result)
        return result


def benchmark_cached(settings: BenchmarkSettings) -> BenchmarkResult | None:
    return _benchmark_results().peek(settings)


def benchmark_start(settings: BenchmarkSettings) -> BenchmarkJob:
    return BenchmarkJob(settings)


def benchmark_precisions(device: str) -> list[str]:
    return benchmarks.precisions(device)


# --- datasets ---

from core import datasets as _datasets  # noqa: E402  (this section's imports stay in this section)
from core import embeddings, evaluation, localisation  # noqa: E402
from core import probing, roots  # noqa: E402

BUILTIN_SETS = ("digits", "shapes")
TORCHVISION_SETS = _datasets.TORCHVISION_SETS
TORCHVISION_ROOT = Path.home() / ".cache" / "visionlens" / "datasets"


@st.cache_resource(max_entries=8, show_spinner="Reading the dataset…")
def dataset(kind: str, source: str, seed: int, limit: int, _data: bytes | None = None) -> _datasets.Dataset:
    """A dataset shared by every session (never mutated), sampled to at most `limit` images.

    kind: "digits" | "shapes" | "zip" (source = the bytes' sha256) | "folder" (source = path) | "torchvision".
    """
    if kind == "digits":
        return _datasets.digits(seed, limit)
    if kind == "shapes":
        return _datasets.shapes(seed, limit, 128)
    if kind == "zip":
        whole = _datasets.from_zip(_data or b"", name="upload.zip")
    elif kind == "folder":  # a browser user names only folders under the operator's data roots
        whole = roots.open_dataset(source, roots.configured())
    elif kind == "torchvision":
        return _datasets.torchvision_set(source, TORCHVISION_ROOT, n=limit, seed=seed)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    return whole.sample(limit, seed=seed)


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


def _dataset_results() -> _budget.Store:
    return _results("datasets")


def dataset_pca(features_key: tuple, _features, seed: int):
    """(points (N, 2) float32, trustworthiness) of the PCA map, cached by the features' key + seed. Fast, so it
    runs in the calling thread; t-SNE runs in the background (dataset_tsne_job)."""
    def compute():
        points = embeddings.pca(_features, seed=seed)
        return points, embeddings.trustworthiness(_features, points)

    return _dataset_results().get(_map_key(features_key, "pca", 0, 0, seed), compute)


# Feature extraction and t-SNE run as background jobs: a rerun (any widget click) or another session with
# the same settings re-attaches to the job instead of starting the work again.


class _Jobs:
    """Background jobs by their result's cache key, shared by all sessions and bounded (`size`).

    A job stays registered while it runs and after it ended: a success keeps its `result` (also put in the
    result cache), a failure or a stop its `error`, so that every session watching it sees why until one of
    them `forget`s it. Over `size`, ended jobs are dropped first, then the oldest unfinished one is stopped.
    Sessions watching a job are its `watchers`: when the last one `leave`s it unfinished (its settings
    changed), nobody waits for it any more, and it is stopped and forgotten.
    """

    def __init__(self, size: int) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def attach(self, key, start, session: str | None = None):
        """The registered job for `key`, else start() registered under it; `session` now watches it."""
        with self.lock:
            job = self.items.get(key)
            if job is None:
                job = self.items[key] = start()
            if session is not None:
                job.watchers.add(session)
            while len(self.items) > self.size:
                ended = [k for k, j in self.items.items() if j.done and k != key]
                oldest = ended[0] if ended else next(k for k in self.items if k != key)
                self.items.pop(oldest).stop.set()
            return job

    def forget(self, job) -> None:
        with self.lock:
            if self.items.get(job.key) is job:
                del self.items[job.key]

    def leave(self, job, session: str) -> None:
        with self.lock:
            job.watchers.discard(session)
            if job.watchers or job.done:
                return
            job.stop.set()
            if self.items.get(job.key) is job:
                del self.items[job.key]


@st.cache_resource
def _dataset_jobs() -> _Jobs:
    return _Jobs(16)


class _DatasetJob(_BackgroundJob):
    """Work whose result lands in `_dataset_results()` under `key`; `progress` and `message` for the page."""

    def __init__(self, key: tuple, store: _budget.Store | None = None) -> None:
        self.key = key
        self.progress, self.message = 0.0, "Starting…"
        self.watchers: set[str] = set()  # sessions waiting for it (see _Jobs)
        self._store = _dataset_results() if store is None else store  # here: the thread has no script context
        self._start(f"visionlens-{self.label.lower().replace(' ', '-')}")

    def _report(self, fraction: float, message: str) -> None:
        self.progress, self.message = min(max(fraction, 0.0), 1.0), message

    def _work(self):
        value = self._compute()
        self._store.put(self.key, value)
        return value

    def _compute(self):
        raise NotImplementedError


class FeaturesJob(_DatasetJob):
    """Penultimate features of a dataset (core.embeddings.extract), batch by batch; Stop between batches."""

    label = "Feature extraction"

    def __init__(self, key: tuple, loaded: models.LoadedModel, dataset: _datasets.Dataset, precision: str,
                 batch_size: int, size: int | None) -> None:
        self._loaded, self._dataset = loaded, dataset
        self._precision, self._batch_size, self._size = precision, batch_size, size
        super().__init__(key)

    def _compute(self) -> embeddings.Embeddings:
        return embeddings.extract(self._loaded, self._dataset, batch_size=self._batch_size, precision=self._precision,
                                  size=self._size, on_progress=self._report, should_stop=self.stop.is_set)


class TsneJob(_DatasetJob):
    """A t-SNE map and its trustworthiness, (points, trust) as dataset_pca returns; Stop every 50 iterations."""

    label = "t-SNE"

    def __init__(self, key: tuple, features, perplexity: float, iterations: int, seed: int) -> None:
        self._features, self._perplexity, self._iterations, self._seed = features, perplexity, iterations, seed
        super().__init__(key)

    def _compute(self):
        points = embeddings.tsne(self._features, perplexity=self._perplexity, iterations=self._iterations,
                                 seed=self._seed, on_progress=self._report, should_stop=self.stop.is_set)
        return points, embeddings.trustworthiness(self._features, points)


class FaithfulnessJob(_DatasetJob):
    """Faithfulness scores of one image's maps and the baselines (core.faithfulness.scorecard); Stop between
    batches. Its result lands in `_faithfulness_results()`, apart from the (large) dataset results."""

    label = "Faithfulness scores"

    def __init__(self, key: tuple, loaded: models.LoadedModel, image, heatmaps: dict, target: int) -> None:
        self._loaded, self._image, self._heatmaps, self._target = loaded, image, heatmaps, target
        super().__init__(key, _faithfulness_results())

    def _compute(self):
        return faithfulness.scorecard(self._loaded, self._image, self._heatmaps, self._target,
                                      on_progress=self._report, should_stop=self.stop.is_set)


def _faithfulness_results() -> _budget.Store:
    return _results("faithfulness")


@st.cache_resource
def _faithfulness_jobs() -> _Jobs:
    return _Jobs(8)


def _faithfulness_key(name, device, pretrained, key, methods, target, layer, eigen_smooth) -> tuple:
    return ("faithfulness", name, device, pretrained, key, tuple(methods), target, layer, eigen_smooth)


def faithfulness_ready(
    name: str, device: str, pretrained: bool, key: str, methods: tuple[str, ...], target: int, layer: str | None,
    eigen_smooth: bool = False,
) -> faithfulness.Scorecard | None:
    """The cached scorecard for these maps, or None: computes nothing."""
    return _faithfulness_results().peek(_faithfulness_key(name, device, pretrained, key, methods, target, layer,
                                                          eigen_smooth))


def faithfulness_job(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, methods: tuple[str, ...], target: int,
    layer: str | None, eigen_smooth: bool = False, session: str | None = None,
) -> FaithfulnessJob:
    """The background scoring of these maps (+ baselines): the one registered (running or ended), else a new one
    in the heavy-work queue. The page asks for it only when faithfulness_ready has nothing."""
    memo = _faithfulness_key(name, device, pretrained, key, methods, target, layer, eigen_smooth)
    loaded = model(name, device, pretrained)  # before the registry's lock: a first load must not hold it
    results = cam_grid(name, device, pretrained, key, _data, methods, target, layer, eigen_smooth)
    heatmaps = {r.method: r.heatmap for r in results}
    image = model_input(name, key, _data)  # the model sees the same tensor as from the whole image
    return _faithfulness_jobs().attach(memo, lambda: FaithfulnessJob(memo, loaded, image, heatmaps, target), session)


def faithfulness_forget(job: FaithfulnessJob) -> None:
    """Drop a failed or stopped scoring, so that the next request starts it again."""
    _faithfulness_jobs().forget(job)


def faithfulness_leave(job: FaithfulnessJob, session: str) -> None:
    """`session` no longer waits for `job`: stopped and dropped if nobody else does."""
    _faithfulness_jobs().leave(job, session)


def _features_key(content_hash: str, name: str, device: str, pretrained: bool, precision: str, batch_size: int,
                  size: int | None) -> tuple:
    return ("features", content_hash, name, device, pretrained, precision, batch_size, size)


def dataset_features_ready(
    name: str, device: str, pretrained: bool, _dataset: _datasets.Dataset, precision: str, batch_size: int,
    size: int | None,
) -> embeddings.Embeddings | None:
    """The cached features (as dataset_features computes them), or None: computes nothing."""
    key = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    return _dataset_results().peek(key)


def dataset_features_job(
    name: str, device: str, pretrained: bool, _dataset: _datasets.Dataset, precision: str, batch_size: int,
    size: int | None, session: str | None = None,
) -> FeaturesJob:
    """The background extraction for these settings: the one already registered (running or ended), else a new
    one. The page asks for it only when dataset_features_ready has nothing."""
    key = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    loaded = model(name, device, pretrained)  # before the registry's lock: a first load must not hold it
    return _dataset_jobs().attach(key, lambda: FeaturesJob(key, loaded, _dataset, precision, batch_size, size),
                                  session)


def _map_key(features_key: tuple, method: str, perplexity: float, iterations: int, seed: int) -> tuple:
    return ("map", features_key, method, perplexity, iterations, seed)


def dataset_tsne_ready(features_key: tuple, perplexity: float, iterations: int, seed: int):
    """The cached (points, trustworthiness) of this t-SNE map, or None: computes nothing."""
    return _dataset_results().peek(_map_key(features_key, "tsne", perplexity, iterations, seed))


def dataset_tsne_job(
    features_key: tuple, _features, perplexity: float, iterations: int, seed: int, session: str | None = None,
) -> TsneJob:
    """The background t-SNE for these settings: the one already registered (running or ended), else a new one."""
    key = _map_key(features_key, "tsne", perplexity, iterations, seed)
    return _dataset_jobs().attach(key, lambda: TsneJob(key, _features, perplexity, iterations, seed), session)


def dataset_job_forget(job: _DatasetJob) -> None:
    """Drop a failed or stopped job, so that the next request starts the work again."""
    _dataset_jobs().forget(job)


def dataset_job_leave(job: _DatasetJob, session: str) -> None:
    """`session` no longer waits for `job` (its settings changed): stopped and dropped if nobody else does."""
    _dataset_jobs().leave(job, session)


def dataset_evaluation_key(features_key: tuple, mode: str, test_fraction: float, seed: int) -> tuple:
    return ("evaluation", features_key, mode, test_fraction, seed)


def dataset_evaluation(
    features_key: tuple, _embedded: embeddings.Embeddings, _dataset: _datasets.Dataset, categories: tuple[str, ...],
    mode: str, test_fraction: float, seed: int,
) -> evaluation.Evaluation:
    key = dataset_evaluation_key(features_key, mode, test_fraction, seed)
    return _dataset_results().get(key, lambda: evaluation.evaluate(
        _embedded.features, _embedded.logits, _dataset.labels, _dataset.classes, categories=categories, mode=mode,
        test_fraction=test_fraction, seed=seed,
    ))


@dataclass(frozen=True, eq=False)
class DatasetHead:
    """The head a dataset's heatmaps explain: an evaluation's (its linear probe, or zero-shot's mapped classes).

    `key` is the evaluation's cache key (dataset_evaluation_key); `size` the side of the square the
    features were extracted at (Embeddings.image_size), which the probe model resizes images to.
    """

    key: tuple
    evaluation: evaluation.Evaluation
    size: int

    @property
    def probe(self) -> bool:
        return self.evaluation.probe is not None

    def describe(self, cam: cams.CamResult) -> str:
        """Which head and class a heatmap explains: "probe class 'circle'" or "ImageNet 'tabby'"."""
        return f"probe class '{cam.label}'" if self.probe else f"ImageNet '{cam.label}'"


def _probe_models() -> _budget.Store:
    return _results("probe models", models=True, max_entries=2)  # each is a private copy of a backbone: keep few


def dataset_probe_model(name: str, device: str, pretrained: bool, head: DatasetHead) -> models.LoadedModel:
    """The backbone with the evaluation's linear probe as its head (a copy; the shared model is untouched)."""
    return _probe_models().get(("probe model", head.key), lambda: probing.probe_model(
        model(name, device, pretrained), head.evaluation, size=head.size))


def dataset_cams(
    name: str, device: str, pretrained: bool, _dataset: _datasets.Dataset, index: int, targets: tuple[int | None, ...],
    method: str = "gradcam", head: DatasetHead | None = None,
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
            loaded = model(name, device, pretrained)
            mapped = head.evaluation.mapping.targets if head is not None else None
            explained = tuple(t if mapped is None or t is None else mapped[t] for t in targets)
        return [cams.compute(loaded, image, methods=[method], target=t)[0] for t in explained]

    return _cam_results().get(("dataset", _dataset.content_hash, name, device, pretrained, index, targets, method,
                               head.key if head is not None else None), compute)


def dataset_average_cam(
    name: str, device: str, pretrained: bool, _dataset: _datasets.Dataset, rows: tuple[int, ...], target: int | None,
    size: int = 96, head: DatasetHead | None = None,
):
    """(size, size) float32 mean Grad-CAM over the images at `rows` (each resized to a square first).

    `target` and `head` as for dataset_cams: with an evaluation's head, `target` is a folder class.
    """
    import numpy as np
    from PIL import Image

    def compute():
        heat = np.zeros((size, size), np.float32)
        for row in rows:
            (result,) = dataset_cams(name, device, pretrained, _dataset, row, (target,), head=head)
            picture = Image.fromarray(result.heatmap.astype(np.float32), mode="F").resize((size, size))
            heat += np.asarray(picture, dtype=np.float32)
        return heat / max(len(rows), 1)

    return _dataset_results().get(("average cam", _dataset.content_hash, name, device, pretrained, rows, target,
                                   size, head.key if head is not None else None), compute)


def dataset_localisation(
    name: str, device: str, pretrained: bool, _dataset: _datasets.Dataset, methods: tuple[str, ...], _on_progress=None,
) -> localisation.Localisation:
    return _dataset_results().get(
        ("localisation", _dataset.content_hash, name, device, pretrained, methods),
        lambda: localisation.score(model(name, device, pretrained), _dataset, methods=methods,
                                   on_progress=_on_progress),
    )


def dataset_precisions(device: str) -> tuple[str, ...]:
    return embeddings.precisions(runtime.resolve_device(device))


@_budget.memoize(data_budget)
def dataset_mean_picture(content_hash: str, _dataset: _datasets.Dataset, rows: tuple[int, ...], side: int):
    """The pixel-wise mean of the images at `rows`, each resized to a (side, side) square, as a PIL image
    (cached by the dataset's content hash)."""
    import numpy as np
    from PIL import Image

    stack = [np.asarray(_dataset.images[r].convert("RGB").resize((side, side)), dtype=np.float32) for r in rows]
    return Image.fromarray(np.mean(stack, axis=0).round().astype(np.uint8))


def dataset_thumbnail(_dataset: _datasets.Dataset, index: int, side: int = 96):
    """(side, side, 3) uint8 preview of image `index` (the whole image, letterboxed on white)."""
    import numpy as np
    from PIL import ImageOps

    return np.asarray(ImageOps.pad(_dataset.images[index], (side, side), color=(255, 255, 255)))


# --- learn ---

from core import convolution, gradcam, lessons  # noqa: E402  (this section's imports stay in this section)


@_budget.memoize(data_budget)
def lesson_picture(name: str, key: str, _data: bytes, grey: bool = False):
    """The image at the size `name` gets it: (H, W, 3) uint8, or (H, W) luminance with `grey`."""
    return convolution.picture(decoded(key, _data).image, registry.get(name), grey=grey)


@_budget.memoize(data_budget)
def convolved(name: str, key: str, _data: bytes, kernel: tuple[tuple[float, ...], ...], grey: bool):
    """The picture filtered by a 3x3 kernel, as a uint8 picture (see convolution.visible)."""
    result = convolution.convolve(lesson_picture(name, key, _data, grey), kernel)
    return convolution.visible(result, kernel)


@st.cache_data(max_entries=64, show_spinner=False)
def worked_pixel(name: str, key: str, _data: bytes, kernel: tuple[tuple[float, ...], ...]) -> convolution.Worked:
    """The centre output pixel of the grey picture's convolution, worked out."""
    return convolution.worked(lesson_picture(name, key, _data, True), kernel)


@_budget.memoize(data_budget)
def pooled(name: str, key: str, _data: bytes, size: int, kind: str):
    return convolution.pool(lesson_picture(name, key, _data), size, kind)


@st.cache_data(max_entries=16, show_spinner="Measuring every convolution and pooling layer…")
def conv_checks(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> list[lessons.ConvCheck]:
    return lessons.conv_layers(model(name, device, pretrained), decoded(key, _data).image)


@st.cache_data(max_entries=16, show_spinner="Following the receptive field…")
def receptive_field(name: str, device: str, pretrained: bool) -> list[lessons.FieldStep]:
    return lessons.receptive_field(model(name, device, pretrained))


@_budget.memoize(data_budget)
def field_outline(name: str, key: str, _data: bytes, size: int, jump: int):
    return convolution.field_outline(lesson_picture(name, key, _data), size, jump=jump)


@st.cache_data(max_entries=16, show_spinner="Measuring F(x) and x in every residual block…")
def residuals(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> lessons.Residuals:
    return lessons.residuals(model(name, device, pretrained), decoded(key, _data).image)


@st.cache_data(max_entries=16, show_spinner=False)
def depth_layers(name: str, device: str, pretrained: bool, count: int) -> list[str]:
    return lessons.depth_layers(model(name, device, pretrained), count=count)


@st.cache_data(max_entries=32, show_spinner=False)
def transfer_plans(name: str, device: str, pretrained: bool, classes: int) -> lessons.Transfer:
    return lessons.transfer_plans(model(name, device, pretrained), classes=classes)


@_budget.memoize(data_budget, around=lambda: _spinner("One forward and backward pass for Grad-CAM…"))
def gradcam_parts(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, target: int | None, top: int
) -> gradcam.Parts:
    return gradcam.parts(model(name, device, pretrained), decoded(key, _data).image, target=target, top=top)


# --- training ---

import uuid  # noqa: E402  (this section's imports stay in this section)

from core import checkpoints, processes, training  # noqa: E402


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A finished run of this session, with the dataset it was trained on (its images feed the CAMs)."""

    id: str
    number: int  # 1, 2, ... in the order the session trained them
    result: training.RunResult
    dataset: _datasets.Dataset
    source: tuple[str, str, bool] | None  # (name, device, pretrained) of the starting backbone; None: a baseline

    @property
    def label(self) -> str:
        return f"#{self.number} {self.result.strategy.name} · {self.result.backbone} · {self.result.dataset}"


class TrainingJob(_BackgroundJob):
    """One training run in a process of its own (core.processes); `history` grows by one EpochStats per epoch.

    This thread only passes the process's reports on to the fields the page polls (progress, message,
    history, then result or error). The process builds its own model: the cached one (`model()`) is never
    touched. Stop is passed on and polled between batches; the best epoch so far is kept. Frozen features
    come from (and go to) the cache the Datasets page shares.
    """

    label = "Training"

    def __init__(self, source: tuple[str, str, bool] | None, device: str, dataset: _datasets.Dataset,
                 config: training.TrainConfig, number: int) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.source, self.device, self.dataset, self.config, self.number = source, device, dataset, config, number
        self.history: list[training.EpochStats] = []
        self.progress, self.message = 0.0, "Starting the training process…"
        self.pid: int | None = None  # the training process, once it has started
        self._store = _dataset_results()  # fetched here: the thread has no script context for st.cache_resource
        self._start("visionlens-training")

    def _report(self, fraction: float, message: str) -> None:
        self.progress, self.message = min(max(fraction, 0.0), 1.0), message

    def _started(self, pid: int, threads: int) -> None:
        self.pid, self.message = pid, f"Training process {pid} started ({threads} threads), loading…"

    def _work(self) -> TrainedRun:
        features = key = None
        name, device, pretrained = self.source if self.source is not None else (None, self.device, True)
        if self.config.strategy == "feature-extraction" and name is not None:
            batch_size, precision, size = training.feature_settings(self.config, registry.get(name))
            key = _features_key(self.dataset.content_hash, name, device, pretrained, precision, batch_size, size)
            features = self._store.peek(key)  # else the process computes them, and they are kept for next time
        result = processes.train(
            name, self.dataset, self.config, pretrained=pretrained, features=features, device=device,
            on_start=self._started, on_epoch=self.history.append, on_progress=self._report,
            on_features=lambda computed: self._store.put(key, computed), should_stop=self.stop.is_set,
        )
        return TrainedRun(self.id, self.number, result, self.dataset, self.source)


def training_start(
    source: tuple[str, str, bool] | None, device: str, _dataset: _datasets.Dataset, config: training.TrainConfig,
    number: int,
) -> TrainingJob:
    return TrainingJob(source, device, _dataset, config, number)


@st.cache_data(max_entries=32, show_spinner=False)
def training_summary(
    name: str, device: str, pretrained: bool, strategy: str, unfreeze: int | None, classes: int, head: str, hidden: int
) -> training.ParameterSummary:
    """Trainable and frozen parameter groups, before training (the shared model is only read)."""
    loaded = model(name, device, pretrained) if training.STRATEGIES[strategy].pretrained else None
    return training.parameter_summary(loaded, strategy, unfreeze, classes=classes, head=head, hidden=hidden)


def training_cam(run: TrainedRun, index: int) -> cams.CamResult:
    """Grad-CAM of the trained model for its predicted class on image `index` of the run's dataset."""
    return _cam_results().get(
        ("training", run.id, index),
        lambda: cams.compute(run.result.model, run.dataset.images[index], methods=["gradcam"])[0],
    )


def checkpoint_files(run: TrainedRun) -> tuple:
    """(JSON, safetensors) as callables for st.download_button: packed on the first click, then kept."""
    store = _training_exports()
    result = run.result

    def files() -> tuple[bytes, bytes]:
        return store.get(run.id, lambda: checkpoints.serialize(result.model, trained=checkpoints.Trained.of(result)))

    return (lambda: files()[0]), (lambda: files()[1])


def _training_exports() -> _budget.Store:
    return _results("training exports", max_entries=4)


@_budget.memoize(model_budget, around=lambda: _spinner("Checking and loading the model…"), max_entries=2)
def imported(json_key: str, weights_key: str, _json: bytes, _weights: bytes) -> models.LoadedModel:
    """A model from an export's two files (validated by core; nothing is unpickled), on the CPU."""
    return checkpoints.load((_json, _weights), device="cpu")
