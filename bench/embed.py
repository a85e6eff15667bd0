"""Dataset feature extraction and t-SNE speed, measured in one run.

Prints:
  (a) extraction throughput through the real data path (zip of JPEGs -> datasets.from_zip -> DataLoader
      -> resize/normalise -> forward with the head hook) / model-only throughput on the same images
      pre-loaded as batches (same model, batch size, precision, memory layout)        (target >= 0.85)
  (b) our t-SNE time / scikit-learn's default TSNE time on the same 10,000 x 512 features, both after
      the same PCA to 50 dims, all cores; with the trustworthiness of both              (target <= 0.5,
      trustworthiness within 0.01)
Best of interleaved repeats for (a); one run each for (b) (each takes tens of seconds).

Usage: python bench/embed.py [--model efficientnet_lite0] [--images 256] [--points 10000] [--features file.npy]
"""

import argparse
import io
import os
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import datasets, embeddings, hooks, models, runtime  # noqa: E402


def _zip_of_jpegs(count: int) -> bytes:
    shapes = datasets.shapes(0, count, 160)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for picture, file in zip(shapes.images, shapes.files, strict=True):
            encoded = io.BytesIO()
            picture.save(encoded, format="JPEG", quality=90)
            archive.writestr(file.replace(".png", ".jpg"), encoded.getvalue())
    return buffer.getvalue()


def extraction(model_name: str, count: int, batch_size: int, repeats: int) -> None:
    model = models.load(model_name, device="auto")
    data = datasets.from_zip(_zip_of_jpegs(count))
    precision = "auto"
    dtype = embeddings.resolve_precision(precision, model.device)
    source = embeddings.tensors(model, data)
    batches = [torch.stack([source[i] for i in range(s, min(s + batch_size, len(source)))])
               for s in range(0, len(source), batch_size)]
    autocast = torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None)

    def model_only() -> float:
        started = time.perf_counter()
        for batch in batches:
            batch = batch.to(model.device).contiguous(memory_format=torch.channels_last)
            with model.lock, hooks.capture(model.module, [model.spec.head], inputs=True), torch.inference_mode(), autocast:
                model.module(batch)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return len(source) / (time.perf_counter() - started)

    def real_path() -> float:
        result = embeddings.extract(model, data, batch_size=batch_size, precision=precision)
        return result.images_per_second

    model_only()  # warm-up (allocator, oneDNN kernels)
    ours, baseline = [], []
    for _ in range(repeats):
        ours.append(real_path())
        baseline.append(model_only())
    print(f"(a) {model.spec.title}, {count} JPEGs from a zip, batch {batch_size}, "
          f"precision {'fp32' if dtype is None else dtype}, {model.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"    real data path: {max(ours):.1f} images/s (runs: {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"    model only:     {max(baseline):.1f} images/s (runs: {', '.join(f'{v:.1f}' for v in baseline)})")
    print(f"    ratio (best of each): {max(ours) / max(baseline):.3f}   target >= 0.85")


def _clustered(points: int, dims: int, seed: int = 0) -> np.ndarray:
    """Synthetic penultimate-like features: 10 classes, each a low-rank Gaussian, ReLU-ed (non-negative)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, points)
    centres = rng.normal(0, 1.0, (10, dims))
    bases = rng.normal(0, 0.6, (10, 8, dims))
    latent = rng.normal(0, 1, (points, 8))
    features = centres[labels] + np.einsum("nk,nkd->nd", latent, bases[labels]) + rng.normal(0, 0.3, (points, dims))
    return np.maximum(features, 0).astype(np.float32)


def tsne(points: int, features_file: str | None) -> None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.load(features_file).astype(np.float32) if features_file else _clustered(points, 512)
    features = features[:points]
    reduced = PCA(n_components=50, random_state=0).fit_transform(features).astype(np.float32)
    threads = torch.get_num_threads()

    started = time.perf_counter()
    ours = embeddings.tsne(reduced, seed=0, threads=threads)
    ours_seconds = time.perf_counter() - started

    started = time.perf_counter()
    theirs = TSNE(n_components=2, init="pca", random_state=0, n_jobs=-1).fit_transform(reduced)
    theirs_seconds = time.perf_counter() - started

    trust_ours = embeddings.trustworthiness(reduced, ours, limit=4000)
    trust_theirs = embeddings.trustworthiness(reduced, theirs, limit=4000)
    source = features_file or "synthetic clustered features (10 classes, low-rank, ReLU)"
    print(f"(b) t-SNE of {len(reduced)} x {features.shape[1]} features ({source}), PCA to 50 first, {threads} threads")
    print(f"    ours (openTSNE, 750 iterations incl. 250 early exaggeration): {ours_seconds:.1f} s, "
          f"trustworthiness {trust_ours:.4f}")
    print(f"    scikit-learn TSNE defaults (1000 iterations):                 {theirs_seconds:.1f} s, "
          f"trustworthiness {trust_theirs:.4f}")
    print(f"    time ratio: {ours_seconds / theirs_seconds:.3f}   target <= 0.5; "
          f"trustworthiness difference {trust_ours - trust_theirs:+.4f}   target within 0.01 "
          "(both on the same seeded 4,000-point subset)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--features", default=None, help="a (N, D) .npy of real features instead of synthetic ones")
    parser.add_argument("--skip", choices=("extraction", "tsne"), default=None)
    args = parser.parse_args()
    runtime.configure_threads()
    if args.skip != "extraction":
        extraction(args.model, args.images, args.batch, args.repeats)
    if args.skip != "tsne":
        tsne(args.points, args.features)


if __name__ == "__main__":
    main()
