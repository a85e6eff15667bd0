"""12-megapixel phone-like JPEGs, all different, built in memory from the sample photos (for tests and bench/).

Like /work/shared/realistic/make_inputs.py's phones/ (4032 x 3024, quality 92, EXIF orientation), but as many
distinct photos as asked: each gets its own crop, brightness, grain and orientation, so no two share a cache
entry (the caches key images by the sha256 of their bytes).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
PHONE = (4032, 3024)
_ORIENTATIONS = (1, 6, 3, 8)


def phone_jpeg(index: int, *, size: tuple[int, int] = PHONE, quality: int = 92) -> bytes:
    """Photo number `index` (deterministic): a sample photo cropped, scaled up to `size`, with grain."""
    rng = np.random.default_rng(index)
    names = sorted(p.stem for p in SAMPLES.glob("*.jpg"))
    source = Image.open(SAMPLES / f"{names[index % len(names)]}.jpg").convert("RGB")
    w, h = source.size
    box = (int(rng.integers(0, w // 8)), int(rng.integers(0, h // 8)),
           w - int(rng.integers(0, w // 8)), h - int(rng.integers(0, h // 8)))
    orientation = _ORIENTATIONS[(index // len(names)) % len(_ORIENTATIONS)]
    stored = size if orientation in (1, 3) else size[::-1]  # rotated 90 degrees: stored portrait
    picture = source.crop(box).resize(stored, Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.int16)
    grain = rng.integers(-6, 7, size=(stored[1] // 4, stored[0] // 4, 1), dtype=np.int16)
    pixels = pixels + np.repeat(np.repeat(grain, 4, axis=0), 4, axis=1) + int(rng.integers(-20, 21))
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F], exif[0x0110] = "VisionLens test", f"Phone {index}"  # Make, Model
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def write(folder: Path, count: int, *, start: int = 0) -> list[Path]:
    """`count` photos as phone_<i>.jpg files in `folder` (kept when they exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"phone_{index:03d}.jpg"
        if not path.exists():
            path.write_bytes(phone_jpeg(index))
        paths.append(path)
    return paths
