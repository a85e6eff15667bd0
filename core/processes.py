"""Training in a separate OS process, so that the process that asked for it (the dashboard's server) stays
responsive and never shares a model with it.

`train` takes the same inputs as `core.training.train`, but picklable ones: the backbone by name (or an
export's bytes), the dataset, the config. It starts a child with the "spawn" method (forking a process
that runs torch threads can deadlock), which builds its own model, sets its torch threads (by default one
core fewer than this machine has), lowers its priority, and trains with `core.training.train`. Progress,
per-epoch stats and frozen features come back through a pipe as they happen; the result comes back as
plain data (the run's metrics, curves and predictions, and the kept weights as a VisionLens export) and
is rebuilt here into a `RunResult` with a model of its own.

Stop is a message on the same pipe, which the child polls between batches (`should_stop`): it ends the
run and keeps the best epoch so far. A child that does not take the stop within `stop_grace` seconds is
terminated. A child that dies (killed, out of memory, segfault) is reported as a `TrainingProcessError`
instead of leaving the caller waiting; errors raised by core in the child keep their class and message.
The child is a daemon process, ended when the caller returns or fails, and it exits by itself when its
parent goes away.
"""

import dataclasses
import importlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import spawn as _spawn

from core import checkpoints, embeddings, fitting, image_lists, models, registry, runtime, training
from core.datasets import Dataset
from core.embeddings import Embeddings
from core.errors import Cancelled, CoreError, InvalidInputError
from core.registry import BackboneSpec

log = logging.getLogger(__name__)

NAME = "visionlens-training"  # prefix of the child processes' names
STOPPED_EARLY = fitting.STOPPED_EARLY
_numbers = itertools.count(1)


