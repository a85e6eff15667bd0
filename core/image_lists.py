"""Lazy sequences of pictures that datasets hold instead of decoded images, public so that other modules
(core.processes hands datasets to a training process) can see what a set holds and pass it on cheaply.

`LazyImages` decodes compressed bytes (or files) on access; `LazyMasks` does the same for object masks, each
at its image's size; `Subset` is rows of another sequence.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core import images
from core.errors import InvalidInputError

MAX_SIDE = 512  # dataset images are decoded at most this large: models see them at 224-260 px


class LazyImages(Sequence):
    """Decodes image bytes on access: the set holds compressed bytes, never every decoded picture."""

    def __init__(self, blobs: Sequence[bytes] | Sequence[Path]) -> None:
        self.blobs = list(blobs)

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return images.decode(_read(self.blobs[index]), max_side=MAX_SIDE).image


def _read(blob: bytes | Path) -> bytes:
    if isinstance(blob, Path):
        try:
            return blob.read_bytes()
        except OSError as error:
            raise InvalidInputError(f"Cannot read {blob}: {error.strerror or error}") from None
    return blob


class LazyMasks(Sequence):
    """Object masks decoded on access: mask `i` (an image file, the object light on a dark background) as an
    (H, W) bool array at the size of `pictures[i]`, the object where the mask is brighter than mid-grey."""

    def __init__(self, blobs: Sequence[bytes] | Sequence[Path], pictures: Sequence) -> None:
        self.blobs, self.pictures = list(blobs), pictures

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        mask = images.decode(_read(self.blobs[index]), max_side=MAX_SIDE).image.convert("L")
        size = self.pictures[index].size
        if mask.size != size:
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return np.asarray(mask) > 127


class Subset(Sequence):
    """The rows `rows` of `inner`, in that order, read through on access."""

    def __init__(self, inner: Sequence, rows: list[int]) -> None:
        self.inner, self.rows = inner, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.inner[self.rows[index]]
