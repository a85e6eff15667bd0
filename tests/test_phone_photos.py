"""12-MP phone photos: pictures and heatmaps at screen size, the full-size download unchanged, caches in bytes.

The heavy load (10 browser sessions x 20 photos) is bench/phone_photos.py; here a light version of each bar.
"""

import gc
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import cams, images
from core.errors import InvalidInputError
from dashboard import budget
from tests.phones import phone_jpeg
from tests.test_memory import _rss_mb

config.set_option("client.showErrorDetails", "full")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "streamlit_app.py")


def _blend_per_pixel(image: Image.Image, heatmap: np.ndarray, opacity: float, colormap: str) -> np.ndarray:
    """images.overlay as it was before the lookup table: float32 maths on every pixel (the reference)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    code = getattr(cv2, f"COLORMAP_{colormap.upper()}")
    colored = cv2.cvtColor(cv2.applyColorMap(np.rint(heat * 255.0).astype(np.uint8), code), cv2.COLOR_BGR2RGB)
    blend = (1.0 - opacity) * rgb + opacity * (colored.astype(np.float32) / 255.0)
    return np.clip(np.rint(blend * 255.0), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def phone() -> bytes:
    return phone_jpeg(1)


# --- core: working resolution, overlays ---


@pytest.mark.parametrize("opacity", [0.0, 0.05, 0.35, 0.5, 0.55, 0.8, 1.0])
@pytest.mark.parametrize("colormap", images.COLORMAPS)
def test_overlay_is_bit_identical_to_the_per_pixel_blend(opacity, colormap):
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8))
    heat = rng.uniform(-0.2, 1.2, (61, 83)).astype(np.float32)
    heat[0, :5], heat[1, :3], heat[2, :3] = np.nan, np.inf, -np.inf
    expected = _blend_per_pixel(picture, heat, opacity, colormap)
    assert np.array_equal(images.overlay(picture, heat, opacity=opacity, colormap=colormap), expected)


def test_display_size_bounds_the_long_side_and_never_enlarges():
    assert images.display_size((4032, 3024)) == (1440, 1080)
    assert images.display_size((3024, 4032)) == (1080, 1440)
    assert images.display_size((640, 480)) == (640, 480)
    assert images.display_size((5000, 10), 100) == (100, 1)
    small = Image.new("RGB", (300, 200))
    assert images.fit(small) is small
    assert images.fit(Image.new("RGB", (4032, 3024))).size == (1440, 1080)
    assert images.fit(Image.new("L", (64, 32))).mode == "RGB"


def test_heatmap_shown_is_the_full_resolution_one_downscaled(lite0, phone):
    whole = images.decode(phone).image
    assert whole.size == (4032, 3024)
    size = images.display_size(whole.size)
    (full,) = cams.compute(lite0, whole, methods=["gradcam"])
    (shown,) = cams.compute(lite0, whole, methods=["gradcam"], size=size)
    assert shown.heatmap.shape == (size[1], size[0]) and full.heatmap.shape == (3024, 4032)
    assert (shown.target, shown.label, shown.layer) == (full.target, full.label, full.layer)
    downscaled = cv2.resize(full.heatmap, size, interpolation=cv2.INTER_AREA)
    assert np.abs(downscaled - shown.heatmap).max() < 0.01
    assert np.corrcoef(downscaled.ravel(), shown.heatmap.ravel())[0, 1] > 0.9999
    # and the screen-sized result gives the full-size map back exactly
    assert np.array_equal(shown.resized(*whole.size).heatmap, full.heatmap)
    assert shown.resized(*size) is shown


@pytest.mark.parametrize("size", [(0, 10), (10,), (10.5, 3), (True, 4), "big", (70_000, 10)])
def test_a_bad_heatmap_size_is_refused(lite0, chelsea, size):
    with pytest.raises(InvalidInputError, match="width, height"):
        cams.compute(lite0, chelsea, methods=["gradcam"], size=size)


# --- the dashboard's full-size download ---


def test_full_resolution_download_equals_the_overlay_of_the_whole_image(lite0, phone):
    """The PNG behind "Download overlay" is today's output: the full-size heatmap over the full-size photo."""
    from dashboard import cache

    key = cache.digest(phone)
    shown = cache.cam("efficientnet_lite0", "auto", True, key, phone, "gradcam", None, None)
    assert shown.heatmap.shape == (1080, 1440)
    png = cache.full_overlay_png(key, phone, shown, 0.35, "turbo")
    whole = images.decode(phone).image
    (today,) = cams.compute(lite0, whole, methods=["gradcam"])
    downloaded = np.asarray(Image.open(io.BytesIO(png)))
    assert downloaded.shape == (3024, 4032, 3)
    assert np.array_equal(downloaded, _blend_per_pixel(whole, today.heatmap, 0.35, "turbo"))


# --- byte budgets ---


@dataclass(frozen=True)
class _Record:
    heat: np.ndarray
    picture: Image.Image
    again: np.ndarray


