"""core.processes: training in a spawned child process, reported back to the caller.

Each test starts one child (spawn + importing torch: a few seconds), on tiny inputs: 40 digits at 16-32 px,
the tiny test CNN or the small baseline CNN. Backbones the child must build from this module (a failing
one, a slow one) are registered at import, so the child, which imports this module to unpickle them,
knows them too.
"""

import os
import signal
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import spawn

import numpy as np
import pytest
import torch

from core import datasets, embeddings, processes, registry, training
from core.errors import InvalidInputError
from core.processes import TrainingProcessError
from tests.conftest import TINY

pytestmark = pytest.mark.timeout(300)

BROKEN, SLOW = "broken_cnn_for_tests", "slow_cnn_for_tests"


def _broken(pretrained: bool):
    raise RuntimeError("this backbone cannot be built (on purpose)")


def _slow(pretrained: bool):
    time.sleep(600)  # never polls Stop: the parent has to end the process
    raise AssertionError("unreachable")


for _name, _build in ((BROKEN, _broken), (SLOW, _slow)):
    if _name not in registry.names():
        registry.register(registry.BackboneSpec(
            name=_name, title=_name, source="tests", build=_build, cam_layer="3", head="7",
            categories=tuple(f"class {i}" for i in range(10)), weights_file=None, input_size=(64, 64), resize_size=72,
        ))


@pytest.fixture(scope="module")
def digits():
    return datasets.digits(0, 40)  # 4 images per class: 2 train, 1 validation, 1 test


def _into(pids: list[int]):
    return lambda pid, threads: pids.append(pid)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_run_in_its_process_matches_the_same_run_in_this_thread(tiny, digits):
    config = training.TrainConfig(image_size=32, epochs=3, batch_size=8)
    before = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    started, computed, progress, priority = [], [], [], []

    def on_start(pid: int, threads: int) -> None:
        started.append(pid)
        priority.append((threads, os.getpriority(os.PRIO_PROCESS, pid)))  # the child is running: look at it

    seen: list[training.EpochStats] = []
    run = processes.train(TINY, digits, config, device="cpu", on_start=on_start, on_epoch=seen.append,
                          on_features=computed.append, on_progress=lambda f, m: progress.append((f, m)))
    # the frozen features come first, as the dashboard did in its thread (train() computing them itself would
    # draw from the seeded RNG before the head is initialised, so the head would start elsewhere)
    features = embeddings.extract(tiny, digits, size=32, precision="fp32")
    here = training.train(tiny, digits, config, features=features)

    assert len(started) == 1 and started[0] != os.getpid()  # the work ran in another process...
    assert _gone(started[0])  # ...which has ended
    threads, niceness = priority[0]
    assert threads == processes.default_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)  # a lower priority than this process
    assert run.ended == here.ended == "completed" and seen == list(run.history) and len(run.history) == 3
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(run.split, part), getattr(here.split, part))
    assert [s.val_loss for s in run.history] == pytest.approx([s.val_loss for s in here.history], rel=1e-4, abs=1e-5)
    assert run.best_epoch == here.best_epoch and run.accuracy == pytest.approx(here.accuracy)
    assert np.array_equal(run.test.predicted, here.test.predicted)
    assert (run.trainable_params, run.total_params, run.groups) == (here.trainable_params, here.total_params, here.groups)
    assert run.feature_seconds > 0 and progress and progress[0][1].startswith("Frozen features")
    assert len(computed) == 1 and computed[0].image_size == 32
    assert np.allclose(computed[0].features, features.features, rtol=1e-4, atol=1e-5)

    # the rebuilt model: its own module, the dataset's classes, the same outputs as the one trained here
    model = run.model
    assert model.module is not tiny.module and model.spec.source == "trained here"
    assert model.categories == here.model.categories and model.spec.title == here.model.spec.title
    assert (model.spec.cam_layer, model.spec.head, model.spec.input_size) == (
        here.model.spec.cam_layer, here.model.spec.head, here.model.spec.input_size)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.module(x), here.model.module(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in tiny.module.state_dict().items())  # nothing shared was trained


def test_stop_ends_the_process_with_the_best_epoch_so_far(digits):
    seen: list[training.EpochStats] = []
    started: list[int] = []
    config = training.TrainConfig(strategy="small-cnn", image_size=16, epochs=1000, batch_size=8)
    run = processes.train(None, digits, config, device="cpu", on_start=_into(started), on_epoch=seen.append,
                          should_stop=lambda: len(seen) >= 2)
    assert run.ended == "stopped" and 2 <= len(run.history) < 1000 and seen == list(run.history)
    assert run.best_epoch == 1 + int(np.argmin([s.val_loss for s in run.history]))
    assert run.model.spec.name == "small_cnn" and run.model.categories == digits.classes
    assert _gone(started[0])


def test_errors_in_the_process_come_back_as_clear_errors(digits):
    keep = [*np.flatnonzero(digits.labels != 1), *np.flatnonzero(digits.labels == 1)[:2]]
    few = digits.subset(sorted(keep))  # class 1 has 2 images: too few to split
    scratch = training.TrainConfig(strategy="small-cnn", image_size=16, epochs=1)
    with ThreadPoolExecutor(2) as pool:  # two children at once: their start-up costs overlap
        core_error = pool.submit(processes.train, None, few, scratch, device="cpu")
        crash = pool.submit(processes.train, BROKEN, digits, training.TrainConfig(image_size=32, epochs=1), device="cpu")
        with pytest.raises(InvalidInputError, match=r"Class 1 has 2 image\(s\)"):  # core's own error, class and words kept
            core_error.result()
        with pytest.raises(TrainingProcessError, match="RuntimeError: this backbone cannot be built") as raised:
            crash.result()
    assert "_broken" in raised.value.details  # the child's traceback, for the log


def test_a_killed_process_is_reported_instead_of_waited_for(digits):
    started: list[int] = []
    config = training.TrainConfig(strategy="small-cnn", image_size=16, epochs=1000, batch_size=8)
    with pytest.raises(TrainingProcessError, match=r"ended unexpectedly \(killed by SIGKILL\)"):
        processes.train(None, digits, config, device="cpu", on_start=_into(started),
                        on_epoch=lambda stats: os.kill(started[0], signal.SIGKILL))
    assert _gone(started[0])


def test_a_process_that_does_not_take_the_stop_is_terminated(digits):
    started: list[int] = []
    with pytest.raises(TrainingProcessError, match="stopped before the first epoch ended"):
        processes.train(SLOW, digits, training.TrainConfig(image_size=32), device="cpu", on_start=_into(started),
                        should_stop=lambda: bool(started), stop_grace=0.5)
    assert _gone(started[0])


def test_children_never_run_the_parents_main_module(monkeypatch):
    """Streamlit installs the page script as __main__: a plain spawn would run the whole app in the child."""
    page = types.ModuleType("__main__")
    page.__file__ = "/somewhere/dashboard/streamlit_app.py"
    monkeypatch.setitem(sys.modules, "__main__", page)
    processes._keep_main_out_of_children()
    ours = spawn.get_preparation_data(f"{processes.NAME}-7")
    assert "init_main_from_path" not in ours and "init_main_from_name" not in ours
    assert spawn.get_preparation_data("someone-else")["init_main_from_path"] == page.__file__  # others: unchanged
