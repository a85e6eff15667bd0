"""Dataset jobs past one machine: the audit and feature extraction as Ray Data pipelines, on the same per-batch
functions the in-process engine runs (`audit.explain_batch`, `embeddings.batch_features`), written as Parquet shards.

The pipeline: the rows (a table of file, label and where the bytes are) in blocks -> CPU tasks that read and decode
each image and resize it to the model's square (`image_lists.picture`, `preprocessing.square`, the masks by
`image_lists.mask` at the map's size) -> a pool of model actors (one GPU each where the node has GPUs, else CPU
actors), each holding a copy of the driver's network (sent once through the object store, so no node needs the
weights on disk) -> the driver, which writes what comes back as `part-NNNNN.parquet` shards into the results folder,
each image once, with the export's columns (`audit.columns`) plus `index`, `map` and the node that did the work,
then `summary.json`. core.results reads the folder back (the dashboard opens it).

With no address a local instance starts on this machine (bound to 127.0.0.1, no dashboard, an object store sized for
the machine) and stops at the end; `address="auto"` (or RAY_ADDRESS) joins a running cluster (`ray start --head`).
Ray is imported only here and only when a job runs: the default engine needs nothing of it.
"""

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core import audit, embeddings, image_lists, preprocessing, runtime
from core.job_sources import Source, read_bytes
from core.errors import CoreError, InvalidInputError
from core.models import LoadedModel

Progress = Callable[[float, str], None]
ENGINES = ("in-process", "ray")
KINDS = ("audit", "features")
SHARD_ROWS = 50_000  # rows per Parquet shard
SUMMARY = "summary.json"
DECODER_BASE = 640 * 2**20  # a decoding worker's own memory (Python, torch, Pillow): 680 MB measured with its block


class EngineError(CoreError):
    """The distributed engine cannot start, or a job ended without every image."""


# ---------------------------------------------------------------------------------------------
# the job


@dataclass(frozen=True)
class Job:
    """What each model actor runs: `kind` "audit" (`plan` set) or "features"; `precision` for features."""

    kind: str
    classes: tuple[str, ...]
    size: int
    batch_size: int = 32
    plan: audit.Plan | None = None
    precision: str = "fp32"
    with_features: bool = False  # audit: keep the features in the shards too


@dataclass(frozen=True)
class Report:
    """How a job went: rows written, seconds (start-up apart), the shards, and blocks per node."""

    rows: int
    seconds: float
    startup_seconds: float
    shards: tuple[str, ...]
    nodes: dict[str, int]  # node id -> batches its model actors ran
    decoded_on: dict[str, int]  # node id -> images its CPU tasks decoded
    duplicates: int  # rows that came back twice (retried work) and were not written again

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def audit_job(model: LoadedModel, source: Source, *, method: str = "gradcam", target: str = "predicted",
              layer: str | None = None, precision: str = "fp32", size: int | None = None, batch_size: int = 32,
              with_features: bool = False) -> Job:
    """An audit job, its settings checked here as `audit.explain_dataset` checks them."""
    if not 1 <= batch_size <= 1024:
        raise InvalidInputError(f"The batch size must be between 1 and 1024, got {batch_size}.")
    plan = audit.plan(model, source.classes, method=method, target=target, layer=layer, precision=precision, size=size)
    return Job("audit", source.classes, plan.size, batch_size, plan=plan, with_features=with_features)


def features_job(model: LoadedModel, source: Source, *, precision: str = "auto", size: int | None = None,
                 batch_size: int = 32) -> Job:
    """A feature-extraction job (features and logits of every image), checked as `embeddings.extract` checks."""
    if not 1 <= batch_size <= 1024:
        raise InvalidInputError(f"The batch size must be between 1 and 1024, got {batch_size}.")
    import torch

    dtype = embeddings.resolve_precision(precision, model.device, kind="features")
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return Job("features", source.classes, preprocessing.side(model.spec, size), batch_size, precision=names[dtype])


