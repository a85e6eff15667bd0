"""Lazy sequences of pictures that datasets hold instead of decoded images, public so that other modules
(core.processes hands datasets to a training process) can see what a set holds and pass it on cheaply.

`LazyImages` decodes compressed bytes (or files) on access; `Subset` is rows of another sequence.
"""

from collections.abc import Sequence
from pathlib import Path

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
        blob = self.blobs[index]
        if isinstance(blob, Path):
            try:
                blob = blob.read_bytes()
            except OSError as error:
                raise InvalidInputError(f"Cannot read {self.blobs[index]}: {error.strerror or error}") from None
        return images.decode(blob, max_side=MAX_SIDE).image


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
