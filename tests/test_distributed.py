"""The Ray engine (core.distributed) gives what the in-process engine gives, whatever the actors and blocks, on one
node or two; a worker killed mid-job costs nothing; results read back (core.results) from either engine.

Each test runs Ray instances of its own on 127.0.0.1 without a dashboard; the module leaves no Ray process behind.
Deselect with `-m "not ray"`.
"""

import os
import signal
import time

import numpy as np
from pathlib import Path
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from core import audit, datasets, distributed, embeddings, job_sources, models, results  # noqa: E402
from core.errors import InvalidInputError  # noqa: E402
from tests.conftest import TINY  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RAY_PROCESSES = ("raylet", "gcs_server", "plasma_store")


def _ray_children() -> list[str]:
    """'pid name' of every raylet / gcs_server descended from this process (read from /proc: no psutil here)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(text.split(" ", 1)[0])
        names[pid] = text[text.index("(") + 1:text.rindex(")")]
        parents[pid] = int(text[text.rindex(")") + 2:].split()[1])
    me, found = os.getpid(), []
    for pid, name in names.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != me:
            ancestor = parents.get(ancestor)
        if ancestor == me and any(r in name for r in RAY_PROCESSES):
            found.append(f"{pid} {name}")
    return found


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind():
    """After the module: no raylet / gcs_server of ours is running (every instance was stopped)."""
    yield
    distributed.stop()
    deadline = time.monotonic() + 30
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_children() == []


@pytest.fixture(scope="module")
def local_ray(no_ray_left_behind):
    """One local instance for the module's single-node tests (two CPUs, as this machine has)."""
    assert distributed.start(cpus=2)
    yield
    distributed.stop()


@pytest.fixture(scope="module")
def shapes_cnn():
    return models.load("shapes_cnn", device="cpu")


@pytest.fixture(scope="module")
def tiny_digits():
    return models.load(TINY, device="cpu", pretrained=False)


def _shards(folder: Path):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _assert_audits_equal(got: audit.Audit, want: audit.Audit) -> None:
    assert got.files == want.files
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_array_equal(got.explained, want.explained)
    np.testing.assert_array_equal(got.top_classes, want.top_classes)
    assert _cosines(got.features, want.features).min() >= 0.9999
    np.testing.assert_allclose(got.maps.astype(np.float32), want.maps.astype(np.float32), atol=2e-3)
    assert set(got.stats) == set(want.stats)
    for name, values in want.stats.items():
        np.testing.assert_allclose(got.stats[name].astype(np.float64), values.astype(np.float64), atol=2e-3,
                                   equal_nan=True, err_msg=name)


def _run_audit(model, dataset, out, *, batch_size, **options):
    source = job_sources.source_of(dataset)
    job = distributed.audit_job(model, source, batch_size=batch_size, with_features=True)
    report = distributed.run(model, source, job, out, actor_cpus=0.5, decode_cpus=0.5, **options)
    return report, results.read(out)


@pytest.mark.parametrize(("actors", "block_rows", "batch_size"), [(1, 40, 8), (2, 16, 32)])
def test_audit_on_ray_equals_in_process_on_shapes(local_ray, shapes_cnn, tmp_path, actors, block_rows, batch_size):
    dataset = datasets.shapes(n=120, size=64)
    want = audit.explain_dataset(shapes_cnn, dataset, batch_size=16)
    report, read = _run_audit(shapes_cnn, dataset, tmp_path, batch_size=batch_size, actors=actors,
                              block_rows=block_rows)
    assert report.rows == len(dataset) and report.duplicates == 0
    assert read.engine == "ray" and read.kind == "audit"
    assert "heat_in_mask" in read.audit.stats  # the masks travelled with the rows
    _assert_audits_equal(read.audit, want)
    shards = _shards(tmp_path)
    assert sorted(shards.column("index").to_pylist()) == list(range(len(dataset)))  # each image once
    for column in want.rows():  # the in-process export's columns, every one
        assert column in shards.column_names


