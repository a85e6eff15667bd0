"""Hostile and ordinary zips of class folders, built in memory for the dataset reader's tests.

Each builder returns the zip's bytes. Nothing touches the disk; everything builds in well under a second.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import numpy as np
from PIL import Image


def image_bytes(colour: tuple[int, int, int], *, size: int = 24, fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def build(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def classes(names: tuple[str, ...] = ("cats", "dogs"), per_class: int = 3, *, top: str = "", fmt: str = "PNG") -> dict[str, bytes]:
    """{path: image bytes}: `per_class` images in each class folder, optionally inside folder `top`."""
    palette = [(200, 60, 60), (60, 60, 200), (60, 200, 60), (200, 200, 60)]
    suffix = ".png" if fmt == "PNG" else ".jpg"
    prefix = f"{top}/" if top else ""
    return {
        f"{prefix}{name}/{name}_{i}{suffix}": image_bytes(palette[c % len(palette)], fmt=fmt, seed=c * 100 + i)
        for c, name in enumerate(names)
        for i in range(per_class)
    }


def ordinary() -> bytes:
    return build(classes())


def nested_top_folder() -> bytes:
    return build(classes(top="my_dataset"))


def mixed_junk() -> bytes:
    """Two good classes plus a text file, a corrupt JPEG, a file at the root, macOS and hidden files."""
    entries = classes()
    entries["cats/notes.txt"] = b"not a picture"
    entries["dogs/broken.jpg"] = b"\xff\xd8\xff\xe0 definitely not a whole JPEG"
    entries["README.png"] = image_bytes((1, 2, 3))
    entries["__MACOSX/cats/._cats_0.png"] = b"resource fork"
    entries["cats/.DS_Store"] = b"finder"
    return build(entries)


def zip_slip() -> bytes:
    entries = classes()
    entries["../evil.jpg"] = image_bytes((1, 1, 1))
    return build(entries)


def zip_slip_nested() -> bytes:
    entries = classes()
    entries["cats/../../evil.jpg"] = image_bytes((1, 1, 1))
    return build(entries)


def backslash_slip() -> bytes:
    entries = classes()
    entries["cats\\..\\..\\evil.jpg"] = image_bytes((1, 1, 1))
    return build(entries)


def absolute_path() -> bytes:
    entries = classes()
    entries["/etc/cron.d/evil.jpg"] = image_bytes((1, 1, 1))
    return build(entries)


def drive_letter() -> bytes:
    entries = classes()
    entries["C:/Windows/evil.jpg"] = image_bytes((1, 1, 1))
    return build(entries)


def symlink() -> bytes:
    """A symlink entry pointing at /etc/passwd inside a class folder (plus the good images)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in classes().items():
            archive.writestr(name, data)
        info = zipfile.ZipInfo("cats/passwd.jpg")
        info.create_system = 3  # Unix, so the mode bits count
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def many_files(count: int) -> bytes:
    return build({f"c{i % 2}/f{i}.png": b"x" for i in range(count)}, compression=zipfile.ZIP_STORED)


def high_ratio_bomb(megabytes: int = 20) -> bytes:
    """One member of zeros: about 1000x smaller compressed than expanded."""
    entries = classes()
    entries["cats/bomb.png"] = bytes(megabytes * 2**20)
    return build(entries)


def declared_size_bomb() -> bytes:
    """A tiny member whose central-directory entry declares about 4 GB uncompressed."""
    return _patch_declared_size(ordinary(), "cats/cats_0.png", 0xFFFF_FFF0)


def lying_size() -> bytes:
    """A member whose directory declares fewer bytes than it holds: reading stops early, the CRC fails."""
    return _patch_declared_size(ordinary(), "cats/cats_0.png", 10)


def one_class() -> bytes:
    return build(classes(("cats",)))


def empty_zip() -> bytes:
    return build({})


def not_a_zip() -> bytes:
    return b"PK\x03\x04 but nothing after the magic number" + bytes(64)


def _patch_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size of `name` in the central directory (zipfile trusts that one)."""
    data = bytearray(data)
    start = 0
    while (at := data.find(b"PK\x01\x02", start)) != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_length].decode() == name:
            struct.pack_into("<I", data, at + 24, size)
            return bytes(data)
        start = at + 4
    raise ValueError(f"{name} not in the zip")