def decode_block(batch, *, spec, size: int, masked: bool) -> dict:
    """A CPU task: a block of rows (pyarrow) -> index, file, label, (B, 3, S, S) uint8 squares, and with masks the
    (B, side, side) bool masks at the map's size and whether each could be read."""
    node = _node()
    rows = batch.to_pydict()
    pixels, masks, readable = [], [], []
    for i in range(len(rows["index"])):
        data = rows["data"][i] if rows["data"][i] is not None else read_bytes(rows["path"][i])
        try:
            picture = image_lists.picture(data)
        except InvalidInputError as error:
            raise InvalidInputError(f"{rows['file'][i]}: {error}") from None
        pixels.append(preprocessing.square(picture, spec, size).numpy())
        if masked:
            blob = rows["mask_data"][i]
            try:
                blob = blob if blob is not None else read_bytes(rows["mask_path"][i]) if rows["mask_path"][i] else None
                mask = None if blob is None else audit.mask_cells(image_lists.mask(blob, picture.size))
            except InvalidInputError:
                mask = None
            masks.append(np.zeros((audit.MAP_SIDE,) * 2, bool) if mask is None else mask)
            readable.append(mask is not None)
    out = {"index": np.asarray(rows["index"], np.int64), "file": np.asarray(rows["file"], dtype=object),
           "label": np.asarray(rows["label"], np.int64), "pixels": np.stack(pixels),
           "path": np.asarray([p or "" for p in rows["path"]], dtype=object),
           "decoded_on": np.asarray([node] * len(pixels), dtype=object)}
    if masked:
        out["mask"], out["mask_ok"] = np.stack(masks), np.asarray(readable, bool)
    return out


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class ModelWorker:
    """A model actor: the driver's network (from the object store) on this actor's GPU, or on its CPU threads."""

    def __init__(self, payload, job: Job, threads: int, gpu: bool) -> None:
        import ray
        import torch

        runtime.configure_threads(max(1, threads))
        spec, module, pretrained = ray.get(payload[0])  # a list, so Ray Data hands the reference over unresolved
        device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")  # Ray gave it one GPU
        module = module.to(device).eval()
        self.model = LoadedModel(spec, module, device, pretrained, sum(p.numel() for p in module.parameters()))
        self.job = job
        self.halving = runtime.HalvingBatches(job.batch_size)
        self.node = _node()

    def __call__(self, batch: dict) -> dict:
        import torch

        job, n = self.job, len(batch["index"])
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"]))
        out = {"index": batch["index"], "file": batch["file"], "label": batch["label"], "path": batch["path"],
               "decoded_on": batch["decoded_on"], "node": np.asarray([self.node] * n, dtype=object),
               "worker": np.full(n, os.getpid(), np.int64)}
        if job.kind == "features":
            dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[job.precision]
            parts = self.halving.run(pixels, lambda chunk: embeddings.batch_features(self.model, chunk, dtype))
            out["features"] = np.concatenate([p[0] for p in parts])
            out["logits"] = np.concatenate([p[1] for p in parts])
            return out
        masks = None
        if "mask" in batch:
            masks = [m if ok else None for m, ok in zip(batch["mask"], batch["mask_ok"], strict=True)]
        result = audit.explain_batch(self.model, job.plan, pixels, batch["label"], masks, halving=self.halving)
        for key in ("predictions", "top_classes", "top_probabilities", "explained", "maps", "logits", "maps_true"):
            if key in result:  # maps_true: target "both"
                out[key] = result[key]
        if job.with_features:
            out["features"] = result["features"]
        for name, values in result["stats"].items():
            out[f"stat_{name}"] = values
        return out


# ---------------------------------------------------------------------------------------------
# the instance


def object_store_bytes() -> int:
    """The local instance's object store: a fifth of this machine's memory, between 256 MB and 16 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 4 * 2**30
    return int(min(max(total // 5, 256 * 2**20), 16 * 2**30))


def start(address: str | None = None, *, cpus: int | None = None) -> bool:
    """Connect to Ray: `address` (or RAY_ADDRESS) joins a running cluster; none starts a local instance on
    127.0.0.1 without a dashboard. Returns whether this call started (so must stop) the connection."""
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    try:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address="local", include_dashboard=False, num_cpus=cpus or runtime.cores(),
                     object_store_memory=object_store_bytes(), _node_ip_address="127.0.0.1", runtime_env=env,
                     log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise EngineError(f"Cannot start or reach {where} ({error}). Start a cluster with `ray start --head`, or "
                          "leave out --address to run on this machine.") from None
    return True


def stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _resources() -> tuple[float, float, int]:
    """(CPUs, GPUs, nodes) of the connected cluster."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return float(total.get("CPU", 1)), float(total.get("GPU", 0)), max(1, nodes)


# ---------------------------------------------------------------------------------------------
# running a job