def test_audit_of_both_targets_on_ray_equals_in_process(local_ray, shapes_cnn, tmp_path):
    """Target "both": the true class's maps travel as a map_true column and read back as maps_true."""
    dataset = datasets.shapes(n=40, size=64)
    want = audit.explain_dataset(shapes_cnn, dataset, target="both", batch_size=8)
    source = job_sources.source_of(dataset)
    job = distributed.audit_job(shapes_cnn, source, target="both", batch_size=8, with_features=True)
    distributed.run(shapes_cnn, source, job, tmp_path, actors=1, actor_cpus=0.5, decode_cpus=0.5)
    read = results.read(tmp_path).audit
    assert read.target == "both" and "map_true" in _shards(tmp_path).column_names
    assert (want.predictions != want.labels).any()
    _assert_audits_equal(read, want)  # the _true statistics too
    np.testing.assert_allclose(read.maps_true.astype(np.float32), want.maps_true.astype(np.float32), atol=2e-3)


def test_features_on_ray_equal_in_process_on_digits(local_ray, tiny_digits, tmp_path):
    dataset = datasets.digits(n=150)
    want = embeddings.extract(tiny_digits, dataset, batch_size=16, precision="fp32", size=32)
    source = job_sources.source_of(dataset)
    job = distributed.features_job(tiny_digits, source, precision="fp32", size=32, batch_size=12)
    report = distributed.run(tiny_digits, source, job, tmp_path, actors=2, block_rows=25, actor_cpus=0.5,
                             decode_cpus=0.5)
    read = results.read(tmp_path)
    assert report.rows == 150 and read.kind == "features"
    assert read.files == dataset.files
    np.testing.assert_array_equal(read.labels, dataset.labels)
    assert _cosines(read.embeddings.features, want.features).min() >= 0.9999
    np.testing.assert_array_equal(read.embeddings.logits.argmax(1), want.logits.argmax(1))


def test_a_worker_killed_mid_job_still_ends_complete(local_ray, shapes_cnn, tmp_path):
    dataset = datasets.shapes(n=160, size=64)
    want = audit.explain_dataset(shapes_cnn, dataset, batch_size=16)
    killed: list[int] = []
    after_kill = []

    def kill_once(batch) -> None:
        if killed:
            after_kill.append(len(batch["index"]))
            return
        pid = int(batch["worker"][0])
        os.kill(pid, signal.SIGKILL)  # the actor process that made this batch, with work still queued
        killed.append(pid)

    source = job_sources.source_of(dataset)
    job = distributed.audit_job(shapes_cnn, source, batch_size=8, with_features=True)
    report = distributed.run(shapes_cnn, source, job, tmp_path, actors=2, block_rows=8, actor_cpus=0.5,
                             decode_cpus=0.5, on_batch=kill_once)
    assert killed and sum(after_kill) > 0  # the kill came before the end
    assert report.rows == len(dataset)
    index = _shards(tmp_path).column("index").to_pylist()
    assert sorted(index) == list(range(len(dataset)))  # nothing lost, nothing written twice
    _assert_audits_equal(results.read(tmp_path).audit, want)


def test_results_of_the_in_process_engine_read_back(shapes_cnn, tmp_path):
    dataset = datasets.shapes(n=24, size=64)
    want = audit.explain_dataset(shapes_cnn, dataset, batch_size=8)
    audit.write(want, tmp_path, with_features=True)
    read = results.read(tmp_path)
    assert read.engine == "in-process"
    _assert_audits_equal(read.audit, want)
    np.testing.assert_array_equal(read.audit.maps, want.maps)


