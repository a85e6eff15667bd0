"""Where the dashboard's concerns live, checked so that a move cannot be quietly undone.

cache.py holds only cache wrappers; background work is dashboard.jobs; charts are built once in dashboard.charts
(the confusion matrix and per-class table that Datasets and Transfer learning both show); job progress is one
fragment in dashboard.widgets; no dashboard module imports the deep-learning or scikit-learn libraries.
"""

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import test_dashboard_datasets, test_dashboard_training
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard"
MODULES = sorted(DASHBOARD.rglob("*.py"))
FORBIDDEN = {"torch", "torchvision", "timm", "pytorch_grad_cam", "sklearn"}
JOB_PAGES = ("benchmarks.py", "datasets.py", "training.py", "methods.py")  # pages that watch a background job
MINE = ("cache.py", "dataset_cache.py", "jobs.py", "charts.py", "widgets.py")

pytestmark = pytest.mark.timeout(400)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_no_dashboard_module_imports_the_deep_learning_libraries():
    """Pages and caches talk to core; core owns torch, torchvision, timm, grad-cam and scikit-learn."""
    found = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] in FORBIDDEN) for p in MODULES}
    assert not {path: names for path, names in found.items() if names}


def test_cache_holds_only_cache_wrappers():
    """No classes (jobs, records), no threads, no imports in the middle of the file (`# noqa: E402`)."""
    source = (DASHBOARD / "cache.py").read_text()
    tree = _tree(DASHBOARD / "cache.py")
    assert len(source.splitlines()) < 500
    assert not [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert "E402" not in source and "threading" not in _imports(DASHBOARD / "cache.py")
    first_def = next(node.lineno for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))
    late = [node.lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno > first_def]
    assert not late, f"imports after the first function, at lines {late}"


def test_background_jobs_live_in_jobs():
    """Every thread-running job is a jobs.BackgroundJob, defined in dashboard/jobs.py and nowhere else."""
    from dashboard import jobs

    classes = {node.name: path.name for path in MODULES for node in ast.walk(_tree(path)) if isinstance(node, ast.ClassDef)}
    jobs_ = {name for name, where in classes.items() if name.endswith("Job")}
    assert jobs_ == {"BackgroundJob", "BenchmarkJob", "SharedJob", "FeaturesJob", "TsneJob", "FaithfulnessJob",
                     "AuditJob", "TrainingJob"}
    assert {classes[name] for name in jobs_} == {"jobs.py"}
    assert all(issubclass(getattr(jobs, name), jobs.BackgroundJob) for name in jobs_)


def test_records_live_in_core():
    """The benchmark settings/result, a dataset's explained head and the shown picture are core records."""
    from core import benchmarks, images, probing

    for module, name in ((benchmarks, "BenchmarkSettings"), (benchmarks, "BenchmarkResult"),
                         (probing, "DatasetHead"), (images, "Picture")):
        assert getattr(module, name).__module__ == module.__name__
    dashboard_classes = {node.name for path in MODULES for node in ast.walk(_tree(path)) if isinstance(node, ast.ClassDef)}
    assert not dashboard_classes & {"BenchmarkSettings", "BenchmarkResult", "DatasetHead", "Picture"}


def test_the_dataset_cache_calls_core_s_one_dispatch(monkeypatch):
    """dataset_cache.dataset does not pick readers by kind itself: it hands every kind to core.datasets.open_source."""
    from core import datasets
    from dashboard import dataset_cache

    calls = []
    real = datasets.open_source
    monkeypatch.setattr(datasets, "open_source", lambda *a, **k: calls.append((a, sorted(k))) or real(*a, **k))
    dataset_cache.dataset.clear()
    try:
        assert len(dataset_cache.dataset("shapes", "shapes", 3, 12)) == 12
    finally:
        dataset_cache.dataset.clear()
    assert calls == [(("shapes", "shapes"), ["data", "folder", "n", "root", "seed"])]
    source = (DASHBOARD / "dataset_cache.py").read_text()
    assert "from_zip" not in source and "digits(" not in source and "torchvision_set" not in source


def test_job_progress_is_one_fragment_in_widgets():
    """Pages that watch a background job draw it with widgets.job_progress; no page polls with a fragment of its own."""
    for path in MODULES:
        polling = [node.lineno for node in ast.walk(_tree(path))
                   if isinstance(node, ast.keyword) and node.arg == "run_every"]
        assert not polling or path.name == "widgets.py", f"{path.name} polls with its own fragment at {polling}"
    for page in JOB_PAGES:
        assert "widgets.job_progress(" in (DASHBOARD / "app_pages" / page).read_text(), page


def test_pages_leave_charts_to_charts():
    """The pages whose charts moved build no Plotly figure themselves."""
    for page in ("benchmarks.py", "datasets.py", "training.py", "explain.py"):
        assert not {n for n in _imports(DASHBOARD / "app_pages" / page) if n.startswith("plotly")}, page


def test_my_modules_stay_small():
    for name in MINE:
        assert len((DASHBOARD / name).read_text().splitlines()) <= 500, name


def _recording(monkeypatch, module, name: str) -> list:
    real, calls = getattr(module, name), []

    def record(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, record)
    return calls


def test_datasets_and_transfer_learning_build_the_confusion_matrix_and_per_class_table_once(monkeypatch, tmp_path):
    """Both pages draw their confusion matrix and per-class table through charts.confusion / per_class_table."""
    from dashboard import charts

    confusion = _recording(monkeypatch, charts, "confusion")
    per_class = _recording(monkeypatch, charts, "per_class_table")

    at = AppTest.from_file(str(DASHBOARD / "app_pages" / "datasets.py"), default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state["ds_limit"] = 40
    at.run()
    test_dashboard_datasets.settle(at)  # features in the background
    assert not at.exception, at.exception
    assert confusion and {len(args[1]) for args in confusion} == {10} and len(per_class) == len(confusion)
    confusion.clear()
    per_class.clear()

    at = test_dashboard_training.open_page(tmp_path)
    at.button(key="tr_start").click().run()
    test_dashboard_training.finish(at)
    assert not at.exception, at.exception
    assert confusion and {len(args[1]) for args in confusion} == {10} and len(per_class) == len(confusion)


def test_pages_follow_their_jobs_through_one_helper():
    """Which job a session waits for, and leaving the old one when settings change, is widgets.follow."""
    for page in ("datasets.py", "methods.py"):
        source = (DASHBOARD / "app_pages" / page).read_text()
        assert "widgets.follow(" in source and "uuid" not in source and "_leave(old" not in source, page
