"""Speed and size of backbones, measured with a stated method: latency, throughput, memory, size, compute.

Method (also returned in words by `method()`): the network in eval mode under `torch.inference_mode`,
holding its lock; the same seeded random input for every model; untimed warm-up passes; then timed
passes one at a time (CUDA events, synchronised after each pass, on GPU; `time.perf_counter_ns` on CPU)
with Python's garbage collector paused, as `timeit` and `torch.utils.benchmark.Timer` do. Compute and weights
size come from core.model_costs, peak memory from core.memory_probes; core.benchmark_tables writes the rows out.
"""

import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from core import memory_probes, model_costs, models, registry, runtime
from core.errors import DeviceError, InvalidInputError
from core.models import LoadedModel
from core.runtime import resolve_device

PRECISIONS = ("fp32", "bf16", "fp16")
MAX_BATCH = 1024
SEED = 0
# repeats=None ("auto"): time until the median is stable, within these bounds
MIN_REPEATS, MIN_SECONDS, STABLE_WITHIN = 10, 1.0, 0.02
FLOOR_REPEATS, MAX_REPEATS, MAX_SECONDS = 5, 300, 30.0
CUDA_MEMORY = "CUDA peak allocated above the weights and input"
CPU_MEMORY = "process RSS growth (peak RSS minus RSS before the first pass)"

_ONE_AT_A_TIME = threading.Lock()  # two benchmarks in one process would time each other


