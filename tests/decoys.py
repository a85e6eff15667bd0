"""Shapes images that are right for the wrong reasons, by construction: a known fraction of the shapes set has
its object moved, the same size and colour, into the top-left corner, with a high-contrast striped band along the bottom and right borders, the kind of border artefact (a
watermark, a frame, a scanner edge) a model can latch onto. The heat-outside-the-object ranking of an audit
should put these images first."""

import numpy as np
from PIL import Image

from core import datasets


def decoy_shapes(n: int = 64, *, fraction: float = 0.25, size: int = 128, seed: int = 0):
    """(Dataset, (N,) bool is_decoy): the shapes set with round(fraction * n) decoys, masks moved with them."""
    base = datasets.shapes(seed=seed, n=n, size=size)
    rng = np.random.default_rng(seed + 1)
    decoy = np.zeros(n, dtype=bool)
    decoy[rng.choice(n, size=round(fraction * n), replace=False)] = True
    pictures, masks = [], []
    for image, mask, moved in zip(base.images, base.masks, decoy, strict=True):
        if not moved:
            pictures.append(image)
            masks.append(mask)
            continue
        pixels = np.asarray(image).copy()
        ys, xs = np.nonzero(mask)
        colour = pixels[ys[0], xs[0]].copy()
        pixels[mask] = np.median(pixels[~mask], axis=0).astype(np.uint8)  # the object leaves its place
        dy, dx = 2 - ys.min(), 2 - xs.min()  # ... and goes to the top-left corner, the same size
        small = np.zeros_like(mask)
        small[ys + dy, xs + dx] = True
        pixels[small] = colour
        band = size // 5
        stripes = ((np.arange(size) // 4) % 2 * 255).astype(np.uint8)
        pixels[-band:, :] = stripes[None, :, None]  # vertical stripes along the bottom
        pixels[:, -band:] = stripes[:, None, None]  # horizontal stripes along the right
        small[-band:, :] = False
        small[:, -band:] = False
        pictures.append(Image.fromarray(pixels, "RGB"))
        masks.append(small)
    dataset = datasets.Dataset("decoy shapes", pictures, base.labels, base.classes, base.files,
                               f"decoys:{seed}:{n}:{size}:{fraction}", masks)
    return dataset, decoy
