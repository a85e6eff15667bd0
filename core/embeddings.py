"""Penultimate features of a dataset, batched, and their 2-D maps (PCA, t-SNE) with a trust score.

Features are the input of the backbone's final Linear (`spec.head`), captured with a hook while
the whole network runs, so the logits come for free (zero-shot predictions use them).
"""

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from core import hooks, preprocessing, runtime
from core.datasets import Dataset
from core.errors import Cancelled, InvalidInputError
from core.models import LoadedModel
from core.runtime import HalvingBatches

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Embeddings:
    """Features of every image of a dataset, in the dataset's order."""

    features: np.ndarray  # (N, D) float32: the input of the final Linear
    logits: np.ndarray | None  # (N, classes) float32 from the backbone's own head, or None
    model: str
    precision: str  # "fp32", "bf16" or "fp16": what actually ran
    image_size: int  # side of the square every image was resized to (whole image, no crop)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.features) / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class AutoPrecision:
    """What 'auto' runs for one kind of dataset job on a CPU that runs bf16 natively, and why."""

    cpu_bf16: str  # "bf16" or "fp32": on a CPU with native bf16 (without it, always fp32: emulated bf16 is slower)
    why: str  # the measurement behind it, in words for the page and the CLI


#: 'auto' per job kind on a CPU with native bf16 (AVX-512 BF16 or AMX, detected at run time), decided from
#: `bench/precision.py` (EfficientNet-Lite0 with its weights and ResNet-50, digits and shapes, 256 images each, 128 px).
#: The bars: features cosine >= 0.99, predicted classes agreeing on >= 99% of images, maps Spearman >= 0.98. bf16
#: was 1.6-2.0x (Lite0) and 2.7-4.0x (ResNet-50) faster; features and maps passed, predictions did not. On a GPU,
#: 'auto' is autocast (bf16 where supported, else fp16) for every kind.
AUTO = {
    "features": AutoPrecision("fp32", "bf16 kept the features (cosine >= 0.992) but changed the linear probe's class "
                                      "of 2.6-7.5% of held-out images (Lite0, digits and shapes), so the confusion "
                                      "matrix and metrics would move"),
    "audit": AutoPrecision("fp32", "bf16 kept the maps (Spearman >= 0.996) but changed the predicted class of "
                                   "4.7-5.9% of images (Lite0, digits and shapes), so correct/wrong and the galleries "
                                   "would move"),
}


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX); without it, bf16 autocast is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precisions(device: torch.device | str) -> tuple[str, ...]:
    """The precisions worth offering on `device` ("auto" picks the fastest safe one)."""
    device = torch.device(device)
    if device.type == "cuda":
        return ("auto", "fp32", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("auto", "fp32", "fp16")
    return ("auto", "fp32", "bf16") if cpu_bf16_supported() else ("auto", "fp32")


def resolve_precision(precision: str, device: torch.device, kind: str = "features") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for fp32; 'auto' as `AUTO[kind]` says."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device.type != "cpu":
            return runtime.autocast_dtype(device)
        return torch.bfloat16 if AUTO[kind].cpu_bf16 == "bf16" and cpu_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise InvalidInputError("fp16 runs on a GPU only; on the CPU choose fp32 or bf16.")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def auto_note(kind: str, device: torch.device | str) -> str:
    """What 'auto' runs for `kind` on `device` and why, in one sentence (the page's help, the CLI's note)."""
    device = runtime.resolve_device(device) if isinstance(device, str) else device
    if device.type != "cpu":
        dtype = runtime.autocast_dtype(device)
        if kind == "audit" and dtype == torch.float16:  # audit.plan: fp16 gradients can underflow to blank maps
            return ("auto: fp32 for the gradient methods on this GPU (it has no bf16, and fp16 gradients can "
                    "underflow to blank maps); float16 autocast for the others.")
        return f"auto: {str(dtype).removeprefix('torch.')} autocast on the GPU."
    if not cpu_bf16_supported():
        return "auto: fp32 (this CPU has no native bf16, where bf16 is slower)."
    choice = AUTO[kind]
    return f"auto: {choice.cpu_bf16} on this CPU with native bf16: {choice.why}."


def tensors(model: LoadedModel, dataset: Dataset, *, size: int | None = None,
            normalise: bool = True) -> preprocessing.Squares:
    """The torch Dataset `extract` reads: each image resized whole to a (3, S, S) square (no crop),
    normalised as the spec says, or uint8 pixels when `normalise` is False (see preprocessing.Squares)."""
    return preprocessing.Squares(dataset.images, model.spec, size, normalised=normalise)


def extract(
    model: LoadedModel,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    precision: str = "auto",
    workers: int | None = None,
    context: str | None = None,
    size: int | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Embeddings:
    """Penultimate features (and logits) of every image, through a DataLoader.

    Images are resized whole to `size` x `size` (default: the spec's input size). On a GPU: pinned
    memory, channels_last and autocast; on a CPU, channels_last input in fp32 ("bf16" is offered where
    the processor runs it natively). `workers` decode in parallel processes (default: several on a GPU, none on
    a CPU), started by `context` ("spawn": fresh interpreters, safe beside threads; default: the platform's).
    The model's lock is held per batch, so other sessions interleave.
    Thread-safe; leaves no hooks on the model.

    Raises:
        InvalidInputError: an empty dataset, a bad batch size or precision, another size for a fixed-size network.
        Cancelled: should_stop() became true (polled between batches).
        DeviceError: the GPU ran out of memory even at batch size 1 (larger batches are halved and retried).
    """
    if len(dataset) == 0:
        raise InvalidInputError("The dataset is empty: nothing to extract.")
    if not 1 <= batch_size <= 1024:
        raise InvalidInputError(f"The batch size must be between 1 and 1024, got {batch_size}.")
    report = on_progress or (lambda fraction, message: None)
    device = model.device
    dtype = resolve_precision(precision, device)
    cuda = device.type == "cuda"
    if workers is None:
        # On a small CPU host the forward pass uses every core; a worker process only pays off on a GPU.
        # Resizing on the CPU feeds a GPU only with several processes (measured on an H200 host: 4 workers
        # gave 0.14 of the model's throughput); a CPU host's forward pass uses every core itself.
        workers = min(8, max(1, runtime.cores() - 1)) if cuda else 0
    source = tensors(model, dataset, size=size, normalise=False)  # refuses a fixed-size network at another size
    loader = DataLoader(
        source, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=cuda,
        persistent_workers=False, prefetch_factor=4 if workers else None,
        multiprocessing_context=context if workers else None,
    )
    features: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    done = 0
    started = time.perf_counter()
    report(0.0, f"Extracting features of {len(dataset)} images")
    halving = HalvingBatches(batch_size, on_halve=lambda old, new: report(
        done / len(dataset), f"The GPU ran out of memory at batch {old}: continuing at {new}"))

    def forward(chunk: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return batch_features(model, chunk, dtype)

    for batch in loader:
        if should_stop is not None and should_stop():
            raise Cancelled(f"Feature extraction was stopped after {done} of {len(dataset)} images.")
        for chunk_features, chunk_logits in halving.run(batch, forward):
            features.append(chunk_features)
            logits.append(chunk_logits)
        done += len(batch)
        rate = done / max(time.perf_counter() - started, 1e-9)
        report(done / len(dataset), f"{done} of {len(dataset)} images ({rate:.0f} images/s)")
    seconds = time.perf_counter() - started
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return Embeddings(
        np.concatenate(features).astype(np.float32), np.concatenate(logits).astype(np.float32),
        model.name, names[dtype], source.size, seconds,
    )


def batch_features(model: LoadedModel, pixels: torch.Tensor, dtype: torch.dtype | None) -> tuple[np.ndarray, np.ndarray]:
    """One batch of (B, 3, S, S) uint8 squares -> ((B, D) float32 features, (B, classes) float32 logits).

    The one per-batch step of feature extraction: `extract` runs it over a DataLoader, core.distributed in
    each model actor of a Ray Data pipeline. `dtype`: the autocast dtype (`resolve_precision`), None for fp32.
    """
    device = model.device
    chunk = preprocessing.normalise(pixels.to(device, non_blocking=device.type == "cuda"), model.spec)
    chunk = chunk.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    head = model.spec.head
    with model.lock, hooks.capture(model.module, [head], inputs=True) as captured, torch.inference_mode(), autocast:
        output = model.module(chunk)
    return captured[head].float().flatten(1).cpu().numpy(), output.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# 2-D maps


def _checked(features: np.ndarray, minimum: int = 3) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < minimum:
        raise InvalidInputError(f"Need at least {minimum} feature rows (N, D) for a map, got shape {features.shape}.")
    if not np.isfinite(features).all():
        raise InvalidInputError("The features contain NaN or infinite values; extract them again in fp32.")
    return features


def pca(features: np.ndarray, *, dims: int = 2, seed: int = 0) -> np.ndarray:
    """(N, dims) float32 principal components of (N, D) features (under a second for 10k x 1280)."""
    from sklearn.decomposition import PCA

    features = _checked(features)
    dims = min(dims, features.shape[1], len(features))
    return PCA(n_components=dims, random_state=seed).fit_transform(features).astype(np.float32)


def tsne(
    features: np.ndarray,
    *,
    perplexity: float = 30.0,
    iterations: int = 750,
    pca_dims: int = 50,
    seed: int = 0,
    threads: int | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(N, 2) float32 t-SNE map with openTSNE (Barnes-Hut below 5,000 points, FFT above; PCA initialisation).

    The features are first reduced to `pca_dims` with PCA, as is standard. `iterations` counts the
    250 early-exaggeration steps too (as scikit-learn's `max_iter` does). The perplexity is clipped
    to (N - 1) / 3 for small sets. should_stop() is polled every 50 iterations: Cancelled when true.
    """
    features = _checked(features, minimum=5)
    if not 1 <= perplexity <= 500:
        raise InvalidInputError(f"Perplexity must be between 1 and 500, got {perplexity}.")
    if not 260 <= iterations <= 10_000:
        raise InvalidInputError(f"Iterations must be between 260 and 10000, got {iterations}.")
    report = on_progress or (lambda fraction, message: None)
    perplexity = float(min(perplexity, (len(features) - 1) / 3))
    reduced = pca(features, dims=pca_dims, seed=seed) if features.shape[1] > pca_dims else features
    total = iterations

    class _Callback:
        step = 0

        def __call__(self, iteration, error, embedding):
            self.step += 50
            report(min(self.step / total, 0.99), f"t-SNE iteration {min(self.step, total)} of {total}")
            return bool(should_stop and should_stop())  # True ends openTSNE's optimisation

    report(0.0, "t-SNE: finding neighbours")
    embedding = _fit_tsne(reduced, perplexity=perplexity, iterations=iterations, seed=seed, threads=threads,
                          callbacks=_Callback())
    if should_stop is not None and should_stop():
        raise Cancelled("t-SNE was stopped before it finished.")
    report(1.0, "t-SNE done")
    return np.asarray(embedding, dtype=np.float32)


def _fit_tsne(reduced: np.ndarray, *, perplexity: float, iterations: int, seed: int, threads: int | None,
              callbacks=None):
    """openTSNE's fitted TSNEEmbedding of `reduced` (its `transform` places new points on the map)."""
    from openTSNE import TSNE

    exaggeration = 250
    threads = threads or max(1, torch.get_num_threads())
    # FFT from 5,000 points (7.5 s against Barnes-Hut's 9.8 s and scikit-learn's 14 s at 5,000 here), with
    # grid cells two units wide instead of one: in the expanded second phase the grid, not the neighbours,
    # is the cost. 10,000 points took 12.9 s instead of 28.9 s on 2 cores, trustworthiness 0.9839 against
    # 0.9847 (scikit-learn's TSNE: 0.9852 in 33 s).
    gradient = "fft" if len(reduced) >= 5000 else "bh"
    return TSNE(
        perplexity=perplexity, n_iter=iterations - exaggeration, early_exaggeration_iter=exaggeration,
        initialization="pca", negative_gradient_method=gradient, ints_in_interval=2, n_jobs=threads,
        random_state=seed, callbacks=callbacks, callbacks_every_iters=50,
    ).fit(reduced)


def tsne_sampled(features: np.ndarray, *, sample: int = 5000, perplexity: float = 30.0, iterations: int = 750,
                 pca_dims: int = 50, seed: int = 0, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) float32 map, (N,) bool: fitted) of many points: t-SNE on a seeded sample of `sample` rows, the others
    placed on that map by openTSNE's `transform` (each at its neighbours' place among the fitted points, then
    optimised with the fitted ones held still). At most `sample` rows: the plain `tsne` of them all."""
    features = _checked(features, minimum=5)
    fitted = np.ones(len(features), dtype=bool)
    if len(features) <= sample:
        return tsne(features, perplexity=perplexity, iterations=iterations, pca_dims=pca_dims, seed=seed,
                    threads=threads), fitted
    from sklearn.decomposition import PCA

    rows = np.sort(np.random.default_rng(seed).choice(len(features), sample, replace=False))
    fitted[:] = False
    fitted[rows] = True
    reduced = features
    if features.shape[1] > pca_dims:
        reduced = PCA(n_components=pca_dims, random_state=seed).fit(features[rows]).transform(features)
    reduced = reduced.astype(np.float32)
    perplexity = float(min(perplexity, (sample - 1) / 3))
    embedding = _fit_tsne(reduced[rows], perplexity=perplexity, iterations=iterations, seed=seed, threads=threads)
    points = np.zeros((len(features), 2), np.float32)
    points[rows] = np.asarray(embedding, dtype=np.float32)
    points[~fitted] = np.asarray(embedding.transform(reduced[~fitted]), dtype=np.float32)
    return points, fitted


def trustworthiness(
    features: np.ndarray, points: np.ndarray, *, neighbours: int = 10, limit: int = 3000, seed: int = 0
) -> float:
    """scikit-learn's trustworthiness of a 2-D map in [0, 1] (1: every map neighbour is a true neighbour).

    Above `limit` points it is computed on a seeded random subset of `limit` rows (the exact score
    needs an N x N distance matrix).
    """
    from sklearn.manifold import trustworthiness as score

    features = _checked(features)
    points = np.asarray(points, dtype=np.float32)
    if len(points) != len(features):
        raise InvalidInputError(f"{len(points)} map points for {len(features)} feature rows.")
    if len(features) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(len(features), limit, replace=False))
        features, points = features[rows], points[rows]
    neighbours = min(neighbours, (len(features) - 1) // 2 - 1)
    if neighbours < 1:
        raise InvalidInputError("Need at least 5 points to score a map.")
    return float(score(features, points, n_neighbors=neighbours))
