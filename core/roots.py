"""Server-side folders a browser user may open: only datasets under the data roots the operator names.

The dashboard is served to a class: whatever a student's browser asks the server to read must lie under
one of these roots. The CLI and `datasets.from_folder` keep taking any path (they run as the user who typed
it); the restriction lives where the browser meets the server, and the check is here so it is tested
without Streamlit. Any later feature that opens a server-side path from the browser (a results folder of a
dataset job, say) goes through `resolve` too.

Where the roots come from, first match wins:
1. `VISIONLENS_DATA_ROOTS`, a `:`-separated list of folders (`os.pathsep`);
2. `data_roots` in the `[visionlens]` table of the config file: `$VISIONLENS_CONFIG`, else
   `visionlens.toml` in the project folder, else `~/.config/visionlens/config.toml`;
3. the project's own `data/` folder (created on first use).
A root that is `/` or the home folder is refused (it would hand every student the whole machine), and so is
one that does not exist; both are reported, never silently widened.
"""

import logging
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from core.datasets import IMAGE_SUFFIXES, Dataset, from_folder
from core.errors import InvalidInputError

log = logging.getLogger(__name__)

ENV = "VISIONLENS_DATA_ROOTS"
CONFIG_ENV = "VISIONLENS_CONFIG"
PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = PROJECT / "data"
CONFIG_FILES = (PROJECT / "visionlens.toml", Path("~/.config/visionlens/config.toml"))
# Operating-system debris that is never a class or a dataset (see also datasets' zip rules).
DEBRIS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".Spotlight-V100", ".Trashes"})
REFUSED = ("That folder is not one of the datasets this server offers. Pick a dataset from the list; to add one, "
           "the operator puts it under a data root (see the README's classroom section).")


class OutsideRootsError(InvalidInputError):
    """A path that is not under a data root, does not exist, or passes through a symbolic link.

    One message for all of these, so a refusal never tells whether a path exists.
    """

    def __init__(self) -> None:
        super().__init__(REFUSED)


@dataclass(frozen=True)
class Roots:
    """The resolved data roots, and what was wrong with the configured ones (for the operator)."""

    paths: tuple[Path, ...]
    source: str  # "VISIONLENS_DATA_ROOTS", the config file's path, or "default"
    problems: tuple[str, ...] = ()


