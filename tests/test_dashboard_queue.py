"""Heavy work goes through one bounded queue (issue #7): background jobs show "queued" and their place, Stop
while queued ends a job without running it, slow CAM methods wait for a slot in the script thread, and the
Benchmarks page shows the queued state."""

import threading

from streamlit import config

from core.errors import Cancelled
from dashboard import cache, jobs
from tests.conftest import SAMPLES, TINY
from tests.test_dashboard_benchmarks import _finish, _ok, _open, _settings

config.set_option("client.showErrorDetails", "full")


class _Job(jobs.BackgroundJob):
    """Runs until `release` is set; counts how many of its kind run at once."""

    label = "Test job"
    lock = threading.Lock()
    inside = 0
    most = 0

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.working = threading.Event()
        self._start("test-job")

    def _work(self) -> str:
        cls = type(self)
        with cls.lock:
            cls.inside += 1
            cls.most = max(cls.most, cls.inside)
        self.working.set()
        self.release.wait(60)
        with cls.lock:
            cls.inside -= 1
        return "done"


def test_a_job_waits_queued_with_its_place_and_stop_while_queued_never_runs_it(gate):
    release = threading.Event()
    try:
        first, second, third = _Job(release), _Job(release), _Job(release)
        assert first.working.wait(30) and first.state == "running" and first.ahead is None
        assert (second.state, second.ahead) == ("queued", 0) and (third.state, third.ahead) == ("queued", 1)
        assert third.queue_text().startswith("Queued: 1 ahead of you")
        third.stop.set()
        assert third.wait(30) and third.state == "done"
        assert isinstance(third.error, Cancelled) and "stopped while queued" in str(third.error)
        assert not third.ran and third.result is None
        assert second.ahead == 0 and gate.waiting == 1  # the stopped job left the queue
    finally:
        release.set()
    for job in (first, second):
        assert job.wait(30) and job.result == "done" and job.error is None and job.ran
    assert gate.running == 0 and gate.waiting == 0


def test_eight_sessions_of_heavy_work_never_run_more_than_the_slots(gate):
    gate.slots = 2
    _Job.inside = _Job.most = 0
    release = threading.Event()
    jobs = [_Job(release) for _ in range(8)]
    assert [j.state for j in jobs].count("queued") >= 6
    assert sorted(j.ahead for j in jobs if j.state == "queued") == list(range(sum(j.state == "queued" for j in jobs)))
    release.set()
    for job in jobs:
        assert job.wait(60) and job.result == "done"
    assert 1 <= _Job.most <= 2


def test_a_slow_cam_method_waits_for_a_slot_and_reports_its_place(gate):
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    key = cache.digest(data)
    holder = gate.enter("someone else's benchmark")
    reports = []

    def on_progress(fraction: float, message: str) -> None:
        reports.append(message)
        if message.startswith("Queued"):
            holder.release()  # the slot frees while this one waits

    # a one-pass method takes no slot: it runs at once although the only slot is held
    (fast,) = cache.cam_grid(TINY, "cpu", False, key, data, ("gradcam",), 0, None,
                              _on_progress=lambda fraction, message: reports.append(message))
    assert fast.method == "gradcam" and gate.running == 1 and not any(r.startswith("Queued") for r in reports)
    reports.clear()
    (slow,) = cache.cam_grid(TINY, "cpu", False, key, data, ("scorecam",), 0, None, _on_progress=on_progress)
    assert slow.method == "scorecam" and slow.heatmap.shape
    assert reports[0].startswith("Queued: 0 ahead of you (1 of 1 heavy-work slot busy)"), reports
    assert gate.running == 0 and gate.waiting == 0  # released after the computation


def test_the_benchmarks_page_shows_the_queue_and_stop_while_queued(gate, tmp_path):
    holder = gate.enter("someone else's t-SNE")
    try:
        at = _open(tmp_path)
        _settings(at, [TINY], [1], 3)
        at.button(key="bench_start").click().run()
        assert not at.exception, at.exception
        job = at.session_state["benchmark_job"]
        assert job.state == "queued"
        assert any(i.value.startswith("Benchmark — Queued: 0 ahead of you") for i in at.info), [i.value for i in at.info]
        at.button(key="bench_stop").click().run()
        _finish(at, timeout=60)
        _ok(at)
        assert not job.ran and isinstance(job.error, Cancelled)
        assert any("stopped while queued" in i.value for i in at.info)
    finally:
        holder.release()
