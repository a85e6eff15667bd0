"""Noisy linear imputation (ROAD): removed pixels refilled from their neighbours, plus a little noise.

Rong, Leemann, Borisov, Kasneci, Kasneci (2022), "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML. Each removed pixel becomes the weighted mean of its 8 neighbours (1/6 for
the 4 direct ones, 1/12 for the diagonals), solved jointly for all removed pixels as one sparse linear
system per image (the same for the three channels), then Gaussian noise of standard deviation `noise`
is added to the filled values. Filling from the neighbours, rather than with black or grey, keeps the
image free of the sharp hole edges that tell a classifier where pixels were removed.

The equations are pytorch-grad-cam's `NoisyLinearImputer` (taken from the paper's code), built here
with vectorised COO assembly and solved with a symmetric-mode LU factorisation: the same solution
(tests/test_imputation.py compares them) several times faster, with a seeded generator for the noise.
"""

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.sparse import coo_matrix, diags
from scipy.sparse.linalg import splu

from core import runtime

# (row offset, column offset), weight: as in the ROAD paper's code
NEIGHBOURS = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)
NOISE = 0.01  # the paper's default, in the units of the (normalised) input


def system(image: np.ndarray, removed: np.ndarray):
    """The sparse system A x = b whose solution fills the removed pixels.

    Args:
        image: (C, H, W) float array.
        removed: (H, W) bool, True where a pixel is removed.
    Returns:
        (A, b): A (N, N) csc sparse, b (N, C), N the removed pixels in row-major order.
    """
    height, width = removed.shape
    flat = image.reshape(image.shape[0], -1)
    known = ~removed.ravel()
    unknown = np.flatnonzero(~known)
    index = np.full(known.size, -1, dtype=np.int64)
    index[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    weight_sum = np.zeros(unknown.size)
    b = np.zeros((unknown.size, flat.shape[0]))
    entries_i, entries_j, entries_w = [], [], []
    for (dy, dx), weight in NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        equation = np.flatnonzero(inside)
        neighbour = y[inside] * width + x[inside]
        weight_sum[equation] += weight
        given = known[neighbour]
        b[equation[given]] -= weight * flat[:, neighbour[given]].T
        entries_i.append(equation[~given])
        entries_j.append(index[neighbour[~given]])
        entries_w.append(np.full(int((~given).sum()), weight))
    n = unknown.size
    off = coo_matrix((np.concatenate(entries_w), (np.concatenate(entries_i), np.concatenate(entries_j))), shape=(n, n))
    return (off + diags(-weight_sum)).tocsc(), b


def impute(image: np.ndarray, removed: np.ndarray, *, noise: float = NOISE,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """`image` with the `removed` pixels filled by noisy linear imputation (a new float32 array).

    Args:
        image: (C, H, W) float array (not modified).
        removed: (H, W) bool, True where a pixel is removed; at least one pixel must stay.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    if not removed.any():
        return out
    if removed.all():
        raise ValueError("Imputation needs at least one pixel that is kept.")
    a, b = system(image, removed)
    # A is symmetric and weakly diagonally dominant: no pivoting needed, and a symmetric ordering fills less
    solved = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}).solve(b)
    if noise:
        solved = solved + noise * (rng or np.random.default_rng()).standard_normal(solved.shape)
    flat = out.reshape(out.shape[0], -1)
    flat[:, removed.ravel()] = solved.T  # boolean indexing is row-major, as the equations of `system`
    return out


def impute_many(cases: Iterable[tuple[np.ndarray, np.ndarray, int | Sequence[int]]], *, noise: float = NOISE,
                workers: int | None = None) -> Iterator[np.ndarray]:
    """impute() for many (image, removed, seed) cases, in order, on `workers` threads (default: the cores).

    The sparse LU releases the GIL, so the threads run in parallel. Each case's noise comes from its own seed (anything np.random.default_rng takes).
    """
    def one(case):
        image, removed, seed = case
        return impute(image, removed, noise=noise, rng=np.random.default_rng(seed))

    workers = workers or runtime.cores()
    if workers == 1:
        yield from map(one, cases)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="visionlens-impute") as pool:
        yield from pool.map(one, cases)