@dataclass(frozen=True)
class BenchmarkRow:
    """One backbone at one batch size, input size, precision and device.

    Times are in milliseconds; `median_ms` and `p95_ms` are per batch. Memory and sizes are in MiB
    (2**20 bytes). `gmacs` is multiply-adds per image in billions (FLOPs would be twice as many).
    """

    name: str
    title: str
    pretrained: bool  # speed and size do not depend on the weights' values
    device: str
    precision: str  # "fp32", or the autocast dtype on GPU: "bf16", "fp16"
    batch: int
    input_size: tuple[int, int]  # (height, width)
    threads: int  # torch's intra-op threads while timing
    warmup: int
    repeats: int  # timed passes actually run
    median_ms: float  # p50 per batch
    p95_ms: float
    per_image_ms: float  # median_ms / batch
    images_per_second: float  # batch / median
    params: int  # parameters of the network that ran
    gmacs: float  # multiply-adds per image at input_size, counted, billions
    peak_memory_mib: float
    memory_kind: str  # what peak_memory_mib measures (CUDA_MEMORY or CPU_MEMORY)
    weights_mib: float
    weights_kind: str  # model_costs.WEIGHTS_FILE or STATE_DICT
    top1: float | None  # ImageNet-1K acc@1 of the published pretrained weights, percent
    times_ms: tuple[float, ...]  # every timed pass, in order


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything a benchmark result depends on, as plain values (what a cache keys it by)."""

    names: tuple[str, ...]
    batches: tuple[int, ...]
    input_size: int | None  # None: each model's own
    precision: str
    device: str
    repeats: int | None  # None: until the median is stable
    warmup: int

    @property
    def total(self) -> int:
        """How many rows a complete run gives: every backbone at every distinct batch size."""
        return len(self.plan())

    def plan(self) -> list[tuple[str, int]]:
        """(backbone, batch) in the order `run` measures them."""
        return [(n, b) for n in dict.fromkeys(self.names) for b in sorted(set(self.batches))]


@dataclass(frozen=True)
class BenchmarkResult:
    """A run of `settings`: its rows and the words that say where and how they were measured."""

    settings: BenchmarkSettings
    rows: tuple[BenchmarkRow, ...]
    machine: str
    method: str
    finished: float  # time.time()
    complete: bool  # False when stopped
    busy: str | None = None  # a warning when other work loaded the machine at the start


def run_settings(
    settings: BenchmarkSettings,
    *,
    on_row: Callable[[BenchmarkRow, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BenchmarkResult:
    """`run` with these settings, described: the machine and its load before the first pass, the method after."""
    s = settings
    machine_, busy_ = machine(), busy()
    rows = run(s.names, batches=s.batches, input_size=s.input_size, precision=s.precision, device=s.device,
               repeats=s.repeats, warmup=s.warmup, on_row=on_row, should_stop=should_stop)
    words = method(warmup=s.warmup, repeats=s.repeats, device=s.device, precision=s.precision)
    return BenchmarkResult(s, tuple(rows), machine_, words, time.time(), complete=len(rows) == s.total, busy=busy_)


# ---------------------------------------------------------------------------------------------
# Measuring


def measure(
    model: LoadedModel,
    *,
    batch: int = 1,
    input_size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
    repeats: int | None = None,
    warmup: int = 3,
) -> BenchmarkRow:
    """Time one backbone at one setting, and describe its size and compute.

    `input_size` None means the spec's own; `repeats` None means "until the median is stable"
    (at least 10 passes and 1 s, the median of the last half within 2% of the overall one, at most
    300 passes or 30 s). Holds `model.lock` for the whole measurement.

    Raises:
        InvalidInputError: batch, size, precision or repeats that cannot be used here.
        DeviceError: out of GPU memory.
    """
    row = _measure(model, batch=batch, input_size=input_size, precision=precision, repeats=repeats,
                   warmup=warmup, should_stop=_never)
    assert row is not None  # only a should_stop can interrupt
    return row


def run(
    names: Sequence[str],
    *,
    batches: Sequence[int] = (1,),
    input_size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
    device: str = "auto",
    pretrained: bool | None = None,
    repeats: int | None = None,
    warmup: int = 3,
    on_row: Callable[[BenchmarkRow, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[BenchmarkRow]:
    """Benchmark several backbones, each at every batch size (models outer, batches ascending).

    Every setting is checked before any model loads. Models load one at a time and are released
    after their rows. `pretrained` None uses the weights where they are on this machine and random
    ones otherwise (speed and size are the same). `on_row(row, done, total)` is called after each
    row; `should_stop()` is polled between passes, and a setting it interrupts gives no row. Only
    one run per process measures at a time; a second waits (still polling `should_stop`).

    Raises:
        UnknownModelError, InvalidInputError, DeviceError, WeightsUnavailableError.
    """
    stop = should_stop or _never
    names = list(dict.fromkeys(names))
    if not names:
        raise InvalidInputError("Choose at least one backbone to benchmark.")
    sizes = sorted(set(batches))
    if not sizes:
        raise InvalidInputError("Choose at least one batch size.")
    target = resolve_device(device)
    for batch in sizes:
        _check_batch(batch)
    for name in names:
        spec = registry.get(name)
        _check(spec, batch=sizes[-1], size=model_costs.input_size_of(spec, input_size), precision=precision,
               device=target, repeats=repeats, warmup=warmup)
    total, rows = len(names) * len(sizes), []
    while not _ONE_AT_A_TIME.acquire(timeout=0.2):
        if stop():
            return rows
    try:
        for name in names:
            if stop():
                break
            use_weights = models.weights_available(name) if pretrained is None else pretrained
            model = models.load(name, device=str(target), pretrained=use_weights)
            for batch in sizes:
                row = _measure(model, batch=batch, input_size=input_size, precision=precision, repeats=repeats,
                               warmup=warmup, should_stop=stop)
                if row is None:
                    return rows
                rows.append(row)
                if on_row is not None:
                    on_row(row, len(rows), total)
            del model
            gc.collect()
            if target.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        _ONE_AT_A_TIME.release()
    return rows


def fixed_input(batch: int, input_size: tuple[int, int], *, device: torch.device | str = "cpu") -> torch.Tensor:
    """The benchmark input: (batch, 3, H, W) float32 standard normal from seed 0, the same for every model.

    channels_last on CUDA, where the models are channels_last too.
    """
    generator = torch.Generator().manual_seed(SEED)
    tensor = torch.randn(batch, 3, *input_size, generator=generator).to(device)
    if torch.device(device).type == "cuda":
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def precisions(device: str = "auto") -> list[str]:
    """Precisions offered on `device`: fp32 everywhere; bf16 (where supported) and fp16 autocast on GPU."""
    target = resolve_device(device)
    if target.type != "cuda":
        return ["fp32"]
    return ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]


def _measure(
    model: LoadedModel,
    *,
    batch: int,
    input_size: int | tuple[int, int] | None,
    precision: str,
    repeats: int | None,
    warmup: int,
    should_stop: Callable[[], bool],
) -> BenchmarkRow | None:
    size = model_costs.input_size_of(model.spec, input_size)
    _check(model.spec, batch=batch, size=size, precision=precision, device=model.device, repeats=repeats,
           warmup=warmup)
    _check_batch(batch)
    cuda = model.device.type == "cuda"
    try:
        tensor = fixed_input(batch, size, device=model.device)
        with model.lock:
            counted = model_costs.gmacs(model, input_size=size)
            times, peak = _timed_passes(model, tensor, precision=precision, repeats=repeats, warmup=warmup,
                                        should_stop=should_stop)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise DeviceError(
            f"Not enough GPU memory for {model.spec.title} at batch {batch}, {size[0]}x{size[1]}. "
            "Choose a smaller batch or input size."
        ) from None
    if times is None:
        return None
    median = statistics.median(times)
    weights_mib, weights_kind = model_costs.weights_mib(model)
    return BenchmarkRow(
        name=model.name, title=model.spec.title, pretrained=model.pretrained, device=str(model.device),
        precision=precision, batch=batch, input_size=size, threads=torch.get_num_threads(), warmup=warmup,
        repeats=len(times), median_ms=median, p95_ms=_p95(times), per_image_ms=median / batch,
        images_per_second=batch * 1e3 / median, params=model.params, gmacs=counted, peak_memory_mib=peak / 2**20,
        memory_kind=CUDA_MEMORY if cuda else CPU_MEMORY, weights_mib=weights_mib, weights_kind=weights_kind,
        top1=model.spec.top1, times_ms=tuple(times),
    )


def _timed_passes(
    model: LoadedModel,
    tensor: torch.Tensor,
    *,
    precision: str,
    repeats: int | None,
    warmup: int,
    should_stop: Callable[[], bool],
) -> tuple[list[float] | None, int]:
    """Warm-up passes, then timed ones; (times in ms or None if stopped, peak memory growth in bytes)."""
    device, module = model.device, model.module
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=_DTYPES[precision]) if cuda and precision != "fp32" else nullcontext()
    collecting = gc.isenabled()
    passes = 0
    with model.lock, torch.inference_mode(), autocast:
        memory = memory_probes.CudaPeak(device) if cuda else memory_probes.RssPeak()
        try:
            for _ in range(warmup):
                if should_stop():
                    return None, 0
                module(tensor)
                _synchronize(device)
                passes += 1
            gc.disable()
            times: list[float] = []
            started = time.perf_counter()
            while not _enough(times, repeats, time.perf_counter() - started):
                if should_stop():
                    return None, 0
                if cuda:
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                    module(tensor)
                    end.record()
                    end.synchronize()
                    times.append(begin.elapsed_time(end))
                else:
                    begin_ns = time.perf_counter_ns()
                    module(tensor)
                    times.append((time.perf_counter_ns() - begin_ns) / 1e6)
                passes += 1
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as error:
            if passes:
                raise
            raise model_costs.cannot_run(model, tuple(tensor.shape[-2:]), error) from None
        finally:
            if collecting:
                gc.enable()
        return times, memory.growth()



def _enough(times: list[float], repeats: int | None, elapsed: float) -> bool:
    count = len(times)
    if repeats is not None:
        return count >= repeats
    if count >= MAX_REPEATS or (count >= FLOOR_REPEATS and elapsed >= MAX_SECONDS):
        return True
    if count < MIN_REPEATS or elapsed < MIN_SECONDS:
        return False
    overall = statistics.median(times)
    return abs(statistics.median(times[count // 2 :]) - overall) <= STABLE_WITHIN * overall


def latency_ms(model: LoadedModel, tensor: torch.Tensor, *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of one inference forward pass of `tensor`, in milliseconds (CUDA synchronised).

    Holds the model's lock, so a concurrent session's work does not land inside a timed region.
    """
    times, _ = _timed_passes(model, tensor.to(model.device), precision="fp32", repeats=max(1, repeats),
                             warmup=warmup, should_stop=_never)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Words: the machine and the method


