"""Heavy work in background threads, so that a page can poll it, show progress and offer Stop.

`BackgroundJob` is the base: the job takes its place in the heavy-work queue (`cache.heavy_gate`) at the click,
runs once it holds a slot, and ends with `result` or `error`. Jobs whose result every session shares
(features, t-SNE, faithfulness) are registered by their result's key in a `Registry`, so a rerun or another
session re-attaches to them instead of starting the work again. The concrete jobs and their keys are here;
what they compute is one core call each. Pages watch any of them with `widgets.job_progress`.
"""

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace

import streamlit as st

from core import audit, benchmarks, datasets, embeddings, faithfulness, models, processes, registry, training
from dashboard import budget, cache, dataset_cache


class BackgroundJob:
    """Work in a daemon thread, so that a page can poll it (progress, partial results) and offer Stop.

    Subclasses set their inputs, call `_start(name)`, and implement `_work()` returning the result. The
    thread calls core only (no Streamlit); `stop` is polled by core; `result` or `error` is set at the end.
    The job joins the heavy-work queue (`cache.heavy_gate`) when it starts and runs `_work` once it holds a
    slot: `state` is "queued" (`queue_text` says how many are ahead), "running" or "done". Stop while queued
    ends it without running, with `error` a core `Cancelled`. `progress` (0..1) and `message` say how far it is.
    """

    label = "Heavy work"  # how the queue names the job
    progress, message = 0.0, "Starting…"  # set per job by _report

    def _start(self, name: str) -> None:
        self.stop = threading.Event()
        self.started = time.time()
        self.running_since: float | None = None
        self.ran = False  # whether _work was called
        self.result = None
        self.error: BaseException | None = None
        # in the script thread: the place in the queue is taken at the click, and cache_resource has a context
        self.ticket = cache.heavy_gate().enter(self.label)
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

    def _report(self, fraction: float, message: str) -> None:
        self.progress, self.message = min(max(fraction, 0.0), 1.0), message

    def _run(self) -> None:
        try:
            with self.ticket.gate.hold(self.ticket, should_stop=self.stop.is_set):
                self.running_since, self.ran = time.time(), True
                self.result = self._work()
        except BaseException as error:  # re-raised or shown in the script thread, where the app shows it
            self.error = error

    def _work(self):
        raise NotImplementedError


class Registry:
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

    def find(self, wanted):
        """The first registered job for which `wanted(job)` is true, else None."""
        with self.lock:
            return next((job for job in self.items.values() if wanted(job)), None)

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


# --- benchmarks ---


def _benchmark_results() -> budget.Store:
    """Complete benchmark results by settings, shared by all sessions, the oldest dropped first."""
    return cache.results("benchmarks", max_entries=16)


class BenchmarkJob(BackgroundJob):
    """One benchmark in the background; `rows` grows as settings finish."""

    label = "Benchmark"

    def __init__(self, settings: benchmarks.BenchmarkSettings) -> None:
        self.settings = settings
        self.rows: list[benchmarks.BenchmarkRow] = []
        self._finished = _benchmark_results()  # fetched here: the thread has no script context
        self._start("visionlens-benchmark")

    def _on_row(self, row: benchmarks.BenchmarkRow, done: int, total: int) -> None:
        self.rows.append(row)
        plan = self.settings.plan()
        now = f"now {registry.get(plan[done][0]).title} at batch {plan[done][1]}" if done < total else "finishing"
        self._report(done / total, f"measured {done} of {total} settings; {now}")

    def _work(self) -> benchmarks.BenchmarkResult:
        first = self.settings.plan()[0]
        self._report(0.0, f"measured 0 of {self.settings.total} settings; now {registry.get(first[0]).title} "
                          f"at batch {first[1]}")
        result = benchmarks.run_settings(self.settings, on_row=self._on_row, should_stop=self.stop.is_set)
        if result.complete:
            self._finished.put(self.settings, result)
        return result


def benchmark_cached(settings: benchmarks.BenchmarkSettings) -> benchmarks.BenchmarkResult | None:
    return _benchmark_results().peek(settings)


def benchmark_start(settings: benchmarks.BenchmarkSettings) -> BenchmarkJob:
    return BenchmarkJob(settings)


# --- results shared by sessions: features, t-SNE, faithfulness ---


class SharedJob(BackgroundJob):
    """Work whose result lands in a results store under `key` (the dataset results unless `store` is given)."""

    def __init__(self, key: tuple, store: budget.Store | None = None) -> None:
        self.key = key
        self.watchers: set[str] = set()  # sessions waiting for it (see Registry)
        self._store = dataset_cache.dataset_results() if store is None else store  # here: the thread has no script context
        self._start(f"visionlens-{self.label.lower().replace(' ', '-')}")

    def _work(self):
        value = self._compute()
        self._store.put(self.key, value)
        return value

    def _compute(self):
        raise NotImplementedError


