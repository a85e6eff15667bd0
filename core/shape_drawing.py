"""Drawing the shapes set: a random shape on a textured background, and its ground-truth mask; or two shapes."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.errors import InvalidInputError


def draw(rng: np.random.Generator, shape: str, size: int) -> tuple[Image.Image, np.ndarray]:
    """(RGB picture, (size, size) bool mask) of one `shape` in a random colour, size, place and angle."""
    background = _texture(rng, size)
    colour = _colour(rng, background)
    radius = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(radius + 2, size - radius - 2, 2)
    mask = _mask(shape, size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    picture = background.copy()
    picture[mask] = colour
    return Image.fromarray(picture, "RGB"), mask


PAIR_RADIUS = (0.13, 0.19)  # of the picture's side: two shapes of the single set's smaller sizes fit side by side


def draw_pair(rng: np.random.Generator, shapes: tuple[str, str], size: int, *,
              gap: float = 0.15) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """(RGB picture, mask of shapes[0], mask of shapes[1]): two shapes on one textured background.

    Each shape gets its own random colour, angle and radius (`PAIR_RADIUS` of the side); their centres are drawn
    until the shapes' outer circles lie at least `gap` x size apart, so the masks are disjoint and no pixel is
    within the pointing game's tolerance (15 px per 224 px) of both. Deterministic from `rng`.
    """
    if len(shapes) != 2:
        raise InvalidInputError(f"A pair is two shapes, got {len(shapes)}.")
    background = _texture(rng, size)
    radii = rng.uniform(*PAIR_RADIUS, 2) * size
    reach = radii * 1.15  # the outer circle of every outline (triangle and star reach 1.15 r)
    for _ in range(1000):
        centres = [rng.uniform(r + 2, size - r - 2, 2) for r in reach]
        if np.hypot(*(centres[0] - centres[1])) >= reach.sum() + gap * size:
            break
    else:
        raise InvalidInputError(f"Two shapes do not fit {gap:.2f} x {size} px apart in a {size} px picture.")
    picture = background.copy()
    masks = []
    for shape, radius, (cx, cy) in zip(shapes, radii, centres, strict=True):
        colour = _colour(rng, background)
        mask = _mask(shape, size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        picture[mask] = colour
        masks.append(mask)
    return Image.fromarray(picture, "RGB"), masks[0], masks[1]


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    while np.abs(np.array(colour) - background.mean(axis=(0, 1))).sum() < 120:  # keep the shape visible
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return colour


def _mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon(_outline(shape, cx, cy, radius, angle), fill=255)
    return np.asarray(mask_image) > 127


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(count: int, radii: Sequence[float]) -> list[tuple[float, float]]:
        points = []
        for k in range(count * len(radii)):
            t = angle + 2 * np.pi * k / (count * len(radii))
            rr = radii[k % len(radii)]
            points.append((cx + rr * np.cos(t), cy + rr * np.sin(t)))
        return points

    if shape == "square":
        return ring(4, [r])
    if shape == "triangle":
        return ring(3, [r * 1.15])
    if shape == "star":
        return ring(5, [r * 1.15, r * 0.45])
    if shape == "hexagon":
        return ring(6, [r])
    if shape == "cross":
        w = r * 0.35
        local = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + px * c - py * s, cy + px * s + py * c) for px, py in local]
    raise InvalidInputError(f"Unknown shape '{shape}'.")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a colour gradient, stripes or blobs, plus grain."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 215, 3)
    kind = rng.integers(0, 3)
    if kind == 0:
        pattern = np.sin((x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) * rng.uniform(8, 30))
    elif kind == 1:
        pattern = (x - rng.uniform()) * rng.uniform(-2, 2) + (y - rng.uniform()) * rng.uniform(-2, 2)
    else:
        noise = Image.fromarray(np.uint8(rng.integers(0, 256, (size // 8, size // 8))), "L")
        pattern = np.asarray(noise.resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))) / 128.0 - 1
    tint = rng.uniform(-40, 40, 3)
    picture = base + pattern[..., None] * tint + rng.normal(0, 8, (size, size, 3))
    return np.uint8(np.clip(picture, 0, 255))