def run(model: LoadedModel, source: Source, job: Job, out: str | Path, *, address: str | None = None,
        actors: int | None = None, block_rows: int | None = None, cpus: int | None = None,
        actor_cpus: float | None = None, decode_cpus: float = 1.0, shard_rows: int = SHARD_ROWS,
        on_progress: Progress | None = None, on_batch: Callable[[dict], None] | None = None) -> Report:
    """Run `job` over `source` on Ray Data and write its shards and summary into the folder `out`.

    `actors`: model actors (default one per GPU, else one per node); `block_rows`: rows per input block (the unit
    of decoding and of retry); `actor_cpus` / `decode_cpus`: CPUs each actor / decoding task holds (an actor
    holds what is left to it per node by default). A local instance is started and stopped unless Ray is already
    connected or `address` names a cluster (which is only disconnected from). Ctrl-C stops the job and the
    instance. `on_batch` sees each finished batch (tests).

    Raises:
        EngineError: Ray cannot start, or the job ended without every image.
        InvalidInputError: an empty source or an unwritable `out`.
    """
    if len(source) == 0:
        raise InvalidInputError("The dataset is empty: nothing to run.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out is a folder to write into; '{out}' is a file.")
    report = on_progress or (lambda fraction, message: None)
    started = time.perf_counter()
    owned = start(address, cpus=cpus)
    try:
        import ray
        import ray.data

        startup = time.perf_counter() - started
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = False
        context.print_on_execution_start = False
        total_cpus, gpus, nodes = _resources()
        gpu_actors = gpus >= 1 and model.device.type == "cuda"
        count = actors or (int(gpus) if gpu_actors else nodes)
        per_actor = actor_cpus if actor_cpus is not None else (
            1.0 if gpu_actors else max(0.5, total_cpus / max(count, 1) - decode_cpus))
        # torch threads: a CPU actor takes its node's cores (decoding is the lighter part there); a GPU actor few
        threads = 2 if gpu_actors else max(1, int(total_cpus / nodes // max(1, -(-count // nodes))))
        rows = block_rows or max(job.batch_size, min(1024, -(-len(source) // max(4 * count, 1))))
        blocks = [source.table.slice(i, rows) for i in range(0, len(source), rows)]
        module = model.module if model.device.type == "cpu" else _cpu_copy(model.module)
        payload = ray.put((replace(model.spec, build=None), module, model.pretrained))
        decoded = ray.data.from_arrow(blocks).map_batches(
            # memory: what a task holds (the block's squares, twice); it also keeps decoding out of the actors (a
            # resource request unlike theirs: Ray Data fuses a task into the next actor stage otherwise)
            decode_block, batch_size=None, batch_format="pyarrow", num_cpus=decode_cpus,
            memory=2 * rows * 3 * job.size * job.size + DECODER_BASE,
            fn_kwargs={"spec": replace(model.spec, build=None), "size": job.size, "masked": source.masked})
        results = decoded.map_batches(
            ModelWorker, batch_size=job.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"payload": [payload], "job": job, "threads": threads, "gpu": gpu_actors},
            compute=ray.data.ActorPoolStrategy(size=count), num_cpus=per_actor, num_gpus=1 if gpu_actors else 0)
        # Ray Data restarts a dead actor and retries its batches (max_restarts=-1, max_task_retries=-1 by default)
        writer = _ShardWriter(out, job, model, source, shard_rows)
        report(0.0, f"Ray: {count} model actor(s) on {nodes} node(s), {len(blocks)} blocks of {rows} images")
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            writer.add(batch)
            if on_batch is not None:
                on_batch(batch)
            rate = writer.rows / max(time.perf_counter() - started - startup, 1e-9)
            report(writer.rows / len(source), f"{writer.rows} of {len(source)} images ({rate:.0f} images/s)")
        seconds = time.perf_counter() - started - startup
        return writer.close(seconds, startup)
    finally:
        if owned:
            stop()


def _cpu_copy(module):
    import copy

    return copy.deepcopy(module).cpu()


class _ShardWriter:
    """The driver's side: every row once (by index), in shards of `shard_rows`, then the summary; refuses to end
    incomplete."""

    def __init__(self, out: Path, job: Job, model: LoadedModel, source: Source, shard_rows: int) -> None:
        self.out, self.job, self.model, self.source, self.shard_rows = out, job, model, source, shard_rows
        try:
            out.mkdir(parents=True, exist_ok=True)
            for old in [*out.glob("part-*.parquet"), out / SUMMARY, out / "audit.parquet", out / "maps.npy",
                        out / "maps_true.npy"]:
                old.unlink(missing_ok=True)  # an earlier job's results in the same folder
        except OSError as error:
            raise InvalidInputError(f"Cannot write into {out}: {error.strerror or error}") from None
        self.seen = np.zeros(len(source), dtype=bool)
        self.pending: list = []
        self.pending_rows = 0
        self.shards: list[str] = []
        self.rows = self.duplicates = 0
        self.nodes: Counter = Counter()
        self.decoded_on: Counter = Counter()

    def add(self, batch: dict) -> None:
        index = np.asarray(batch["index"], np.int64)
        fresh = ~self.seen[index] & _first(index)
        self.duplicates += int((~fresh).sum())
        if not fresh.any():
            return
        self.seen[index[fresh]] = True
        self.nodes[str(batch["node"][0])] += 1
        self.decoded_on.update(str(n) for n in batch["decoded_on"][fresh])
        self.pending.append(self._table({k: v[fresh] for k, v in batch.items()}))
        self.pending_rows += int(fresh.sum())
        self.rows += int(fresh.sum())
        if self.pending_rows >= self.shard_rows:
            self._flush()

    def _table(self, batch: dict):
        import pyarrow as pa

        job, source = self.job, self.source
        columns: dict = {"index": batch["index"]}
        if job.kind == "audit":
            stats = {k[5:]: v for k, v in batch.items() if k.startswith("stat_")}
            columns.update(audit.columns(source.classes, self.model.categories, batch["file"].tolist(), batch["label"],
                                         batch["predictions"], batch["top_classes"], batch["top_probabilities"],
                                         batch["explained"], stats))
            for key, column in (("maps", "map"), ("maps_true", "map_true")):  # maps_true: target "both"
                if key in batch:
                    maps = np.ascontiguousarray(batch[key], dtype=np.float16)
                    columns[column] = pa.array([m.tobytes() for m in maps], pa.binary(maps[0].nbytes))
        else:
            columns["file"] = batch["file"].tolist()
            columns["label"] = [source.classes[i] for i in batch["label"]]
            columns["logits"] = _fixed_list(batch["logits"])
        if "features" in batch:
            columns["features"] = _fixed_list(batch["features"])
        columns["path"] = [p or None for p in batch["path"].tolist()]  # where it was read: the dashboard shows it
        columns["node"] = batch["node"].astype(str).tolist()
        columns["decoded_on"] = batch["decoded_on"].astype(str).tolist()
        return pa.table(columns)

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        path = self.out / f"part-{len(self.shards):05d}.parquet"
        try:
            pq.write_table(pa.concat_tables(self.pending), path)
        except OSError as error:
            raise InvalidInputError(f"Cannot write {path}: {error.strerror or error}") from None
        self.shards.append(path.name)
        self.pending, self.pending_rows = [], 0

    def close(self, seconds: float, startup: float) -> Report:
        self._flush()
        missing = int((~self.seen).sum())
        if missing:
            raise EngineError(f"The job ended with {missing} of {len(self.seen)} images missing; run it again.")
        settings = {"engine": "ray", "kind": self.job.kind, "model": self.model.name, "dataset": self.source.name,
                    "class_names": list(self.source.classes), "categories": list(self.model.categories),
                    "images": self.rows, "image_size": self.job.size, "seconds": round(seconds, 3),
                    "startup_seconds": round(startup, 3), "shards": self.shards,
                    "nodes": dict(self.nodes), "decoded_on": dict(self.decoded_on)}
        if self.job.kind == "audit":
            plan = self.job.plan
            settings.update(method=plan.method, layer=plan.layer, target=plan.target, precision=plan.precision,
                            map_side=audit.MAP_SIDE)
        else:
            settings.update(precision=self.job.precision)
        (self.out / SUMMARY).write_text(json.dumps(settings, indent=2))
        return Report(self.rows, seconds, startup, tuple(self.shards), dict(self.nodes), dict(self.decoded_on),
                      self.duplicates)


def _first(index: np.ndarray) -> np.ndarray:
    """(B,) bool: the first occurrence of each index in a batch."""
    keep = np.zeros(len(index), dtype=bool)
    keep[np.unique(index, return_index=True)[1]] = True
    return keep


def _fixed_list(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])


def terminal_progress(fraction: float, message: str) -> None:
    """The CLI's progress line."""
    sys.stderr.write(f"\r{message}   " + ("\n" if fraction >= 1 else ""))


def remove(out: str | Path) -> None:
    """Delete a results folder (tests, benches)."""
    shutil.rmtree(out, ignore_errors=True)