class FeaturesJob(SharedJob):
    """Penultimate features of a dataset (core.embeddings.extract), batch by batch; Stop between batches."""

    label = "Feature extraction"

    def __init__(self, key: tuple, loaded: models.LoadedModel, dataset: datasets.Dataset, precision: str,
                 batch_size: int, size: int | None) -> None:
        self._loaded, self._dataset = loaded, dataset
        self._precision, self._batch_size, self._size = precision, batch_size, size
        super().__init__(key)

    def _compute(self) -> embeddings.Embeddings:
        return embeddings.extract(self._loaded, self._dataset, batch_size=self._batch_size, precision=self._precision,
                                  size=self._size, on_progress=self._report, should_stop=self.stop.is_set)


class TsneJob(SharedJob):
    """A t-SNE map and its trustworthiness, as dataset_cache.dataset_pca returns them; Stop every 50 iterations."""

    label = "t-SNE"

    def __init__(self, key: tuple, features, perplexity: float, iterations: int, seed: int) -> None:
        self._features, self._perplexity, self._iterations, self._seed = features, perplexity, iterations, seed
        super().__init__(key)

    def _compute(self):
        points = embeddings.tsne(self._features, perplexity=self._perplexity, iterations=self._iterations,
                                 seed=self._seed, on_progress=self._report, should_stop=self.stop.is_set)
        return points, embeddings.trustworthiness(self._features, points)


class FaithfulnessJob(SharedJob):
    """Faithfulness scores of one image's maps and the baselines (core.faithfulness.scorecard); Stop between
    batches. Its result lands in `_faithfulness_results()`, apart from the (large) dataset results."""

    label = "Faithfulness scores"

    def __init__(self, key: tuple, loaded: models.LoadedModel, image, heatmaps: dict, target: int) -> None:
        self._loaded, self._image, self._heatmaps, self._target = loaded, image, heatmaps, target
        super().__init__(key, _faithfulness_results())

    def _compute(self):
        return faithfulness.scorecard(self._loaded, self._image, self._heatmaps, self._target,
                                      on_progress=self._report, should_stop=self.stop.is_set)


class AuditJob(SharedJob):
    """A heatmap, prediction and features for every image of a dataset (core.audit.explain_dataset), batch by
    batch; Stop between batches. One pass gives both: its features (and logits) also land under `features_key`,
    where the features tab (t-SNE, confusion matrix, probe) and training's frozen features look for them."""

    label = "Explaining a dataset"

    def __init__(self, key: tuple, features_key: tuple, loaded: models.LoadedModel, dataset: datasets.Dataset,
                 method: str, target: str, precision: str, batch_size: int, size: int | None) -> None:
        self.features_key = features_key
        self._loaded, self._dataset, self._method, self._target = loaded, dataset, method, target
        self._precision, self._batch_size, self._size = precision, batch_size, size
        super().__init__(key)

    def _compute(self) -> audit.Audit:
        result = audit.explain_dataset(self._loaded, self._dataset, method=self._method, target=self._target,
                                       batch_size=self._batch_size, precision=self._precision, size=self._size,
                                       keep_logits=True, on_progress=self._report, should_stop=self.stop.is_set)
        if self._store.peek(self.features_key) is None:
            self._store.put(self.features_key, features_of(result))
        return replace(result, logits=None)  # logits only in the features entry (4 KB an image at 1000 classes)


def features_of(result: audit.Audit) -> embeddings.Embeddings:
    """The audit's features and logits as `embeddings.extract` gives them (equal in fp32: tested), sharing its
    arrays."""
    return embeddings.Embeddings(result.features, result.logits, result.model, result.precision, result.image_size,
                                 result.seconds)


@st.cache_resource
def _dataset_jobs() -> Registry:
    return Registry(16)


def _faithfulness_results() -> budget.Store:
    return cache.results("faithfulness")


@st.cache_resource
def _faithfulness_jobs() -> Registry:
    return Registry(8)


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
    loaded = cache.model(name, device, pretrained)  # before the registry's lock: a first load must not hold it
    results = cache.cam_grid(name, device, pretrained, key, _data, methods, target, layer, eigen_smooth)
    heatmaps = {r.method: r.heatmap for r in results}
    image = cache.model_input(name, key, _data)  # the model sees the same tensor as from the whole image
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
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, precision: str, batch_size: int,
    size: int | None,
) -> embeddings.Embeddings | None:
    """The cached features (as dataset_features_job computes them), or None: computes nothing."""
    key = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    return dataset_cache.dataset_results().peek(key)


def dataset_features_pending(
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, precision: str, batch_size: int,
    size: int | None,
) -> AuditJob | None:
    """An unfinished audit (queued or running, any method and target) that will store these features, or None:
    the features tab waits for it rather than making a second pass."""
    key = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    return _dataset_jobs().find(lambda job: isinstance(job, AuditJob) and job.features_key == key and not job.done)