class TrainingProcessError(CoreError, RuntimeError):
    """The training process failed outside core's own checks: it died, did not stop, or raised an unexpected error.

    `details` holds the child's traceback when there is one.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def default_threads() -> int:
    """Torch threads for a training process: every core this process may use but one (at least 1)."""
    return max(1, runtime.cores() - 1)


@dataclass(frozen=True)
class _Request:
    """Everything the child needs, all picklable."""

    config: training.TrainConfig
    dataset: Dataset  # see `portable`
    backbone: str | None  # a registered name; None: a baseline, or `checkpoint`
    pretrained: bool
    spec: BackboneSpec | None  # registered in the child when its registry lacks the name (a backbone added at run time)
    checkpoint: tuple[bytes, bytes] | None  # (JSON, safetensors) of an export to start from instead of `backbone`
    device: str
    features: Embeddings | None  # frozen features already computed (feature extraction)
    threads: int
    nice: int
    parent: int  # the pid the child watches: it exits when that process is gone


def portable(dataset: Dataset) -> Dataset:
    """`dataset` in a form that pickles cheaply: compressed bytes (or file paths) where the set holds them, else
    the decoded RGB pictures. Masks are left out (training does not read them); labels, classes, name and
    content hash are kept, so the child decodes exactly the same pixels."""
    blobs = _blobs(dataset.images)
    if blobs is not None:
        pictures = image_lists.LazyImages(blobs)
    elif isinstance(dataset.images, list):
        pictures = dataset.images
    else:  # a torchvision set or any other lazy sequence: decode here, hand over the pictures
        pictures = [dataset.images[i] for i in range(len(dataset))]
    return dataclasses.replace(dataset, images=pictures, masks=None)


def _blobs(pictures) -> list | None:
    if isinstance(pictures, image_lists.LazyImages):
        return list(pictures.blobs)
    if isinstance(pictures, image_lists.Subset):
        inner = _blobs(pictures.inner)
        return None if inner is None else [inner[row] for row in pictures.rows]
    return None


# ---------------------------------------------------------------------------------------------
# The caller's side


def train(
    backbone: str | None,
    dataset: Dataset,
    config: training.TrainConfig = training.TrainConfig(),
    *,
    pretrained: bool = True,
    checkpoint: tuple[bytes, bytes] | None = None,
    features: Embeddings | None = None,
    device: str = "auto",
    on_start: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[fitting.EpochStats], None] | None = None,
    on_progress: fitting.Progress | None = None,
    on_features: Callable[[Embeddings], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = None,
    nice: int = 10,
    stop_grace: float = 10.0,
) -> training.RunResult:
    """`core.training.train` in a child process; blocks until the run ends, calling back from this thread.

    `backbone` names the registered pretrained backbone to start from (the child loads its own copy on
    `device`, with `pretrained` weights), or None for the baselines; `checkpoint`, an export's (JSON,
    safetensors) bytes, starts from a trained model instead. Feature extraction reuses `features` when
    given; otherwise the child computes them (batch 32, fp32 on a CPU, "auto" on a GPU, at the config's image
    size) and hands them to `on_features` before training. `on_start(pid, threads)` names the child and its
    torch threads. `should_stop`
    is polled here about ten times a second; once it returns True the child ends the run after its current
    batch, keeping the best epoch, or is terminated if it has not taken the stop within `stop_grace`
    seconds. `threads`: the child's torch threads (default `default_threads()`); `nice`: how much lower its
    priority is.

    Returns the same RunResult as `core.training.train`, whose model is rebuilt here (on `device`) from the
    weights the child kept.

    Raises:
        CoreError: what core raised in the child (same class and message), e.g. InvalidInputError.
        TrainingProcessError: the child died, did not stop in time, or raised an unexpected error.
    """
    config.check()
    if backbone is not None and checkpoint is not None:
        raise InvalidInputError("Start from a backbone or from a checkpoint, not both.")
    spec = None
    if backbone is not None and checkpoint is None:
        spec = registry.get(backbone)  # an unknown name fails here, with the list of names
        try:
            pickle.dumps(spec)
        except Exception:  # a spec built around a closure: the child must know the name itself
            spec = None
    request = _Request(
        config=config, dataset=portable(dataset), backbone=backbone, pretrained=pretrained, spec=spec,
        checkpoint=checkpoint, device=device, features=features, threads=threads or default_threads(), nice=nice,
        parent=os.getpid(),
    )
    _keep_main_out_of_children()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(target=_child, args=(request, theirs), name=f"{NAME}-{next(_numbers)}", daemon=True)
    try:
        try:
            process.start()
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise TrainingProcessError(f"The training could not be handed to its process: {error}") from None
        finally:
            theirs.close()  # the child holds the only other end: when it dies, reading here ends instead of waiting
        return _pump(process, ours, device, on_start, on_epoch, on_progress, on_features, should_stop, stop_grace)
    finally:
        _end(process)
        ours.close()


def _pump(process, conn, device, on_start, on_epoch, on_progress, on_features, should_stop, stop_grace):
    """Pass the child's reports on until its result, its error, or its end."""
    stop = should_stop or (lambda: False)
    stop_asked: float | None = None
    taken = False  # the child said it is stopping
    epochs = 0
    pid = None
    while True:
        if stop_asked is None and stop():
            stop_asked = time.monotonic()
            try:
                conn.send(("stop",))
            except OSError:
                pass  # it has ended already: what it left is read below
        if not conn.poll(0.1):
            if not process.is_alive() and not conn.poll(1.0):  # ended without a last word, and nothing buffered
                raise _died(process, pid)
            if stop_asked is not None and not taken and time.monotonic() - stop_asked > stop_grace:
                _end(process)
                if epochs == 0:
                    raise TrainingProcessError(STOPPED_EARLY)
                raise TrainingProcessError(f"The training process did not stop within {stop_grace:g} s of the Stop "
                                           "request and was ended; its weights are lost.")
            continue
        try:
            kind, *body = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # the child died, maybe in the middle of a message
            process.join(5)
            raise _died(process, pid) from None
        if kind == "started":
            pid = body[0]
            if on_start is not None:
                on_start(*body)
        elif kind == "progress":
            if on_progress is not None:
                on_progress(*body)
        elif kind == "epoch":
            epochs += 1
            if on_epoch is not None:
                on_epoch(body[0])
        elif kind == "features":
            if on_features is not None:
                on_features(body[0])
        elif kind == "stopping":
            taken = True
        elif kind == "error":
            raise _rebuilt_error(*body)
        elif kind == "done":
            result, document, weights = body
            return _rebuilt_result(result, document, weights, device)


def _rebuilt_result(result: training.RunResult, document: bytes, weights: bytes, device: str) -> training.RunResult:
    """The child's RunResult with a model of its own, rebuilt from the kept weights (validated like any import)."""
    loaded = checkpoints.load((document, weights), device=device)
    model = models.LoadedModel(spec=dataclasses.replace(loaded.spec, source="trained here"), module=loaded.module,
                               device=loaded.device, pretrained=True, params=loaded.params)
    return dataclasses.replace(result, model=model)


def _rebuilt_error(module: str, name: str, message: str, details: str) -> BaseException:
    try:
        kind = getattr(importlib.import_module(module), name)
        if isinstance(kind, type) and issubclass(kind, CoreError) and kind is not TrainingProcessError:
            error = kind(message)
            error.details = details
            return error
    except Exception:  # not importable here, or a constructor that wants more: say it in words
        pass
    log.warning("The training process failed:\n%s", details)
    return TrainingProcessError(f"Training failed in its process: {name}: {message}", details)


