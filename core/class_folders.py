"""Where the class folders are in a zip or a folder, as people really make them.

Datasets arrive wrapped in folders (`pets/cats/1.jpg`, `export/dataset/cats/1.jpg`), with a README, a
LICENSE or a labels.csv beside the class folders, and with the debris operating systems leave behind
(`__MACOSX/`, `._*` AppleDouble files, `.DS_Store`, `Thumbs.db`, `desktop.ini`, `.Spotlight-V100`, ...).
`arrange` finds the root: the deepest folder whose sub-folders hold the images, unwrapping single
folders on the way down. Its sub-folders are the classes; other files outside them are set aside to be
listed, never taken for a class. Debris is dropped everywhere, silently.

Path logic only: no file is opened here (`walk` lists a folder). `core.datasets` applies it to zip members
and to folders.
"""

import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InvalidInputError

#: Folders an operating system writes for itself (compared lower-case). Hidden folders (".name") are debris too.
DEBRIS_FOLDERS = frozenset({
    "__macosx", ".spotlight-v100", ".trashes", ".fseventsd", ".temporaryitems", ".appledouble",
    "$recycle.bin", "system volume information",
})
#: Files an operating system writes for itself (compared lower-case). Hidden files, including macOS's `._*`
#: AppleDouble resource forks, are debris too.
DEBRIS_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})


@dataclass(frozen=True)
class Member:
    """A file inside a class folder."""

    path: PurePosixPath  # as it was given (a zip member's name, or relative to the folder read)
    label: str  # the class folder's name, Unicode-normalised (NFC): macOS writes names decomposed
    relative: PurePosixPath  # below the root: label/.../name


@dataclass(frozen=True)
class Layout:
    """The files of a zip or folder, sorted into class members and the rest."""

    root: PurePosixPath  # the folder holding the class folders; PurePosixPath() is the top itself
    members: tuple[Member, ...]  # every file inside a class folder (images or not), in the given order
    loose_images: tuple[PurePosixPath, ...]  # image files outside every class folder
    other: tuple[PurePosixPath, ...]  # other files outside every class folder: README.txt, LICENSE, labels.csv


def is_debris(path: PurePosixPath) -> bool:
    """True for a file an operating system left (or a hidden one), or for anything inside such a folder."""
    *folders, name = path.parts
    if any(part.startswith(".") or part.lower() in DEBRIS_FOLDERS for part in folders):
        return True
    # "1.jpg:Zone.Identifier": the "downloaded from the internet" stream Windows adds, as files copied to WSL show it
    return name.startswith(".") or name.lower() in DEBRIS_FILES or name.endswith(":Zone.Identifier")


def is_image_name(path: PurePosixPath, suffixes: Iterable[str]) -> bool:
    return path.suffix.lower() in suffixes


def find_root(images: Iterable[PurePosixPath]) -> PurePosixPath:
    """The deepest folder whose sub-folders hold the images.

    From the top, step into a folder while it is the only one holding images in sub-folders and its own
    sub-folders hold images (`export/pets/cats/1.jpg` -> `export/pets`). Stop where two or more folders hold
    images: those are the classes. Images lying loose beside the folders do not stop the descent.
    """
    paths = [tuple(p.parts) for p in images]
    root: tuple[str, ...] = ()
    while True:
        depth = len(root)
        foldered = [parts for parts in paths if len(parts) > depth + 1 and parts[:depth] == root]
        children = {parts[depth] for parts in foldered}
        if len(children) != 1 or not any(len(parts) > depth + 2 for parts in foldered):
            return PurePosixPath(*root)
        root = (*root, children.pop())


def arrange(paths: Iterable[PurePosixPath], suffixes: Iterable[str]) -> Layout:
    """Sort `paths` (files, no folders) into the root's class members, loose images and other files.

    Debris is dropped. `suffixes` are the image file endings (lower-case, with the dot).
    """
    suffixes = frozenset(suffixes)
    kept = [p for p in paths if p.parts and not is_debris(p)]
    root = find_root(p for p in kept if is_image_name(p, suffixes))
    depth = len(root.parts)
    members: list[Member] = []
    loose: list[PurePosixPath] = []
    other: list[PurePosixPath] = []
    for path in kept:
        below = path.parts[depth:] if path.parts[:depth] == root.parts else None
        if below is not None and len(below) >= 2:
            members.append(Member(path, unicodedata.normalize("NFC", below[0]), PurePosixPath(*below)))
        elif is_image_name(path, suffixes):
            loose.append(path)
        else:
            other.append(path)
    return Layout(root, tuple(members), tuple(loose), tuple(other))


def walk(root: Path, *, max_files: int) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(files, symbolic links) under `root`, relative to it, in sorted order; debris folders are not entered,
    debris files not listed, symlinks (files or folders) never followed.

    Raises:
        InvalidInputError: more than `max_files` files.
    """
    files: list[PurePosixPath] = []
    links: list[PurePosixPath] = []
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not follow symlinked folders
        here = Path(dirpath)
        relative_dir = PurePosixPath(here.relative_to(root).as_posix())
        kept = []
        for name in sorted(dirnames):
            if is_debris(relative_dir / name / "_"):  # a debris folder, or inside one
                continue
            if (here / name).is_symlink():
                links.append(relative_dir / name)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            relative = relative_dir / name
            if is_debris(relative):
                continue
            (links if (here / name).is_symlink() else files).append(relative)
            if len(files) > max_files:
                raise InvalidInputError(f"The folder holds more than {max_files} files; point at a smaller one.")
    return files, links


def member_name(filename: str, flag_bits: int) -> str:
    """A zip member's name, read as UTF-8 when the zip did not say so but its bytes are UTF-8.

    Without the zip's UTF-8 flag (bit 11), zipfile decodes names as CP437; macOS Finder and Info-ZIP write
    UTF-8 names without setting it, so `chats/été.jpg` would read `chats/Ã©tÃ©.jpg`. Names really in a DOS
    code page (Windows Explorer) are not valid UTF-8 and keep zipfile's reading.
    """
    if flag_bits & 0x800 or filename.isascii():
        return filename
    try:
        return filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return filename


def printable(text: str) -> str:
    """`text` with control characters (terminal escapes, newlines) shown as '?': names in a zip are untrusted."""
    return "".join(c if c.isprintable() else "?" for c in text)


def listing(names: Sequence[str], most: int = 5) -> str:
    """'a, b, c, d, e and 3 more', each name `printable`."""
    shown = ", ".join(printable(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