def dataset_features_job(
    name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, precision: str, batch_size: int,
    size: int | None, session: str | None = None,
) -> FeaturesJob:
    """The background extraction for these settings: the one already registered (running or ended), else a new
    one. The page asks for it only when dataset_features_ready has nothing."""
    key = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    loaded = cache.model(name, device, pretrained)  # before the registry's lock: a first load must not hold it
    return _dataset_jobs().attach(key, lambda: FeaturesJob(key, loaded, _dataset, precision, batch_size, size),
                                  session)


def _tsne_key(features_key: tuple, perplexity: float, iterations: int, seed: int) -> tuple:
    return ("map", features_key, "tsne", perplexity, iterations, seed)


def dataset_tsne_ready(features_key: tuple, perplexity: float, iterations: int, seed: int):
    """The cached (points, trustworthiness) of this t-SNE map, or None: computes nothing."""
    return dataset_cache.dataset_results().peek(_tsne_key(features_key, perplexity, iterations, seed))


def dataset_tsne_job(
    features_key: tuple, _features, perplexity: float, iterations: int, seed: int, session: str | None = None,
) -> TsneJob:
    """The background t-SNE for these settings: the one already registered (running or ended), else a new one."""
    key = _tsne_key(features_key, perplexity, iterations, seed)
    return _dataset_jobs().attach(key, lambda: TsneJob(key, _features, perplexity, iterations, seed), session)


def audit_key(name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, method: str, target: str,
              precision: str, batch_size: int, size: int | None) -> tuple:
    return ("audit", _dataset.content_hash, name, device, pretrained, method, target, precision, batch_size, size)


def audit_ready(name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, method: str, target: str,
                precision: str, batch_size: int, size: int | None) -> audit.Audit | None:
    """The stored audit for these settings, or None: computes nothing."""
    key = audit_key(name, device, pretrained, _dataset, method, target, precision, batch_size, size)
    return dataset_cache.dataset_results().peek(key)


def audit_job(name: str, device: str, pretrained: bool, _dataset: datasets.Dataset, method: str, target: str,
              precision: str, batch_size: int, size: int | None, session: str | None = None) -> AuditJob:
    """The background audit for these settings: the one already registered (running or ended), else a new one."""
    key = audit_key(name, device, pretrained, _dataset, method, target, precision, batch_size, size)
    features = _features_key(_dataset.content_hash, name, device, pretrained, precision, batch_size, size)
    loaded = cache.model(name, device, pretrained)  # before the registry's lock: a first load must not hold it
    return _dataset_jobs().attach(
        key, lambda: AuditJob(key, features, loaded, _dataset, method, target, precision, batch_size, size), session)


def dataset_job_forget(job: SharedJob) -> None:
    """Drop a failed or stopped job, so that the next request starts the work again."""
    _dataset_jobs().forget(job)


def dataset_job_leave(job: SharedJob, session: str) -> None:
    """`session` no longer waits for `job` (its settings changed): stopped and dropped if nobody else does."""
    _dataset_jobs().leave(job, session)


# --- training ---


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A finished run of this session, with the dataset it was trained on (its images feed the CAMs)."""

    id: str
    number: int  # 1, 2, ... in the order the session trained them
    result: training.RunResult
    dataset: datasets.Dataset
    source: tuple[str, str, bool] | None  # (name, device, pretrained) of the starting backbone; None: a baseline

    @property
    def label(self) -> str:
        return f"#{self.number} {self.result.strategy.name} · {self.result.backbone} · {self.result.dataset}"


class TrainingJob(BackgroundJob):
    """One training run in a process of its own (core.processes); `history` grows by one EpochStats per epoch.

    This thread only passes the process's reports on to the fields the page polls (progress, message,
    history, then result or error). The process builds its own model: the cached one (`cache.model`) is never
    touched. Stop is passed on and polled between batches; the best epoch so far is kept. Frozen features
    come from (and go to) the cache the Datasets page shares.
    """

    label = "Training"

    def __init__(self, source: tuple[str, str, bool] | None, device: str, dataset: datasets.Dataset,
                 config: training.TrainConfig, number: int) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.source, self.device, self.dataset, self.config, self.number = source, device, dataset, config, number
        self.history: list[training.EpochStats] = []
        self.progress, self.message = 0.0, "Starting the training process…"
        self.pid: int | None = None  # the training process, once it has started
        self._store = dataset_cache.dataset_results()  # fetched here: the thread has no script context for st.cache_resource
        self._start("visionlens-training")

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
    source: tuple[str, str, bool] | None, device: str, _dataset: datasets.Dataset, config: training.TrainConfig,
    number: int,
) -> TrainingJob:
    return TrainingJob(source, device, _dataset, config, number)