def machine() -> str:
    """This machine in one line: CPU model, cores, torch threads, GPU, torch version, load."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"CPU: {_cpu_model()} ({cores} cores available to this process, torch uses {torch.get_num_threads()} "
             f"threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})"]
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        parts.append(f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})")
    else:
        parts.append("GPU: none")
    import torchvision

    parts.append(f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f} when measured")
    return "; ".join(parts)


def busy() -> str | None:
    """A warning when other work loads this machine (1-minute load average >= half its cores, at least 1)."""
    if not hasattr(os, "getloadavg"):
        return None
    cores = runtime.cores()
    load = os.getloadavg()[0]
    if load < max(1.0, cores / 2):
        return None
    return (f"The machine was busy when this started (load average {load:.1f} on {cores} cores): other work "
            "competes for the CPU, so timings are slower and noisier than on a quiet machine. Compare rows measured "
            "together, and measure again when it is quiet.")


def method(*, warmup: int, repeats: int | None, device: str = "cpu", precision: str = "fp32") -> str:
    """The measuring method in words, for the page and the CLI."""
    cuda = resolve_device(device).type == "cuda"
    timed = f"{repeats} timed passes" if repeats else (
        f"timed passes until the median is stable (at least {MIN_REPEATS} and {MIN_SECONDS:g} s; stop when the "
        f"median of the last half is within {STABLE_WITHIN:.0%} of the overall median; at most {MAX_REPEATS} "
        f"passes or {MAX_SECONDS:g} s)"
    )
    clock = ("CUDA events around each pass, synchronised after each one" if cuda
             else "time.perf_counter_ns around each pass")
    autocast = f", autocast {precision}, channels_last" if cuda and precision != "fp32" else (
        ", channels_last" if cuda else "")
    return (
        f"Eval mode, torch.inference_mode, the model's lock held; the same seeded random input (seed {SEED}) for "
        f"every model{autocast}. {warmup} untimed warm-up passes, then {timed}, one pass at a time ({clock}), "
        "with Python's garbage collector paused. Latency: median (p50) and 95th percentile per batch; per image = "
        "p50 / batch; throughput = batch / p50. Compute: multiply-adds per image counted with "
        "torch.utils.flop_counter (1 MAC = 2 FLOPs; torchvision's `_ops` counts MACs). Peak memory: "
        f"{CUDA_MEMORY if cuda else CPU_MEMORY}. Only one benchmark runs at a time in a process."
    )


# ---------------------------------------------------------------------------------------------
# Checks


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}



def _check(
    spec: registry.BackboneSpec,
    *,
    batch: int,
    size: tuple[int, int],
    precision: str,
    device: torch.device,
    repeats: int | None,
    warmup: int,
) -> None:
    _check_batch(batch)
    if not all(32 <= side <= 1024 for side in size):
        raise InvalidInputError(f"Input size must be between 32 and 1024 pixels a side, got {size[0]}x{size[1]}.")
    if spec.fixed_size and size != tuple(spec.input_size):
        reference = f"{spec.input_size[0]}x{spec.input_size[1]}"
        raise InvalidInputError(
            f"{spec.title} only accepts {reference} inputs, got {size[0]}x{size[1]}. "
            f"Choose each model's own size, or {reference}."
        )
    if precision not in PRECISIONS:
        raise InvalidInputError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}.")
    if precision != "fp32" and device.type != "cuda":
        raise InvalidInputError(f"{precision} is measured on GPU only (autocast); on {device.type} choose fp32.")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError("This GPU does not support bf16; choose fp16 or fp32.")
    if repeats is not None and not 1 <= repeats <= 10_000:
        raise InvalidInputError(f"Repeats must be between 1 and 10000 (or auto), got {repeats}.")
    if not 0 <= warmup <= 1000:
        raise InvalidInputError(f"Warm-up passes must be between 0 and 1000, got {warmup}.")


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InvalidInputError(f"Batch size must be a whole number from 1 to {MAX_BATCH}, got {batch!r}.")


def _p95(times: list[float]) -> float:
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=20, method="inclusive")[-1]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _never() -> bool:
    return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