def test_a_list_of_paths_reads_like_the_folder(local_ray, shapes_cnn, tmp_path):
    folder = tmp_path / "set"
    dataset = datasets.shapes(n=24, size=64)
    lines = ["path,label"]
    for picture, file in zip(dataset.images, dataset.files, strict=True):
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        picture.save(folder / file)
        lines.append(f"set/{file},{file.split('/')[0]}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    listed = job_sources.open_source(str(tmp_path / "list.csv"))
    opened = datasets.from_folder(folder)
    assert listed.classes == opened.classes and len(listed) == len(opened)
    by_uri = job_sources.open_source(folder.as_uri())  # the same folder through pyarrow's filesystem listing
    assert by_uri.classes == opened.classes and sorted(by_uri.files) == sorted(opened.files)
    job = distributed.audit_job(shapes_cnn, listed, batch_size=8)
    distributed.run(shapes_cnn, listed, job, tmp_path / "out", actors=1, actor_cpus=0.5, decode_cpus=0.5)
    got = results.read(tmp_path / "out").audit
    want = audit.explain_dataset(shapes_cnn, opened, batch_size=8)
    order = np.argsort([f"{c}/{f.split('/')[-1]}" for c, f in zip(np.array(listed.classes)[listed.labels],
                                                                  listed.files, strict=True)])
    by_name = {f: i for i, f in enumerate(opened.files)}
    rows = [by_name[f.split("/", 1)[1]] for f in np.array(got.files)[order]]
    np.testing.assert_array_equal(got.predictions[order], want.predictions[rows])


def test_hostile_lists_are_refused(tmp_path):
    (tmp_path / "one.csv").write_text("path,label\na.png,cat\nb.png,cat\n")
    with pytest.raises(InvalidInputError, match="at least two"):
        job_sources.open_source(str(tmp_path / "one.csv"))
    (tmp_path / "empty.csv").write_text("path,label\n,cat\nb.png,dog\n")
    with pytest.raises(InvalidInputError, match="path and a label"):
        job_sources.open_source(str(tmp_path / "empty.csv"))
    with pytest.raises(InvalidInputError, match="summary"):
        results.read(tmp_path)


def test_two_nodes_both_do_work_and_the_result_is_complete(no_ray_left_behind, shapes_cnn, tmp_path, monkeypatch):
    import ray._private.ray_constants
    from ray.cluster_utils import Cluster

    distributed.stop()  # the module's local instance, if a test before started it
    # ray.init turns 127.0.0.1 into this machine's outward address, where nodes bound to 127.0.0.1 do not listen;
    # the switch Ray reads for single-machine platforms keeps the loopback address
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                             "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False)
        dataset = datasets.shapes(n=64, size=64)
        want = audit.explain_dataset(shapes_cnn, dataset, batch_size=16)
        report, read = _run_audit(shapes_cnn, dataset, tmp_path, batch_size=8, actors=2, block_rows=8)
        assert report.rows == len(dataset)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        # both nodes did work: model batches or decoded blocks on each (Ray places the actors and tasks)
        assert set(report.nodes) | set(report.decoded_on) == nodes, (report.nodes, report.decoded_on)
        _assert_audits_equal(read.audit, want)
    finally:
        distributed.stop()
        cluster.shutdown()


def test_the_cli_audits_and_evaluates_on_ray_as_in_process(local_ray, tmp_path, capsys):
    import json

    from core.cli import main

    common = ["--limit", "40", "--model", "shapes_cnn", "--batch-size", "16", "--json"]
    assert main(["audit", "shapes", *common, "--engine", "ray", "--out", str(tmp_path / "ray")]) == 0
    on_ray = json.loads(capsys.readouterr().out)
    assert main(["audit", "shapes", *common, "--out", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert on_ray["images"] == local["images"] == 40 and on_ray["accuracy"] == local["accuracy"]
    for a, b in zip(on_ray["classes"], local["classes"], strict=True):
        assert a["class"] == b["class"] and a["images"] == b["images"]
        assert a["heat_border"] == pytest.approx(b["heat_border"], abs=1e-3)
    evaluate = ["evaluate", "digits", "--limit", "60", "--model", TINY, "--random-weights", "--precision", "fp32",
                "--image-size", "32", "--json"]
    assert main([*evaluate, "--engine", "ray", "--results", str(tmp_path / "features")]) == 0
    on_ray = json.loads(capsys.readouterr().out)
    assert main(evaluate) == 0
    local = json.loads(capsys.readouterr().out)
    assert on_ray["method"] == local["method"] == "linear probe"
    assert on_ray["confusion"] == local["confusion"] and on_ray["accuracy"] == local["accuracy"]
    assert results.read(tmp_path / "features").kind == "features"
