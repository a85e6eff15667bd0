"""Statistics of low-resolution heatmaps (core.audit stores one per image): how concentrated the heat is, how much
lies on the border, its centre, and with object masks how much falls on the object and whether the hottest point
does (the pointing game, as `core.localisation` scores it); how two audits' maps agree; and the resizing of maps
the audit stores and shows.
"""

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from core import localisation
from core.errors import InvalidInputError

MAP_SIDE = 28  # stored maps: 28 x 28 float16, 1.5 KB an image
BORDER = 0.125  # the border band: this fraction of the side on each edge (at 28 px, 4 px: 49% of the area)


def statistics(maps: np.ndarray, masks: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-map statistics of (N, h, w) non-negative maps, each normalised to sum 1 (an all-zero map: uniform).

    - heat_half_area: the smallest fraction of the pixels that holds half the heat (small: concentrated);
    - heat_entropy: the entropy of the heat over the pixels, divided by its maximum log(h w) (1: uniform);
    - heat_border: the share of the heat in the border band (`BORDER` of the side on each edge);
    - centroid_x, centroid_y: the heat's centre of mass, 0..1 from the left and the top;
    - with masks ((H, W) bool, any size: resized to the map): heat_in_mask, the share of the heat on the
      object (`localisation.heat_share`), and pointing_hit, whether the hottest pixel is on it
      (`localisation.pointing_hit`, its tolerance scaled to the map); NaN and False for a mask that cannot
      be decoded.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise InvalidInputError(f"Maps are (N, h, w), got shape {maps.shape}.")
    n, h, w = maps.shape
    heat = np.clip(np.nan_to_num(maps, nan=0.0), 0.0, None).reshape(n, -1)
    total = heat.sum(axis=1, keepdims=True)
    p = np.where(total > 0, heat / np.where(total > 0, total, 1.0), 1.0 / (h * w))
    ordered = -np.sort(-p, axis=1)
    half = (np.cumsum(ordered, axis=1) < 0.5).sum(axis=1) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / np.log(h * w)
    band = border_band(h, w)
    grid = p.reshape(n, h, w)
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    out = {
        "heat_half_area": (half / (h * w)).astype(np.float32),
        "heat_entropy": entropy.astype(np.float32),
        "heat_border": grid[:, band].sum(axis=1).astype(np.float32),
        "centroid_x": (grid.sum(axis=1) @ xs).astype(np.float32),
        "centroid_y": (grid.sum(axis=2) @ ys).astype(np.float32),
    }
    if masks is not None:
        if len(masks) != n:
            raise InvalidInputError(f"{len(masks)} masks for {n} maps.")
        small = [_mask_at(masks, i, h, w) for i in range(n)]
        out["heat_in_mask"] = np.array([localisation.heat_share(m, s) if s is not None else np.nan
                                        for m, s in zip(grid, small, strict=True)], dtype=np.float32)
        out["pointing_hit"] = np.array([s is not None and localisation.pointing_hit(m, s)
                                        for m, s in zip(grid, small, strict=True)], dtype=bool)
    return out


def _mask_at(masks: Sequence[np.ndarray], index: int, h: int, w: int) -> np.ndarray | None:
    """Mask `index` as a bool mask at (h, w), a cell on the object when at least half of it is; None when the
    mask is None or its file cannot be decoded (that image's heat_in_mask is NaN, its pointing_hit False)."""
    try:
        mask = masks[index]
    except InvalidInputError:
        return None
    return None if mask is None else mask_cells(mask, h, w)


def mask_cells(mask: np.ndarray, h: int = MAP_SIDE, w: int = MAP_SIDE) -> np.ndarray:
    """(h, w) bool: an (H, W) object mask at the map's size, a cell on the object when at least half of it is
    (a mask already at (h, w) is itself: a distributed task sends masks at the map's size)."""
    import cv2

    return cv2.resize(np.asarray(mask, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5


def border_band(h: int = MAP_SIDE, w: int = MAP_SIDE) -> np.ndarray:
    """(h, w) bool: the border band of `heat_border` (`BORDER` of the side on each edge, at least a pixel)."""
    band = np.zeros((h, w), dtype=bool)
    by, bx = max(1, round(BORDER * h)), max(1, round(BORDER * w))
    band[:by], band[-by:], band[:, :bx], band[:, -bx:] = True, True, True, True
    return band


def uniform_border(h: int = MAP_SIDE, w: int = MAP_SIDE) -> float:
    """The heat_border of a uniform map: the baseline a border statistic is read against."""
    return float(border_band(h, w).mean())


def upsample(small: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width) float32 in [0, 1]: a stored map (or a mean of maps) resized bilinearly, for an overlay."""
    import cv2

    return cv2.resize(np.asarray(small, dtype=np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR).clip(0.0, 1.0)


def shrink(raw: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """(N, side, side) float16 from (N, h, w) float maps in [0, 1], by area averaging."""
    import cv2

    return np.stack([cv2.resize(m.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
                     for m in raw]).clip(0.0, 1.0).astype(np.float16)


# ---------------------------------------------------------------------------------------------
# two backbones over one dataset


def agreement(first, second) -> tuple[np.ndarray, list[dict]]:
    """How much two audits (`core.audit.Audit`) of the same dataset agree on where to look.

    Returns ((N,) float32 Spearman rank correlation of each image's two maps, per dataset class
    {"class", "images", "agreement" (mean correlation), and "both_correct" where both models' classes are the
    dataset's}); a constant map correlates 0.
    """
    if first.files != second.files or not np.array_equal(first.labels, second.labels):
        raise InvalidInputError("The two audits are not of the same dataset (files or labels differ).")
    a = first.maps.reshape(len(first), -1).astype(np.float64)
    b = second.maps.reshape(len(second), -1).astype(np.float64)
    if a.shape[1] != b.shape[1]:
        b = second.maps.astype(np.float32)
        b = shrink(b, first.maps.shape[1]).reshape(len(second), -1).astype(np.float64)
    rho = np.array([_spearman(x, y) for x, y in zip(a, b, strict=True)], dtype=np.float32)
    both = first.correct & second.correct
    per_class = []
    for index, name in enumerate(first.classes):
        rows = first.labels == index
        entry = {"class": name, "images": int(rows.sum()),
                 "agreement": float(rho[rows].mean()) if rows.any() else float("nan")}
        if first.comparable and second.comparable:  # else "correct" means nothing
            entry["both_correct"] = int(both[rows].sum())
        per_class.append(entry)
    return rho, per_class


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])
