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
        return picture(_read(self.blobs[index]))

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) of `self[index]`, read from the file's header (nothing decoded)."""
        return images.decoded_size(_read(self.blobs[index]), max_side=MAX_SIDE)


def size_of(pictures: Sequence, index: int) -> tuple[int, int]:
    """(width, height) of `pictures[index]`: from the header where the pictures are files (`LazyImages`, or rows
    of them), else the picture's own size."""
    while isinstance(pictures, Subset):
        pictures, index = pictures.inner, pictures.rows[index]
    if isinstance(pictures, LazyImages):
        return pictures.size(index)
    return pictures[index].size


def picture(blob: bytes) -> Image.Image:
    """A dataset picture from its compressed bytes (`images.decode`'s checks, at most MAX_SIDE): what every
    engine decodes, in-process or in a distributed task."""
    return images.decode(blob, max_side=MAX_SIDE).image


def _read(blob: bytes | Path) -> bytes:
    if isinstance(blob, Path):
        try:
            return blob.read_bytes()
        except OSError as error:
            raise InvalidInputError(f"Cannot read {blob}: {error.strerror or error}") from None
    return blob


class LazyMasks(Sequence):
    """Object masks decoded on access: mask `i` as an (H, W) bool array at the size of `pictures[i]`.

    A mask is an image file (with `images.decode`'s limits, decoded once) read as it is stored: its alpha channel
    where it has one (the object opaque), else its grey levels; the object is where the value is above half
    the mask's own maximum, so 0/1 label PNGs, 0/255 masks and JPEG-saved masks all read right. A mask that
    cannot be decoded raises InvalidInputError (callers score that image without a mask)."""

    def __init__(self, blobs: Sequence[bytes] | Sequence[Path], pictures: Sequence) -> None:
        self.blobs, self.pictures = list(blobs), pictures

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return mask(_read(self.blobs[index]), size_of(self.pictures, index))  # the picture is not decoded


def mask(blob: bytes, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool object mask from a mask file's bytes, at the picture's (width, height) `size` (see LazyMasks).

    Raises:
        InvalidInputError: the bytes are not an image `images.decode` accepts.
    """
    with images.decode_stored(blob) as opened:  # the photo decoder's limits and checks, one decode
        channel = opened.getchannel("A") if opened.mode in ("RGBA", "LA", "PA") else opened.convert("L")
        if channel.size != tuple(size):
            channel = channel.resize(tuple(size), Image.Resampling.NEAREST)
        values = np.asarray(channel)
    top = int(values.max()) if values.size else 0
    return values > top / 2 if top > 0 else np.zeros(values.shape, dtype=bool)


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
