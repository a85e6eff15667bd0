"""Benchmarks: the measuring method, the records, the checks, and the counts against torchvision's metadata."""

import csv
import dataclasses
import gc
import io
import json
import threading
import time

import pytest
import torch

from core import benchmark_tables, benchmarks, model_costs, models, registry
from core.errors import InvalidInputError, UnknownModelError
from tests.conftest import TINY

TORCHVISION = [n for n in registry.names() if registry.get(n).source == "torchvision"]


def test_measure_gives_a_consistent_row(tiny):
    row = benchmarks.measure(tiny, batch=4, repeats=7, warmup=2)
    assert (row.name, row.batch, row.input_size, row.repeats, row.warmup) == (TINY, 4, (64, 64), 7, 2)
    assert len(row.times_ms) == 7 and row.median_ms == pytest.approx(sorted(row.times_ms)[3])
    assert 0 < row.median_ms <= row.p95_ms <= max(row.times_ms)
    assert row.per_image_ms == pytest.approx(row.median_ms / 4)
    assert row.images_per_second == pytest.approx(4 * 1e3 / row.median_ms)
    assert row.params == sum(p.numel() for p in tiny.module.parameters())
    assert row.device == "cpu" and row.precision == "fp32" and row.threads == torch.get_num_threads()
    assert row.memory_kind == benchmarks.CPU_MEMORY and row.peak_memory_mib >= 0
    state = tiny.module.state_dict()  # no weights file: fp32 parameters and buffers, int64 counters as they are
    expected = sum(t.numel() * (4 if t.is_floating_point() else 8) for t in state.values())
    assert row.weights_kind == model_costs.STATE_DICT and row.weights_mib == pytest.approx(expected / 2**20)
    assert row.top1 is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.batch = 2


def test_counted_macs_of_the_tiny_cnn(tiny):
    # conv1: 8 x 32 x 32 outputs x 27 MACs; conv2: 12 x 16 x 16 x 72; linear 12 x 10 (biases are not MACs)
    expected = (8 * 32 * 32 * 27 + 12 * 16 * 16 * 72 + 12 * 10) / 1e9
    assert model_costs.gmacs(tiny) == pytest.approx(expected)
    assert model_costs.gmacs(tiny, input_size=128) == pytest.approx(expected * 4, rel=1e-3)


def test_lite0_row_reads_the_weights_file_and_published_top1(lite0):
    row = benchmarks.measure(lite0, repeats=2, warmup=1)
    assert row.weights_kind == model_costs.WEIGHTS_FILE
    assert row.weights_mib == pytest.approx(lite0.spec.weights_file.stat().st_size / 2**20)
    assert row.top1 == 75.1 and row.params == 4_652_008 and row.gmacs == pytest.approx(0.385, rel=0.01)


def test_the_input_is_the_same_for_every_model():
    a, b = benchmarks.fixed_input(2, (32, 32)), benchmarks.fixed_input(2, (32, 32))
    assert torch.equal(a, b) and a.shape == (2, 3, 32, 32) and a.dtype == torch.float32


def test_auto_repeats_stop_at_a_stable_median(tiny):
    started = time.perf_counter()
    row = benchmarks.measure(tiny, repeats=None, warmup=1)
    assert row.repeats >= benchmarks.MIN_REPEATS
    assert sum(row.times_ms) >= benchmarks.MIN_SECONDS * 1e3 * 0.9 or row.repeats == benchmarks.MAX_REPEATS
    assert time.perf_counter() - started < benchmarks.MAX_SECONDS + 5


def test_the_model_lock_is_held_and_gc_restored_while_timing(tiny):
    seen = []

    def probe(module, args, output):
        other = threading.Thread(target=lambda: seen.append(tiny.lock.acquire(blocking=False)))
        other.start()
        other.join()

    handle = tiny.module.register_forward_hook(probe)
    try:
        benchmarks.measure(tiny, repeats=2, warmup=1)
    finally:
        handle.remove()
    assert seen and not any(seen)  # no other thread could take the lock during a pass
    assert gc.isenabled()