def configured(environ: Mapping[str, str] | None = None) -> Roots:
    """The data roots in force now (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV, "").strip()
    if raw:
        return _checked([p for p in raw.split(os.pathsep) if p.strip()], ENV)
    config = _config_file(environ)
    if config is not None:
        try:
            table = tomllib.loads(config.read_text(encoding="utf-8")).get("visionlens", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            return Roots((), str(config), (f"The config file {config} cannot be read ({error}); no data root is offered.",))
        entries = table.get("data_roots")
        if entries is not None:
            if isinstance(entries, str):
                entries = [p for p in entries.split(os.pathsep) if p.strip()]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                return Roots((), str(config), (f"{config}: [visionlens] data_roots must be a list of folder paths.",))
            return _checked(entries, str(config), base=config.parent)
    DEFAULT_ROOT.mkdir(parents=True, exist_ok=True)
    return Roots((DEFAULT_ROOT.resolve(),), "default")


def _config_file(environ: Mapping[str, str]) -> Path | None:
    named = environ.get(CONFIG_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    for candidate in CONFIG_FILES:
        candidate = candidate.expanduser()
        if candidate.is_file():
            return candidate
    return None


def _checked(entries: list[str], source: str, *, base: Path = PROJECT) -> Roots:
    paths: list[Path] = []
    problems: list[str] = []
    too_wide = {Path("/").resolve(), Path.home().resolve()}
    for entry in entries:
        given = Path(entry.strip()).expanduser()
        # A root that is itself a symbolic link is the operator's choice: its target is the root.
        resolved = (given if given.is_absolute() else base / given).resolve()
        if resolved in too_wide or resolved == Path(resolved.anchor):
            problems.append(f"The data root {entry} is refused: it would let every browser user read the whole "
                            "machine or home folder. Name a folder that holds only datasets.")
        elif not resolved.is_dir():
            problems.append(f"The data root {entry} is not a folder on this server.")
        elif resolved not in paths:
            paths.append(resolved)
    for problem in problems:
        log.warning(problem)
    return Roots(tuple(paths), source, tuple(problems))


def resolve(path: str | PurePath, roots: Roots | tuple[Path, ...]) -> Path:
    """The real folder that `path` names under one of `roots`, or OutsideRootsError.

    `path` is absolute (it must lie lexically under a root) or relative to a root. Refused, all with the same
    message: `..` anywhere, a path outside every root, a symbolic link at any step below the root (a folder
    or a file pointing out of the root, or back into it), a path that does not exist or is not a folder.
    """
    paths = roots.paths if isinstance(roots, Roots) else tuple(roots)
    text = str(path)
    if not text.strip() or "\0" in text:
        raise OutsideRootsError()
    candidate = PurePath(text)
    if ".." in candidate.parts:
        raise OutsideRootsError()
    for root in paths:
        if candidate.is_absolute():
            if candidate.parts[: len(root.parts)] != root.parts:
                continue
            parts = candidate.parts[len(root.parts):]
        else:
            parts = candidate.parts
        current = root
        try:
            for part in parts:
                if part in ("", "."):
                    continue
                current = current / part
                if current.is_symlink():
                    raise OutsideRootsError()
            if not current.is_dir():
                continue
            real = current.resolve(strict=True)
        except OSError:
            continue
        if real == root or root in real.parents:
            return real
    raise OutsideRootsError()


@dataclass(frozen=True)
class DataFolder:
    """A class-folder dataset found under a root: `path` is what `resolve` accepts and `open` reads."""

    name: str  # the root's name and the path below it, e.g. "data/pets" or "data/export/pets"
    path: Path
    root: Path
    images: int
    classes: int

    def label(self) -> str:
        return f"{self.name} · {self.images:,} images, {self.classes} classes"


@dataclass(frozen=True)
class Listing:
    folders: tuple[DataFolder, ...]
    problems: tuple[str, ...]


def list_datasets(roots: Roots, *, max_files: int = 200_000, max_seconds: float = 5.0, max_depth: int = 6) -> Listing:
    """Every class-folder dataset under the roots: a folder with at least two sub-folders that hold images.

    Symbolic links are never followed, hidden folders and OS debris are passed over. Listing stops at
    `max_files` entries or `max_seconds` per root, with a message naming the root; what was found by then
    is still listed.
    """
    folders: list[DataFolder] = []
    problems = list(roots.problems)
    for root in roots.paths:
        found, problem = _scan(root, max_files=max_files, max_seconds=max_seconds, max_depth=max_depth)
        folders.extend(found)
        if problem:
            problems.append(problem)
    return Listing(tuple(folders), tuple(problems))


def _scan(root: Path, *, max_files: int, max_seconds: float, max_depth: int) -> tuple[list[DataFolder], str | None]:
    deadline = time.monotonic() + max_seconds
    direct: dict[Path, int] = {}  # images directly inside each folder
    children: dict[Path, list[Path]] = {}
    seen = 0
    problem = None
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        direct[folder], children[folder] = 0, []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if entry.name.startswith((".", "._")) or entry.name in DEBRIS or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if depth < max_depth:
                    children[folder].append(Path(entry.path))
                    stack.append((Path(entry.path), depth + 1))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                direct[folder] += 1
        if seen > max_files or time.monotonic() > deadline:
            why = f"more than {max_files:,} files" if seen > max_files else f"more than {max_seconds:g} s to list"
            problem = (f"The data root {root} is too big to list ({why}); the datasets found so far are offered. "
                       "Keep only datasets under a data root, or name a smaller one.")
            break
    total: dict[Path, int] = {}
    for folder in sorted(direct, key=lambda p: len(p.parts), reverse=True):
        total[folder] = direct[folder] + sum(total.get(c, 0) for c in children[folder])
    found = []
    for folder in sorted(direct):
        classes = [c for c in children[folder] if direct.get(c, 0) > 0]
        if len(classes) >= 2:
            below = folder.relative_to(root).as_posix()
            name = root.name if below == "." else f"{root.name}/{below}"
            found.append(DataFolder(name, folder, root, sum(total[c] for c in classes), len(classes)))
    return found, problem


def open_dataset(path: str | PurePath, roots: Roots) -> Dataset:
    """The dataset in `path`, after `resolve` has checked it lies under a data root (the browser's way in)."""
    return from_folder(resolve(path, roots))
