"""Memory stays flat: many explain calls in one process, no hooks and no gradients left behind."""

import gc

import numpy as np

from core import cams, hooks, predictions
from tests.conftest import sample


def _rss_mb() -> float:
    """The resident set of this process, after glibc has handed back the free pages it keeps (`malloc_trim`): what
    is measured is what is alive, not how the allocator happened to fragment the heap. Without the trim, one clean
    clone's run read +272 MB over five 12-MP uploads whose caches stayed at 297 MB (the same test alone: +30 MB)."""
    import ctypes
    import os

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measure as it is
        pass
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_200_explain_calls_do_not_grow_memory(tiny):
    images = [sample(n).resize((160, 120)) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    methods = list(cams.SHARED)

    def one(i: int) -> None:
        result = cams.compute(tiny, images[i % 4], methods=[methods[i % len(methods)]], target=i % 10)[0]
        predictions.predict(tiny, images[i % 4])
        assert np.isfinite(result.heatmap).all()

    for i in range(20):  # warm-up: allocator pools, lazy imports
        one(i)
    gc.collect()
    before = _rss_mb()
    for i in range(200):
        one(i)
    gc.collect()
    grown = _rss_mb() - before
    assert grown < 50, f"RSS grew by {grown:.1f} MB over 200 calls"
    assert hooks.count(tiny.module) == 0
    assert all(p.grad is None and not p.requires_grad for p in tiny.module.parameters())


def test_results_hold_plain_arrays(lite0, chelsea):
    (result,) = cams.compute(lite0, chelsea, methods=["gradcam"])
    assert type(result.heatmap) is np.ndarray
    for value in vars(result).values():
        assert not hasattr(value, "grad_fn"), "a result holds a tensor"