def test_nbytes_counts_arrays_pictures_and_bytes_once():
    array = np.zeros((100, 100), np.float32)
    record = _Record(array, Image.new("RGB", (50, 40)), array)
    assert budget.nbytes(array) == 40_000
    assert budget.nbytes(b"x" * 1000) == 1000
    assert 40_000 + 50 * 40 * 4 <= budget.nbytes(record) < 40_000 + 50 * 40 * 4 + 2_000  # the shared array once
    assert budget.nbytes([record, {"k": (record,)}]) < budget.nbytes(record) + 1_000
    assert budget.nbytes(Image.new("L", (100, 10))) < 1_500


def test_budget_evicts_least_recently_used_by_size():
    kept = budget.Budget("test", 10_000, largest=5_000)
    a, b = budget.Store(kept, "a"), budget.Store(kept, "b")
    for i in range(3):
        a.put(i, np.zeros(2_000, np.uint8))
    b.put("x", np.zeros(3_000, np.uint8))
    assert kept.total <= 10_000 and len(kept) == 4
    assert a.peek(0) is not None  # 0 is now the most recently used
    b.put("y", np.zeros(3_000, np.uint8))
    assert a.peek(1) is None and a.peek(0) is not None  # 1 was the least recently used
    assert kept.total <= kept.limit
    assert kept.usage() == {"a": 4_000, "b": 6_000}


def test_one_huge_value_is_not_kept_and_evicts_nothing():
    kept = budget.Budget("test", 10_000)  # largest: a quarter
    store = budget.Store(kept, "s")
    store.put("small", np.zeros(1_000, np.uint8))
    huge = np.zeros(4_000, np.uint8)
    assert store.get("huge", lambda: huge) is huge  # returned, not kept
    assert store.peek("huge") is None and store.peek("small") is not None and kept.refused == 1


def test_entry_caps_and_clear_are_per_store():
    kept = budget.Budget("test", 10**6)
    capped, other = budget.Store(kept, "capped", max_entries=2), budget.Store(kept, "other")
    other.put("o", b"1")
    for i in range(4):
        capped.put(i, b"x")
    assert [capped.peek(i) for i in range(4)] == [None, None, b"x", b"x"] and other.peek("o") == b"1"
    capped.clear()
    assert capped.peek(3) is None and other.peek("o") == b"1"


def test_memoize_keys_by_plain_arguments_only():
    kept = budget.Budget("test", 10**6)
    calls = []

    @budget.memoize(lambda: kept)
    def double(key: str, _data: bytes, factor: int = 2) -> bytes:
        calls.append(key)
        return _data * factor

    assert double("k", b"ab") == b"abab" and double("k", b"ignored") == b"abab" and calls == ["k"]
    assert double("k", b"ab", factor=3) == b"ababab" and len(calls) == 2
    double.clear()
    double("k", b"cd")
    assert len(calls) == 3


def test_sessions_asking_for_the_same_missing_value_wait_for_one_computation():
    import threading
    import time

    kept = budget.Budget("test", 10**6)
    store = budget.Store(kept, "models")
    calls, results = [], []

    def load():
        calls.append(1)
        time.sleep(0.2)
        return b"model"

    threads = [threading.Thread(target=lambda: results.append(store.get("lite0", load))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and results == [b"model"] * 6 and not kept._flights


@pytest.mark.parametrize(("raw", "expected"), [("", 2048), ("512", 512), ("0.5", 1), ("-3", 1), ("lots", 2048)])
def test_budget_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("VISIONLENS_TEST_MB", raw)
    assert budget.megabytes_from_env("VISIONLENS_TEST_MB", 2048) == expected * budget.MB


# --- the Explain page with phone photos (light version of bench/phone_photos.py) ---


def test_explain_shows_phone_photos_at_screen_size_and_memory_stays_bounded():
    from dashboard import cache

    store = cache.data_budget()
    limit, largest = store.limit, store.largest
    store.limit, store.largest = 300 * budget.MB, 100 * budget.MB  # a few photos' worth: eviction must happen
    try:
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.radio(key="image_source").set_value("Upload").run()
        rss = []
        for i in range(10):
            data = phone_jpeg(100 + i)
            at.get("file_uploader")[0].set_value((f"phone_{i}.jpg", data, "image/jpeg"))
            at.run()
            assert not at.exception, at.exception
            (shown,) = [img for img in at.get("image") if any("at layer" in c for c in img.captions)]
            captions = [c.value for c in at.caption]
            assert any("4032×3024 px (shown at 1440×1080)" in c for c in captions), captions
            labels = [b.proto.label for b in at.get("download_button")]
            assert "Download overlay (PNG, 4032×3024)" in labels and "Download report (HTML)" in labels
            assert store.total <= store.limit
            gc.collect()
            rss.append(_rss_mb())
        usage = store.usage()
        assert usage.get("cams", 0) < 100 * budget.MB, usage
        print(f"\nRSS over 10 phone uploads (MB): {[round(r) for r in rss]}; kept: "
              f"{ {k: round(v / budget.MB) for k, v in usage.items()} }")
        # bounded: the old caches grew by about 75 MB per photo (375 MB over the last five). Peaks are compared,
        # since the allocator returns memory unevenly even after the trim in _rss_mb
        assert max(rss[5:]) - max(rss[:5]) < 250, rss
    finally:
        store.limit, store.largest = limit, largest
        store.clear()