def test_run_reports_each_row_in_order_and_can_stop():
    calls = []
    rows = benchmarks.run([TINY], batches=[2, 1], device="cpu", repeats=2, warmup=0,
                          on_row=lambda row, done, total: calls.append((row.batch, done, total)))
    assert [r.batch for r in rows] == [1, 2] and calls == [(1, 1, 2), (2, 2, 2)]
    polls = iter(range(1000))
    stopped = benchmarks.run([TINY], batches=[1, 2], device="cpu", repeats=50, warmup=0,
                             should_stop=lambda: next(polls) > 55)  # during the second setting's passes
    assert [r.batch for r in stopped] == [1]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(names=["resnet5"]), UnknownModelError, "Did you mean 'resnet50'"),
        (dict(names=[]), InvalidInputError, "at least one backbone"),
        (dict(batches=[0]), InvalidInputError, "Batch size must be"),
        (dict(batches=[]), InvalidInputError, "at least one batch"),
        (dict(precision="bf16"), InvalidInputError, "GPU only"),
        (dict(precision="int8"), InvalidInputError, "Unknown precision"),
        (dict(names=["vit_b_16"], input_size=160), InvalidInputError, "only accepts 224x224"),
        (dict(input_size=4000), InvalidInputError, "between 32 and 1024"),
        (dict(repeats=0), InvalidInputError, "Repeats must be"),
    ],
)
def test_bad_settings_are_refused_before_any_model_loads(kwargs, error, match, monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model before checking"))
    with pytest.raises(error, match=match):
        benchmarks.run(**{"names": [TINY], "device": "cpu", **kwargs})


def test_an_input_too_small_for_the_network_is_a_message():
    with pytest.raises(InvalidInputError, match="cannot run at 32x32.*larger input size"):
        benchmarks.run(["alexnet"], input_size=32, device="cpu", pretrained=False, repeats=1, warmup=0)


def test_csv_json_table_machine_and_method(tiny):
    rows = [benchmarks.measure(tiny, batch=b, repeats=2, warmup=0) for b in (1, 2)]
    records = list(csv.DictReader(io.StringIO(benchmark_tables.to_csv(rows))))
    assert [r["batch"] for r in records] == ["1", "2"] and records[0]["input_size"] == "64x64"
    assert float(records[1]["median_ms"]) == pytest.approx(rows[1].median_ms) and "times_ms" not in records[0]
    data = json.loads(benchmark_tables.to_json(rows, machine="m", method="x"))
    assert data["machine"] == "m" and len(data["rows"][0]["times_ms"]) == 2 and data["rows"][1]["params"] == rows[1].params
    table = benchmark_tables.text_table(rows).splitlines()
    assert len(table) == 3 and "p50 ms/batch" in table[0] and "GMACs/image" in table[0] and "Tiny CNN" in table[1]
    machine = benchmarks.machine()
    assert torch.__version__ in machine and f"torch uses {torch.get_num_threads()} threads" in machine
    assert "GPU: none" in machine or "GPU: " in machine
    assert "3 untimed warm-up" in benchmarks.method(warmup=3, repeats=None) and "stable" in benchmarks.method(
        warmup=3, repeats=None)
    assert benchmarks.precisions("cpu") == ["fp32"]


def test_the_earlier_api_still_works(tiny):
    assert benchmarks.latency_ms(tiny, torch.zeros(1, 3, 64, 64), repeats=2, warmup=0) > 0
    assert model_costs._counted_gmacs(tiny.name, tiny.pretrained, tiny) == model_costs.gmacs(tiny)


@pytest.mark.slow
def test_params_and_macs_match_torchvision_metadata_for_every_torchvision_model():
    """Parameters exactly; multiply-adds within 5% of `_ops` (measured: within 0.2%), at the reference sizes."""
    assert len(TORCHVISION) >= 11
    for name in TORCHVISION:
        spec = registry.get(name)
        model = models.load(name, device="cpu", pretrained=False)
        params = model.params  # inception_v3 keeps its auxiliary classifier, as torchvision counts it
        assert params == spec.params, name
        assert model_costs.gmacs(model) == pytest.approx(spec.gmacs, rel=0.05), name
        del model


def test_cli_prints_the_same_table_and_json(capsys):
    from core.__main__ import main

    assert main(["benchmark", "--models", TINY, "--batch", "2,1", "--repeats", "2", "--warmup", "0"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "weights", "device"] and "GMACs/image" in lines[0]
    assert "Tiny CNN (tests)" in lines[1] and "machine: CPU" in out and "method: " in out
    assert "[1/2]" in err and "[2/2]" in err  # progress goes to stderr
    assert main(["benchmark", "--models", TINY, "--batch", "1", "--repeats", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in data["rows"]] == [1] and data["rows"][0]["name"] == TINY and "torch" in data["machine"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "resnet5"], "error: Unknown model 'resnet5'. Did you mean 'resnet50'?"),
        (["--models", TINY, "--batch", "0"], "error: Batch size must be a whole number"),
        (["--models", TINY, "--batch", "1,x"], "error: --batch takes comma-separated whole numbers"),
        (["--models", TINY, "--precision", "fp16"], "error: fp16 is measured on GPU only"),
    ],
)
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    from core.__main__ import main

    assert main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_busy_machine_is_called_out(monkeypatch):
    monkeypatch.setattr(benchmarks.os, "getloadavg", lambda: (40.0, 30.0, 20.0))
    assert "load average 40.0" in benchmarks.busy()
    monkeypatch.setattr(benchmarks.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert benchmarks.busy() is None


def test_run_settings_describes_a_complete_or_stopped_run():
    """The settings/result records live in core: a run of them says where, how and whether it finished."""
    settings = benchmarks.BenchmarkSettings((TINY,), (2, 1, 2), None, "fp32", "cpu", 2, 0)
    assert settings.total == 2 and settings.plan() == [(TINY, 1), (TINY, 2)]
    seen = []
    result = benchmarks.run_settings(settings, on_row=lambda row, done, total: seen.append((row.batch, done, total)))
    assert result.complete and [r.batch for r in result.rows] == [1, 2] and seen == [(1, 1, 2), (2, 2, 2)]
    assert result.machine.startswith("CPU: ") and "2 timed passes" in result.method and result.settings is settings
    stopped = benchmarks.run_settings(settings, should_stop=lambda: True)
    assert not stopped.complete and stopped.rows == ()
