"""`python -m core ...` as a user runs it: real subprocesses, exit statuses, stdout and stderr.

Every process pays ~5 s of imports (torch, torchvision, timm), so the commands are started together,
once per module, by the `runs` fixture; each test then checks one of them. The main paths run as
their own `python -m core` process; the other cases share two interpreters (`_BATCH`), which run
`core/__main__.py` afresh for each argument list with runpy, as `python -m core` does, and record the
exit status, stdout and stderr (with the traceback, if one escapes).
"""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import hostile

ROOT = Path(__file__).resolve().parents[1]
CHELSEA = str(ROOT / "assets" / "samples" / "chelsea.jpg")
CATS = range(281, 286)
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}

# Paths the `files` fixture makes: an output folder, a folder given as an image, and hostile files.
_FILE_KEYS = ("out", "folder", "zero_bytes", "text_named_jpg", "png_bomb_30000x30000", "truncated_jpeg",
              "truncated_png", "png_1x1", "psd_named_jpg")

# One interpreter, many `python -m core` runs: prints a JSON list of {rc, stdout, stderr}.
_BATCH = r"""
import io, json, runpy, sys, traceback
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    real = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    sys.argv = ["python -m core", *argv]
    try:
        runpy.run_module("core", run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as stop:
        rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()  # what the interpreter would print, with its exit status
        rc = 1
    finally:
        sys.stdout, sys.stderr = real
    results.append({"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TQDM_DISABLE", "1")
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 240) -> dict:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "seconds": seconds}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    paths = {"out": tmp / "out", "torch_home": tmp / "torch_home", "folder": tmp / "a_folder"}
    paths["torch_home"].mkdir()
    paths["folder"].mkdir()
    for name in _FILE_KEYS[2:]:
        case = hostile.by_name(name)
        paths[name] = tmp / f"{name}{case.suffix}"
        paths[name].write_bytes(case.data)
    return paths


def _commands(files: dict[str, Path]) -> dict[str, tuple[str, list[str], str]]:
    """name -> (where it runs, arguments, for failures a phrase the error line must contain).

    "own": its own `python -m core` process. "ok" / "fail": one of two shared interpreters (`_BATCH`).
    """
    out = files["out"]
    image = CHELSEA
    explain = ["explain", image, "--out", str(out / "b.png")]
    return {
        # own processes: the main paths, and failures from argparse and from a failed download
        "predict_json": ("own", ["predict", image, "--json"], ""),
        "explain": ("own", ["explain", image, "--out", str(out / "x.png"), "--heatmap", str(out / "h.npy")], ""),
        "no_weights": ("own", ["predict", image, "--model", "resnet18"], "resnet18-f37072fd.pth"),
        "missing_file": ("fail", ["predict", str(out / "does_not_exist.jpg")], "No such file"),
        "no_arguments": ("own", ["predict"], "required: image"),
        # shared interpreter, commands that work
        "predict_top3": ("ok", ["predict", image, "--top", "3"], ""),
        "explain_eigencam": ("ok", ["explain", image, "--method", "eigencam", "--class", "285",
                                    "--out", str(out / "e.png"), "--heatmap", str(out / "e.npy")], ""),
        "models": ("ok", ["models"], ""),
        "random_weights": ("ok", ["predict", image, "--random-weights", "--model", "resnet18", "--top", "2"], ""),
        # shared interpreter, failures
        "unknown_model": ("fail", ["predict", image, "--model", "resnet5"], "Did you mean 'resnet50'?"),
        "folder_as_image": ("fail", ["predict", str(files["folder"])], "is a folder"),
        "unknown_method": ("fail", [*explain, "--method", "gradcamx"], "Did you mean 'gradcam'?"),
        "class_1000": ("fail", [*explain, "--class", "1000"], "between 0 and 999, got 1000"),
        "class_minus_1": ("fail", [*explain, "--class", "-1"], "between 0 and 999, got -1"),
        "class_not_int": ("fail", [*explain, "--class", "cat"], "invalid int value"),
        "unknown_layer": ("fail", [*explain, "--layer", "blocks.99"], "No layer 'blocks.99'"),
        "out_not_png": ("fail", ["explain", image, "--out", str(out / "b.jpg")], "must be a .png"),
        "out_under_a_file": ("fail", ["explain", image, "--out", str(files["zero_bytes"]) + "/x.png"],
                             "Cannot write"),
        "unknown_colormap": ("fail", [*explain, "--colormap", "rainbow"], "Unknown colormap 'rainbow'"),
        "opacity_2": ("fail", [*explain, "--opacity", "2"], "Opacity must be between 0 and 1"),
        "explain_without_out": ("fail", ["explain", image], "required: --out"),
        "unknown_command": ("fail", ["bogus"], "invalid choice: 'bogus'"),
        "top_0": ("fail", ["predict", image, "--top", "0"], "top_k"),
        "zero_byte_file": ("fail", ["predict", str(files["zero_bytes"])], "empty"),
        "text_as_jpg": ("fail", ["predict", str(files["text_named_jpg"])], "not an image"),
        "psd_as_jpg": ("fail", ["explain", str(files["psd_named_jpg"]), "--out", str(out / "b.png")],
                       "not an image"),
        "truncated_jpeg": ("fail", ["predict", str(files["truncated_jpeg"])], "truncated"),
        "truncated_png": ("fail", ["explain", str(files["truncated_png"]), "--out", str(out / "b.png")],
                          "truncated"),
        "bomb": ("fail", ["predict", str(files["png_bomb_30000x30000"])], "megapixels"),
        "one_pixel": ("fail", ["predict", str(files["png_1x1"])], "at least 8"),
    }


FAILURES = [name for name, (where, _, phrase) in _commands({k: Path(k) for k in _FILE_KEYS}).items() if phrase]


@pytest.fixture(scope="module")
def runs(files) -> dict[str, dict]:
    """Start every process at once (imports dominate), wait for all, return name -> result."""
    commands = _commands(files)
    # No network and an empty hub cache for everyone: resnet18's download must fail, fast, here too.
    env = _env(TORCH_HOME=str(files["torch_home"]), **NO_NETWORK)
    jobs = {name: [sys.executable, "-m", "core", *argv] for name, (where, argv, _) in commands.items()
            if where == "own"}
    batches = {where: [name for name, (w, _, _) in commands.items() if w == where] for where in ("ok", "fail")}
    for where, names in batches.items():
        jobs[f"_{where}"] = [sys.executable, "-c", _BATCH, json.dumps([commands[n][1] for n in names])]

    # One process per core, each pinned to its core where `taskset` exists: core.runtime then gives
    # torch one thread, and two processes do not fight over both cores (OpenMP spin-waits).
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    workers = max(2, min(4, len(cpus) or os.cpu_count() or 2))
    free: queue.Queue = queue.Queue()
    for index in range(workers):
        free.put(cpus[index] if shutil.which("taskset") and len(cpus) >= workers else None)

    def run(args: list[str]) -> dict:
        cpu = free.get()
        try:
            return _run((["taskset", "-c", str(cpu)] if cpu is not None else []) + args, env)
        finally:
            free.put(cpu)

    order = ["_fail", "_ok", *[name for name in jobs if not name.startswith("_")]]  # longest first
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(run, jobs[name]) for name in order}
        results = {name: future.result() for name, future in futures.items()}
    for where, names in batches.items():
        batch = results.pop(f"_{where}")
        assert batch["rc"] == 0, batch["stderr"][-3000:]
        results.update(zip(names, json.loads(batch["stdout"]), strict=True))
    for name, (_, _, phrase) in commands.items():
        results[name]["phrase"] = phrase
    return results


def _error_line(result: dict, *, stdout_ok: tuple[str, ...] = ()) -> str:
    """Exit status 2 and exactly one stderr line, `error: ...`, with no traceback; returns it."""
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert result["rc"] == 2, result
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error: ' line, got {lines!r}"
    assert len(lines[0]) > len("error: ") + 10
    stray = [line for line in result["stdout"].splitlines() if not (stdout_ok and line.startswith(stdout_ok))]
    assert not stray, result["stdout"]
    return lines[0]


def _ok(result: dict) -> str:
    assert result["rc"] == 0, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"] and "error:" not in result["stderr"], result["stderr"]
    return result["stdout"]


# ---------------------------------------------------------------------------------------------
# Working commands


def test_predict_json(runs):
    payload = json.loads(_ok(runs["predict_json"]))
    assert {"model", "device", "predictions"} <= set(payload)
    assert payload["model"] == "efficientnet_lite0" and payload["pretrained"] is True
    assert payload["device"] in ("cpu",) or payload["device"].startswith("cuda")
    predictions = payload["predictions"]
    assert len(predictions) == 5
    for p in predictions:
        assert set(p) >= {"index", "label", "prob"}
        assert isinstance(p["index"], int) and 0 <= p["index"] < 1000 and isinstance(p["label"], str) and p["label"]
        assert 0.0 <= p["prob"] <= 1.0
    probs = [p["prob"] for p in predictions]
    assert probs == sorted(probs, reverse=True)
    assert predictions[0]["index"] in CATS


def test_predict_table(runs):
    lines = _ok(runs["predict_top3"]).strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("EfficientNet-Lite0 on ")
    rows = [re.fullmatch(r"\s*(\d+\.\d\d)%\s+(\d+)\s+(.+)", line) for line in lines[1:]]
    assert all(rows), lines
    percents = [float(row[1]) for row in rows]
    assert percents == sorted(percents, reverse=True) and int(rows[0][2]) in CATS


def test_explain_writes_overlay_and_heatmap(runs, files):
    stdout = _ok(runs["explain"])
    assert "at layer bn2" in stdout and str(files["out"] / "x.png") in stdout
    overlay = Image.open(files["out"] / "x.png")
    assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == (451, 300)
    heatmap = np.load(files["out"] / "h.npy")
    assert heatmap.dtype == np.float32 and heatmap.shape == (300, 451)
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() - heatmap.min() > 0.5  # a real map, not a constant
    match = re.search(r"class (\d+)", stdout)
    assert match and int(match[1]) in CATS, stdout  # default target: the predicted class


def test_explain_eigencam_for_a_chosen_class(runs, files):
    stdout = _ok(runs["explain_eigencam"])
    assert re.search(r"\beigencam for class 285\b", stdout), stdout
    assert Image.open(files["out"] / "e.png").size == (451, 300)
    heatmap = np.load(files["out"] / "e.npy")
    assert heatmap.dtype == np.float32 and heatmap.shape == (300, 451)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0 and heatmap.std() > 0.01


def test_models_lists_the_offline_default(runs):
    lines = _ok(runs["models"]).splitlines()
    assert lines[0].split()[0] == "efficientnet_lite0"
    assert re.match(r"efficientnet_lite0\s+.*\bweights here$", lines[0]), lines[0]
    assert any(line.split()[0] == "resnet50" for line in lines)


def test_random_weights_need_no_download(runs):
    lines = _ok(runs["random_weights"]).strip().splitlines()
    assert "random weights" in lines[0] and len(lines) == 3


# ---------------------------------------------------------------------------------------------
# Failures: exit 2, one line


def test_weights_missing_names_the_file(runs):
    result = runs["no_weights"]
    line = _error_line(result, stdout_ok=("Downloading: ",))  # torch.hub announces the try on stdout
    assert "resnet18-f37072fd.pth" in line and "random weights" in line


def test_unknown_model_suggests_the_closest(runs):
    line = _error_line(runs["unknown_model"])
    assert "Unknown model 'resnet5'" in line and "Did you mean 'resnet50'?" in line and "models --search" in line


@pytest.mark.parametrize("name", FAILURES)
def test_failure(runs, name):
    result = runs[name]
    line = _error_line(result, stdout_ok=("Downloading: ",) if name == "no_weights" else ())
    assert result["phrase"] in line, f"{result['phrase']!r} not in {line!r}"


def test_failures_write_no_overlay(runs, files):
    assert not (files["out"] / "b.png").exists() and not (files["out"] / "b.jpg").exists()
