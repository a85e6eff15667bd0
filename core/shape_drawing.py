"""Drawing the shapes set: a random shape on a textured background, and its ground-truth mask."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.errors import InvalidInputError


def draw(rng: np.random.Generator, shape: str, size: int) -> tuple[Image.Image, np.ndarray]:
    """(RGB picture, (size, size) bool mask) of one `shape` in a random colour, size, place and angle."""
    background = _texture(rng, size)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    while np.abs(np.array(colour) - background.mean(axis=(0, 1))).sum() < 120:  # keep the shape visible
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    radius = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(radius + 2, size - radius - 2, 2)
    angle = rng.uniform(0, 2 * np.pi)
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon(_outline(shape, cx, cy, radius, angle), fill=255)
    mask = np.asarray(mask_image) > 127
    picture = background.copy()
    picture[mask] = colour
    return Image.fromarray(picture, "RGB"), mask


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
