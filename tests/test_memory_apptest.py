"""Memory stays flat across many reruns of the app: 30 AppTest reruns, each computing new heatmaps."""

import gc
from pathlib import Path

import torch
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import cams, hooks
from tests.test_memory import _rss_mb

config.set_option("client.showErrorDetails", "full")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "streamlit_app.py")
SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")


def _settings(i: int) -> tuple[str, str, float]:
    """A different (sample, method, opacity) on every rerun: new CAMs to compute, render and cache."""
    methods = cams.SHARED
    return SAMPLES[i % len(SAMPLES)], methods[(i // len(SAMPLES) + i) % len(methods)], round(0.3 + 0.05 * (i % 9), 2)


def _rerun(at: AppTest, i: int) -> None:
    sample, method, opacity = _settings(i)
    at.selectbox(key="image_sample").set_value(sample)
    at.selectbox(key="method").set_value(method)
    at.slider(key="opacity").set_value(opacity)
    at.run()
    assert not at.exception, at.exception
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(cams.METHODS[method].title in c for c in captions), (method, captions)


def test_30_reruns_do_not_grow_memory_or_leave_hooks():
    from dashboard import cache  # lazily, as the app itself imports it

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    for i in range(12):  # warm-up: lazy imports, allocator pools, the first cache entries
        _rerun(at, i)
    gc.collect()
    before = _rss_mb()
    for i in range(12, 42):
        _rerun(at, i)
    gc.collect()
    grown = _rss_mb() - before
    print(f"\n30 AppTest reruns: RSS grew by {grown:.1f} MB")
    assert grown < 50, f"RSS grew by {grown:.1f} MB over 30 reruns"
    model = cache.model("efficientnet_lite0", "auto", True)
    assert hooks.count(model.module) == 0
    assert all(p.grad is None for p in model.module.parameters())
    state = at.session_state.to_dict()  # what a session keeps: plain data, never tensors
    assert state, "the session keeps its widget values"
    for key, value in state.items():
        assert not isinstance(value, torch.Tensor) and not hasattr(value, "grad_fn"), key