def _died(process, pid) -> TrainingProcessError:
    process.join(5)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    elif code is None:
        how = "it stopped answering"
    else:
        how = f"exit code {code}"
    return TrainingProcessError(
        f"The training process{f' (pid {pid})' if pid else ''} ended unexpectedly ({how}) before it returned a "
        "result. It may have run out of memory: try a smaller batch size, image size or dataset."
    )


def _end(process) -> None:
    """Terminate the child if it still runs, then reap it."""
    if process.pid is None:
        return  # never started
    if process.is_alive():
        process.terminate()
        process.join(3)
        if process.is_alive():
            process.kill()
    process.join(5)


_GUARD = threading.Lock()


def _keep_main_out_of_children() -> None:
    """Spawned children re-run the parent's `__main__` unless told not to; ours are told not to.

    Streamlit installs each page script as `__main__` while it runs, so a plain spawn from the dashboard
    would execute the app inside the training process. The child needs nothing from `__main__`: its
    target and inputs live in importable modules.
    """
    with _GUARD:
        if getattr(_spawn.get_preparation_data, "visionlens", False):
            return
        original = _spawn.get_preparation_data

        def get_preparation_data(name):
            data = original(name)
            if str(name).startswith(NAME):
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data.visionlens = True
        _spawn.get_preparation_data = get_preparation_data


# ---------------------------------------------------------------------------------------------
# The child's side


def _child(request: _Request, conn) -> None:
    """The training process: build, train, report, hand back plain data."""
    threading.Thread(target=_watch_parent, args=(request.parent,), name="parent-watch", daemon=True).start()
    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the server's to handle
    try:
        os.nice(request.nice)
    except (AttributeError, OSError):
        pass
    threads = runtime.configure_threads(request.threads)
    # DataLoader workers (the config's, and feature extraction's own on a GPU, found on an H200) are children
    # of this process, which a daemon may not have. The parent still ends this process (and the watch thread
    # above ends it with its parent); the workers watch this process and exit with it.
    multiprocessing.current_process()._config["daemon"] = False
    try:
        conn.send(("started", os.getpid(), threads))
        result = _train_here(request, conn)
        document, weights = checkpoints.serialize(result.model)
        conn.send(("done", dataclasses.replace(result, model=None), document, weights))
    except BaseException as error:  # everything goes back as words: the parent rebuilds core's errors
        try:
            conn.send(("error", type(error).__module__, type(error).__qualname__, str(error), traceback.format_exc()))
        except OSError:
            pass  # the parent is gone
    finally:
        conn.close()


def _warm_imports() -> None:
    """Import what the end of a run needs (scoring, export) while the run goes on: it takes seconds."""
    try:
        importlib.import_module("sklearn.metrics")
        importlib.import_module("safetensors.torch")
    except Exception:  # pragma: no cover - the run imports them again and reports a failure itself
        pass


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)  # the server is gone: nobody waits for this run


def _train_here(request: _Request, conn) -> training.RunResult:
    stop_seen = False

    def should_stop() -> bool:
        nonlocal stop_seen
        if not stop_seen and conn.poll():  # a stop message, or the parent's end closed: either way, stop
            stop_seen = True
            conn.send(("stopping",))
        return stop_seen

    last = 0.0

    def progress(fraction: float, message: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 0.1 or fraction >= 1.0:
            last = now
            conn.send(("progress", fraction, message))

    spec = request.spec
    if spec is not None and spec.name not in registry.names():
        registry.register(spec)
    config, dataset = request.config, request.dataset
    model = None
    if request.checkpoint is not None:
        model = checkpoints.load(request.checkpoint, device=request.device)
    elif request.backbone is not None:
        model = models.load(request.backbone, device=request.device, pretrained=request.pretrained)
    features = request.features
    computed = None
    if config.strategy == "feature-extraction" and features is None and model is not None:
        batch_size, precision, size = training.feature_settings(config, model.spec)
        try:
            computed = features = embeddings.extract(
                model, dataset, batch_size=batch_size, precision=precision, size=size, should_stop=should_stop,
                on_progress=lambda fraction, message: progress(fraction, f"Frozen features: {message}"),
                # The config's workers (0 by default), not extract's own GPU default of up to 8: in this child
                # on an H200, extraction through 8 forked workers stalled for over 80 s on 60 images.
                workers=config.workers,
            )
        except Cancelled:
            raise InvalidInputError(STOPPED_EARLY) from None
        conn.send(("features", computed))
    result = training.train(
        model, dataset, config, features=features, device=request.device,
        on_epoch=lambda stats: conn.send(("epoch", stats)), on_progress=progress, should_stop=should_stop,
    )
    if computed is not None:
        result = dataclasses.replace(result, feature_seconds=computed.seconds)
    return result
