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


# ---------------------------------------------------------------------------------------------
# Zips made the way people's tools make them. Each takes {path: bytes} of the files a user selected,
# relative to the folder they right-clicked (`wrap`, or "" when they selected the class folders themselves).

README = {"README.txt": b"Two classes of photos.\n", "LICENSE": b"CC0 1.0\n"}
LABELS = {"labels.csv": b"file,label\ncats/cats_0.png,cats\n"}
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60)
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(120)
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200)


def tree(*, extras: dict[str, bytes] | None = None, names: tuple[str, ...] = ("cats", "dogs"),
         per_class: int = 3) -> dict[str, bytes]:
    """Class folders of small images plus `extras` beside them (README, LICENSE, labels.csv ...)."""
    return {**classes(names, per_class), **(extras or {})}


def _folders(paths) -> list[str]:
    """Every folder above the paths, parents first, each once ("a/", "a/b/")."""
    seen: dict[str, None] = {}
    for path in paths:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            seen.setdefault("/".join(parts[:depth]) + "/")
    return list(seen)


def finder(files: dict[str, bytes], wrap: str = "") -> bytes:
    """As macOS Finder's Compress writes it: folder entries, a .DS_Store per folder, an __MACOSX/ tree of
    `._name` AppleDouble files, and UTF-8 names in decomposed form (NFD) without the zip's UTF-8 flag."""
    import unicodedata

    prefix = f"{wrap}/" if wrap else ""
    entries = {f"{prefix}{p}": b for p, b in files.items()}
    for folder in ([prefix] if prefix else []) + [f"{prefix}{f}" for f in _folders(files)]:
        entries[f"{folder}.DS_Store"] = DS_STORE
    names = _folders(entries) + list(entries)
    forks = {f"__MACOSX/{'/'.join(p.split('/')[:-1] + ['._' + p.split('/')[-1]]).lstrip('/')}": APPLEDOUBLE
             for p in entries}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names + _folders(forks) + list(forks):
            decomposed = unicodedata.normalize("NFD", name)
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(decomposed), b"")
            else:
                archive.writestr(decomposed, entries.get(name, forks.get(name, b"")))
    return _clear_utf8_flag(buffer.getvalue())


class _OemNameInfo(zipfile.ZipInfo):
    """A member whose name is stored in the DOS code page, without the UTF-8 flag, as Explorer stores it."""

    def _encodeFilenameFlags(self):  # zipfile's hook: (name bytes, flags)
        return self.filename.encode("cp437"), self.flag_bits


def explorer(files: dict[str, bytes], wrap: str = "") -> bytes:
    """As Windows Explorer's Send to > Compressed (zipped) folder writes it: forward slashes, no entries for
    folders that hold files, names in the DOS code page without the UTF-8 flag, and the Thumbs.db /
    desktop.ini files Explorer leaves in folders."""
    prefix = f"{wrap}/" if wrap else ""
    entries = {f"{prefix}{p}": b for p, b in files.items()}
    for folder in _folders(files):
        entries[f"{prefix}{folder}Thumbs.db"] = THUMBS_DB
    entries[f"{prefix}desktop.ini"] = b"[.ShellClassInfo]\r\nIconResource=C:\\Windows\\System32\\imageres.dll,-3\r\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(_OemNameInfo(name, date_time=(2024, 5, 1, 12, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def powershell(files: dict[str, bytes], wrap: str = "") -> bytes:
    """As Windows PowerShell 5.1's Compress-Archive wrote it (.NET Framework before 4.6.1): backslashes."""
    prefix = f"{wrap}\\" if wrap else ""
    return build({prefix + p.replace("/", "\\"): b for p, b in files.items()})


def zip_r(files: dict[str, bytes], wrap: str = "") -> bytes:
    """As Info-ZIP's `zip -r data.zip pets` (or `zip -r data.zip cats dogs ...`) writes it, run for real."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if shutil.which("zip") is None:
        import pytest

        pytest.skip("Info-ZIP's zip is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "work"
        _write_tree(base / wrap if wrap else base, files)
        selected = [wrap] if wrap else sorted({p.split("/")[0] for p in files})
        subprocess.run(["zip", "-r", "-q", str(Path(tmp) / "out.zip"), *selected], cwd=base, check=True)
        return (Path(tmp) / "out.zip").read_bytes()


def make_archive(files: dict[str, bytes], wrap: str = "") -> bytes:
    """As Python's shutil.make_archive writes it: root_dir the folder's parent, base_dir the folder (or the
    class folders' parent as root_dir, nothing wrapped)."""
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "work"
        _write_tree(base / wrap if wrap else base, files)
        if wrap:
            made = shutil.make_archive(str(Path(tmp) / "out"), "zip", root_dir=base, base_dir=wrap)
        else:
            made = shutil.make_archive(str(Path(tmp) / "out"), "zip", root_dir=base)
        return Path(made).read_bytes()


def _write_tree(root, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _clear_utf8_flag(data: bytes) -> bytes:
    """Clear bit 11 (names are UTF-8) in every local and central header, as macOS's Archive Utility leaves it."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := data.find(signature, start)) != -1:
            flags = struct.unpack_from("<H", data, at + offset)[0]
            struct.pack_into("<H", data, at + offset, flags & ~0x800)
            start = at + 4
    return bytes(data)
