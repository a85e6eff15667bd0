"""core.embeddings: batched penultimate features, PCA / t-SNE maps and their trustworthiness."""

import functools
import sys
import types

import numpy as np
import pytest
import torch

from core import datasets, embeddings, hooks, models
from core.errors import Cancelled, InvalidInputError

DIGITS = 400
DIGITS_SIZE = 128  # digits are 8x8 pictures: 128 px loses nothing and is 3x faster than 224


@functools.cache
def digits_features() -> tuple[datasets.Dataset, embeddings.Embeddings]:
    """Lite0 (real weights) features of 400 digits, computed once per test session."""
    data = datasets.digits(0, DIGITS)
    return data, embeddings.extract(models.load("efficientnet_lite0", device="cpu"), data, size=DIGITS_SIZE)


def test_features_are_the_input_of_the_head(tiny):
    data = datasets.shapes(0, 10, 48)
    seen = []
    result = embeddings.extract(tiny, data, batch_size=4, precision="fp32", on_progress=lambda f, m: seen.append(f))
    assert result.features.shape == (10, 12) and result.features.dtype == np.float32
    assert result.logits.shape == (10, 10) and result.image_size == 64
    assert result.precision == "fp32"
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert hooks.count(tiny.module) == 0
    # the same as running the network by hand on one image resized whole to 64 x 64
    tensor = embeddings.tensors(tiny, data)[3].unsqueeze(0)
    with torch.inference_mode():
        penultimate = tiny.module[:-1](tensor)
        logits = tiny.module(tensor)
    np.testing.assert_allclose(result.features[3], penultimate[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.logits[3], logits[0].numpy(), rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_the_features(tiny):
    data = datasets.shapes(2, 9, 40)
    a = embeddings.extract(tiny, data, batch_size=1)
    b = embeddings.extract(tiny, data, batch_size=8)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)


def test_hooks_removed_after_an_error(tiny, monkeypatch):
    data = datasets.shapes(0, 4, 40)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny.module[0], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        embeddings.extract(tiny, data)
    assert hooks.count(tiny.module) == 0


def test_bad_settings_are_refused(tiny):
    data = datasets.shapes(0, 4, 40)
    with pytest.raises(InvalidInputError, match="batch size"):
        embeddings.extract(tiny, data, batch_size=0)
    with pytest.raises(InvalidInputError, match="precision"):
        embeddings.extract(tiny, data, precision="int3")
    with pytest.raises(InvalidInputError, match="GPU only"):
        embeddings.extract(tiny, data, precision="fp16")


def test_precisions_offered_on_cpu():
    offered = embeddings.precisions("cpu")
    assert offered[:2] == ("auto", "fp32")
    assert ("bf16" in offered) == embeddings.cpu_bf16_supported()
    assert embeddings.resolve_precision("auto", torch.device("cpu")) is None  # fp32: bf16 only when chosen


def test_pca_and_trustworthiness_of_separated_clusters():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(c * 5, 1, (40, 20)) for c in range(3)]).astype(np.float32)
    points = embeddings.pca(features)
    assert points.shape == (120, 2) and points.dtype == np.float32
    assert embeddings.trustworthiness(features, points) > 0.9
    with pytest.raises(InvalidInputError, match="NaN"):
        embeddings.pca(np.full((5, 3), np.nan))


def test_tsne_of_digits_features_is_trustworthy():
    data, extracted = digits_features()
    assert extracted.features.shape == (DIGITS, 1280)
    steps = []
    points = embeddings.tsne(extracted.features, seed=0, on_progress=lambda f, m: steps.append(m))
    assert points.shape == (DIGITS, 2) and np.isfinite(points).all()
    assert embeddings.trustworthiness(extracted.features, points) >= 0.9
    assert steps[-1] == "t-SNE done"


def test_tsne_small_sets_and_bad_settings():
    rng = np.random.default_rng(1)
    assert embeddings.tsne(rng.normal(size=(12, 5)), iterations=300).shape == (12, 2)  # perplexity clipped
    with pytest.raises(InvalidInputError, match="Perplexity"):
        embeddings.tsne(rng.normal(size=(20, 5)), perplexity=0)
    with pytest.raises(InvalidInputError, match="at least 5"):
        embeddings.tsne(rng.normal(size=(3, 5)))


def test_stop_ends_extraction_between_batches(tiny):
    data = datasets.shapes(0, 12, 48)
    batches = []

    def on_progress(fraction, message):
        if fraction > 0:
            batches.append(fraction)

    with pytest.raises(Cancelled, match="stopped after 4 of 12 images"):
        embeddings.extract(tiny, data, batch_size=4, precision="fp32", on_progress=on_progress,
                           should_stop=lambda: len(batches) >= 1)
    assert len(batches) == 1 and hooks.count(tiny.module) == 0


def test_stop_ends_tsne_at_the_next_callback():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8)).astype(np.float32)
    steps = []
    with pytest.raises(Cancelled, match="t-SNE was stopped"):
        embeddings.tsne(features, perplexity=10, iterations=750, on_progress=lambda f, m: steps.append(f),
                        should_stop=lambda: len(steps) >= 3)
    assert len(steps) == 3  # "finding neighbours", then two callbacks: the optimisation ended at the second


def test_tsne_of_5000_points_takes_the_fft_path_and_stays_trustworthy():
    """The FFT path (5,000 points and more, coarser grid cells) must keep the map faithful."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (10, 50))
    features = (centres[rng.integers(0, 10, 5000)] + rng.normal(0, 1, (5000, 50))).astype(np.float32)
    points = embeddings.tsne(features, seed=0, iterations=500)
    assert points.shape == (5000, 2) and np.isfinite(points).all()
    assert embeddings.trustworthiness(features, points, limit=2000) > 0.95


@pytest.mark.slow
def test_spawned_decoding_workers_give_the_same_features(lite0, tmp_path, monkeypatch):
    """Decoding in spawned DataLoader workers (the in-process data path that feeds a GPU) changes nothing."""
    # an AppTest earlier in this process leaves its page installed as __main__, which a spawned worker would run
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    dataset = datasets.shapes(n=12, size=64)
    for picture, file in zip(dataset.images, dataset.files, strict=True):
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        picture.save(tmp_path / file)
    folder = datasets.from_folder(tmp_path)  # files: what a worker process reads itself
    alone = embeddings.extract(lite0, folder, batch_size=4, precision="fp32", size=96, workers=0)
    spawned = embeddings.extract(lite0, folder, batch_size=4, precision="fp32", size=96, workers=2, context="spawn")
    np.testing.assert_allclose(spawned.features, alone.features, rtol=1e-5, atol=1e-5)
