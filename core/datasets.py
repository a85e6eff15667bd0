"""Labelled image sets: class-folder zips read safely in memory, local folders, built-in offline sets
(scikit-learn's digits, generated shapes with ground-truth masks) and torchvision's sets when online.

A zip is never extracted to disk: members are read into memory one by one, within limits on the
number of files, the total uncompressed bytes and the compression ratio; unsafe paths refuse the zip.
Images are decoded lazily (on access) through `images.decode`, so memory holds compressed bytes only
(core.image_lists). `open_source` is the one dispatch over sources (the CLI's `load` and the dashboard call it);
the shapes are drawn by core.shape_drawing, torchvision's sets opened by core.torchvision_sets.
"""

import hashlib
import io
import logging
import stat
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from core import class_folders, image_lists, images, shape_drawing, splits, torchvision_sets
from core.errors import InvalidInputError, did_you_mean

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = images.SUFFIXES
MAX_SIDE = image_lists.MAX_SIDE
SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
MASKS = "masks"  # a folder of object masks beside the class folders (the images' own names), not a class
TORCHVISION_SETS = torchvision_sets.NAMES
TORCHVISION_ROOT = Path("~/.cache/visionlens/datasets")  # expanded where it is used
KINDS = ("digits", "shapes", "zip", "folder", "torchvision")


@dataclass(frozen=True)
class ZipLimits:
    """What a zip may hold before it is refused (checked from the directory, then while reading)."""

    max_files: int = 20_000  # entries of any kind
    max_total_bytes: int = 1024 * 2**20  # uncompressed, all members together
    max_member_bytes: int = images.MAX_BYTES  # one member, uncompressed
    max_ratio: float = 200.0  # uncompressed / compressed size of one member (JPEG/PNG barely compress)


@dataclass(frozen=True)
class Skipped:
    file: str
    reason: str


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set.

    `images[i]` is an RGB PIL image (decoded on access for zips, folders and torchvision sets);
    `labels` (N,) int64 index into `classes`; `masks[i]`, when present, is an (H, W) bool array at
    `images[i]`'s size marking the object (the shapes set). `content_hash` identifies the content
    and the settings that produced it: caches key on it.
    """

    name: str
    images: Sequence[Image.Image] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    files: tuple[str, ...] = field(repr=False)
    content_hash: str
    masks: Sequence[np.ndarray] | None = field(default=None, repr=False)
    skipped: tuple[Skipped, ...] = ()
    ignored: tuple[str, ...] = ()  # files beside the class folders (README.txt, LICENSE, labels.csv): not classes
    root: str = ""  # the folder inside the zip or folder that holds the class folders ("" = the top)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counted = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counted, strict=True)}

    def ignored_summary(self) -> str:
        """'Other files ignored: README.txt, LICENSE, labels.csv.' (at most five named), or '' when none."""
        return f"Other files ignored (not in a class folder): {class_folders.listing(self.ignored)}." if self.ignored else ""

    def skipped_reasons(self) -> dict[str, int]:
        """How many files were skipped, per reason."""
        return dict(Counter(s.reason for s in self.skipped))

    def subset(self, indices: Sequence[int]) -> "Dataset":
        """The rows at `indices`, in that order (a new content hash)."""
        rows = [int(i) for i in indices]
        picked = [self.images[i] for i in rows] if isinstance(self.images, list) else image_lists.Subset(self.images, rows)
        key = hashlib.sha256(f"{self.content_hash}:{','.join(map(str, rows))}".encode()).hexdigest()
        return replace(
            self,
            images=picked,
            labels=self.labels[rows],
            files=tuple(self.files[i] for i in rows),
            masks=None if self.masks is None else [self.masks[i] for i in rows] if isinstance(self.masks, list)
            else image_lists.Subset(self.masks, rows),
            content_hash=key,
        )

    def sample(self, n: int, *, seed: int = 0) -> "Dataset":
        """At most `n` rows, stratified by class (every class keeps at least one image), in a seeded order."""
        if n >= len(self):
            return self
        if n < 1:
            raise InvalidInputError(f"The sample size must be at least 1, got {n}.")
        return self.subset(splits.sample(self.labels, n, seed))

    def examples(self, per_class: int = 4) -> list[int]:
        """Indices of the first `per_class` images of each class, class by class (for a sample grid)."""
        return [int(i) for c in range(len(self.classes)) for i in np.flatnonzero(self.labels == c)[:per_class]]


# ---------------------------------------------------------------------------------------------
# Class-folder zips and folders


def from_zip(data: bytes, limits: ZipLimits = ZipLimits(), *, name: str = "upload.zip") -> Dataset:
    """A dataset from a zip of class folders (`cat/1.jpg`, `dog/2.png`), found however deep they are wrapped.

    Read in memory; nothing is written to disk. The root is the deepest folder whose sub-folders hold the
    images (`class_folders.arrange`): a README, LICENSE or labels.csv beside the class folders is listed in
    `ignored`, operating-system debris (`__MACOSX/`, `._*`, `.DS_Store`, `Thumbs.db`, ...) is dropped.
    Symlinks, non-images and undecodable files in class folders are skipped and listed in `skipped`. A `masks/`
    folder beside the class folders holds object masks under the images' names (`masks/cats/1.png` or
    `masks/1.png` for `cats/1.jpg`): they become `masks` (when every image has one), not a class.

    Raises:
        InvalidInputError: not a zip, an absolute or `..` path, too many files, too many bytes, a
            suspicious compression ratio (zip bomb), or fewer than two classes with images.
    """
    if not data:
        raise InvalidInputError("The zip file is empty (0 bytes).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidInputError(
            f"This file is not a zip archive we can read ({error}). Upload a .zip of class folders."
        ) from None
    if len(entries) > limits.max_files:
        raise InvalidInputError(
            f"The zip holds {len(entries)} entries; at most {limits.max_files} are accepted. "
            "Upload a smaller sample, or point the app at a folder on this machine."
        )
    members: dict[PurePosixPath, zipfile.ZipInfo] = {}
    skipped: list[Skipped] = []
    declared = 0
    for info in entries:
        path = _safe_path(class_folders.member_name(info.filename, info.flag_bits))
        if info.is_dir() or class_folders.is_debris(path):
            continue  # macOS resource forks, Finder and Explorer thumbnails, hidden files: not the user's images
        if stat.S_ISLNK(info.external_attr >> 16):
            skipped.append(Skipped(info.filename, "symbolic link (ignored)"))
            continue
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise InvalidInputError(
                f"The zip would expand to more than {limits.max_total_bytes / 2**20:.0f} MB; refused "
                "(it may be a zip bomb). Upload a smaller sample, or use a folder on this machine."
            )
        if info.file_size > 1024 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise InvalidInputError(
                f"'{info.filename}' would expand {info.file_size / max(info.compress_size, 1):.0f} times "
                f"(more than {limits.max_ratio:.0f}x): refused as a possible zip bomb."
            )
        members.setdefault(path, info)  # a name written twice: the first one counts
    layout = class_folders.arrange(members, IMAGE_SUFFIXES)
    skipped += [Skipped(str(p), "not inside a class folder") for p in layout.loose_images]
    blobs: list[bytes] = []
    labels: list[str] = []
    names: list[str] = []
    hasher = hashlib.sha256()
    for member in layout.members:
        info, relative = members[member.path], member.relative
        if relative.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(Skipped(str(member.path), f"not an image ({relative.suffix or 'no extension'})"))
            continue
        if info.file_size > limits.max_member_bytes:
            skipped.append(Skipped(str(member.path), f"larger than {limits.max_member_bytes // 2**20} MB"))
            continue
        try:
            with archive.open(info) as opened:
                blob = opened.read(limits.max_member_bytes + 1)  # bounded even if the header lies
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as error:
            skipped.append(Skipped(str(member.path), f"unreadable in the zip ({type(error).__name__})"))
            continue
        if len(blob) > limits.max_member_bytes:
            skipped.append(Skipped(str(member.path), f"larger than {limits.max_member_bytes // 2**20} MB"))
            continue
        try:
            images.decode(blob, max_side=MAX_SIDE)
        except InvalidInputError:
            skipped.append(Skipped(str(member.path), "not a readable image"))
            continue
        blobs.append(blob)
        labels.append(member.label)
        names.append(str(relative))
        hasher.update(f"{relative}\0{len(blob)}\0".encode())
        hasher.update(hashlib.sha256(blob).digest())
    return _build(name, blobs, labels, names, skipped, hasher.hexdigest(), where="zip", layout=layout)


def _safe_path(name: str) -> PurePosixPath:
    """The member's path, or InvalidInputError for absolute paths, drive letters and `..` (zip-slip)."""
    normal = name.replace("\\", "/")
    path = PurePosixPath(normal)
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":") or ".." in path.parts or "\0" in normal:
        raise InvalidInputError(
            f"The zip contains an unsafe path '{name}' (absolute, or climbing out with '..'); refused. "
            "Zip the class folders themselves, e.g. `zip -r data.zip cats dogs`."
        )
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise InvalidInputError(f"The zip contains an entry with an empty name ('{name}'); refused.")
    return PurePosixPath(*parts)


def from_folder(path: str | Path, *, max_files: int = 500_000) -> Dataset:
    """A dataset from a local folder of class folders (`root/cat/1.jpg`), for sets too large to upload.

    The same rules as `from_zip` find the class folders (wrapping folders unwrapped, other files beside
    them listed in `ignored`, operating-system debris dropped). Files are listed and their headers checked
    now; pixels are decoded when used. Symlinks are not followed.

    Raises:
        InvalidInputError: not a folder, fewer than two classes with images, too many files.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"'{path}' is not a folder on this machine. Give the folder that holds the class folders.")
    listed, links = class_folders.walk(root, max_files=max_files)
    skipped = [Skipped(p.as_posix(), "symbolic link (ignored)") for p in links]
    layout = class_folders.arrange(listed, IMAGE_SUFFIXES)
    skipped += [Skipped(p.as_posix(), "not inside a class folder") for p in layout.loose_images]
    found: list[tuple[str, Path, str]] = []
    for member in layout.members:
        file = root / member.path
        if member.relative.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(Skipped(member.path.as_posix(), f"not an image ({file.suffix or 'no extension'})"))
        elif not _header_ok(file):
            skipped.append(Skipped(member.path.as_posix(), "not a readable image"))
        else:
            found.append((member.label, file, member.relative.as_posix()))
    hasher = hashlib.sha256(str(root.resolve()).encode())
    for _, file, _ in found:
        info = file.stat()
        hasher.update(f"{file}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return _build(
        root.name, [f for _, f, _ in found], [c for c, _, _ in found],
        [r for _, _, r in found], skipped, hasher.hexdigest(), where="folder", layout=layout,
    )


def _header_ok(file: Path) -> bool:
    try:
        with Image.open(file) as image:
            return image.format in images.FORMATS and min(image.size) >= images.MIN_SIDE
    except Exception:  # any Pillow failure means "not an image we can use"
        return False


def _build(name, sources, class_of, files, skipped, key, *, where: str, layout: class_folders.Layout) -> Dataset:
    sources, class_of, files, mask_sources, note = _split_masks(list(sources), list(class_of), list(files))
    images_ = image_lists.LazyImages(sources)
    masks = image_lists.LazyMasks(mask_sources, images_) if mask_sources is not None else None
    classes = tuple(sorted(set(class_of)))
    ignored = tuple(p.as_posix() for p in layout.other) + ((note,) if note else ())
    if len(classes) < 2:
        inside = f" in '{class_folders.printable(layout.root.as_posix())}/'" if layout.root.parts else ""
        found = f"only the class '{classes[0]}'{inside}" if classes else "no images in class folders"
        reasons = Counter(s.reason for s in skipped)
        detail = f" Skipped: {', '.join(f'{n} {r}' for r, n in reasons.items())}." if reasons else ""
        if ignored:
            detail += f" Other files ignored: {class_folders.listing(ignored)}."
        raise InvalidInputError(
            f"The {where} has {found}; at least two classes are needed, each a folder of images "
            f"(e.g. cats/1.jpg, dogs/2.jpg).{detail}"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in class_of], dtype=np.int64)
    return Dataset(name, images_, labels, classes, tuple(files), key, masks, tuple(skipped), ignored,
                   layout.root.as_posix() if layout.root.parts else "")


def _split_masks(sources: list, class_of: list[str], files: list[str]):
    """The `masks/` folder beside the class folders is not a class: its files are the images' object masks, found
    by the same relative name (`masks/cats/1.png` for `cats/1.jpg`, or `masks/1.png`; any image suffix).

    Returns (sources, class_of, files of the images, the masks' sources in the same order or None, a note or None):
    masks are used only when every image has one; a `masks` folder whose files match no image, or without which
    fewer than two classes would be left, is a class.
    """
    is_mask = [c.casefold() == MASKS for c in class_of]
    if not any(is_mask):
        return sources, class_of, files, None, None
    found: dict[tuple, object] = {}
    for source, relative, mask in zip(sources, files, is_mask, strict=True):
        if mask:
            below = PurePosixPath(relative).parts[1:]
            found.setdefault((*(p.casefold() for p in below[:-1]), PurePosixPath(below[-1]).stem.casefold()), source)
    kept = [i for i, mask in enumerate(is_mask) if not mask]
    masks = []
    for i in kept:
        relative = PurePosixPath(files[i])
        stem = relative.stem.casefold()
        masks.append(found.get((*(p.casefold() for p in relative.parts[:-1]), stem), found.get((stem,))))
    missing = sum(m is None for m in masks)
    if missing == len(kept) or len({class_of[i] for i in kept}) < 2:
        return sources, class_of, files, None, None  # a class that happens to be called "masks" (a face-mask set)
    sources, class_of, files = ([v[i] for i in kept] for v in (sources, class_of, files))
    if missing:
        return sources, class_of, files, None, f"masks/ (no mask for {missing} of {len(kept)} images: masks not used)"
    return sources, class_of, files, masks, None


# ---------------------------------------------------------------------------------------------
# Built-in offline sets


def digits(seed: int = 0, n: int = 500, *, size: int = 32) -> Dataset:
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes), upscaled to `size` px, as RGB.

    A stratified, seeded sample of `n` images (all of them when n >= 1797).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    rows = splits.sample(labels, n, seed) if n < len(labels) else np.arange(len(labels))
    pictures = []
    for row in rows:
        pixels = np.uint8(np.rint(255 - bunch.images[row] / 16.0 * 255))  # dark ink on white, like paper
        pictures.append(Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB"))
    return Dataset(
        "digits", pictures, labels[rows], tuple(str(d) for d in range(10)),
        tuple(f"{labels[r]}/digit_{r:04d}.png" for r in rows), f"digits:{seed}:{n}:{size}",
    )


def shapes(seed: int = 0, n: int = 240, size: int = 128, *, classes: Sequence[str] = SHAPES[:4]) -> Dataset:
    """Generated shapes (circle, square, triangle, star, ...) in random colours, sizes and positions on
    textured backgrounds, with a ground-truth mask per image. Balanced classes; deterministic from `seed`.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(set(classes)) < 2:
        raise InvalidInputError(f"Shapes must be two or more of {', '.join(SHAPES)}; got {list(classes)}.")
    if size < 32:
        raise InvalidInputError(f"Shape images must be at least 32 px, got {size}.")
    rng = np.random.default_rng(seed)
    labels = np.array([i % len(classes) for i in range(n)], dtype=np.int64)
    rng.shuffle(labels)
    pictures, masks, files = [], [], []
    for i, label in enumerate(labels):
        picture, mask = shape_drawing.draw(rng, classes[label], size)
        pictures.append(picture)
        masks.append(mask)
        files.append(f"{classes[label]}/shape_{i:05d}.png")
    key = f"shapes:{seed}:{n}:{size}:{','.join(classes)}"
    return Dataset("shapes", pictures, labels, tuple(classes), tuple(files), key, masks)


# ---------------------------------------------------------------------------------------------
# torchvision's sets (need the internet the first time)


def torchvision_set(
    name: str, root: str | Path, *, train: bool = False, download: bool = True, n: int | None = None, seed: int = 0
) -> Dataset:
    """One of TORCHVISION_SETS, downloaded into `root` when missing (test split unless `train`).

    Raises:
        InvalidInputError: an unknown name, or the files are not in `root` and cannot be downloaded.
    """
    if name not in TORCHVISION_SETS:
        raise InvalidInputError(
            f"Unknown torchvision set '{name}'.{did_you_mean(name, TORCHVISION_SETS)} Choose one of: "
            f"{', '.join(TORCHVISION_SETS)}."
        )
    root = Path(root).expanduser()
    try:
        dataset = torchvision_sets.open_set(name, root, train=train, download=download)
    except Exception as error:  # URLError, socket timeouts, RuntimeError("Dataset not found"), bad archives
        raise InvalidInputError(
            f"{name} is not in {root} and could not be downloaded ({type(error).__name__}: {error}). "
            "Connect to the internet once, or copy the files there; offline, use the built-in digits or shapes sets."
        ) from None
    labels = np.asarray(torchvision_sets.targets(dataset), dtype=np.int64)
    rows = splits.sample(labels, n, seed) if n is not None and n < len(labels) else np.arange(len(labels))
    classes = tuple(str(c if isinstance(c, str) else c[0]) for c in dataset.classes)
    split = "train" if train else "test"
    return Dataset(
        name, torchvision_sets.Images(dataset, rows), labels[rows], classes,
        tuple(f"{classes[labels[r]]}/{name}_{split}_{r:06d}" for r in rows),
        f"torchvision:{name}:{split}:{n}:{seed}",
    )


# ---------------------------------------------------------------------------------------------


def open_source(
    kind: str, source: str = "", *, seed: int = 0, n: int | None = None, data: bytes | None = None,
    root: str | Path = TORCHVISION_ROOT, folder: Callable[[str], Dataset] | None = None,
) -> Dataset:
    """The one dispatch over where a dataset comes from, sampled to at most `n` images (stratified, seeded).

    kind: one of KINDS. "zip": `data` holds the bytes (an upload), else `source` is the zip's path;
    "folder": `source` is the folder, opened by `folder(source)` (default `from_folder`; the dashboard passes
    core.roots' opener, which refuses folders outside the operator's data roots); "torchvision": `source` is one
    of TORCHVISION_SETS, kept in `root`; "digits" and "shapes" ignore `source`.

    Raises:
        InvalidInputError: an unknown kind, or a source that kind cannot open.
    """
    if kind == "digits":
        return digits(seed, n or 500)
    if kind == "shapes":
        return shapes(seed, n or 240)
    if kind == "torchvision":
        return torchvision_set(source, root, n=n, seed=seed)
    if kind == "zip":
        if data is None:
            path = Path(source).expanduser()
            data, name = path.read_bytes(), path.name
        else:
            name = "upload.zip"
        whole = from_zip(data, name=name)
    elif kind == "folder":
        whole = (folder or from_folder)(source)
    else:
        raise InvalidInputError(f"Unknown kind of dataset '{kind}'. Choose one of: {', '.join(KINDS)}.")
    return whole.sample(n, seed=seed) if n is not None else whole


def load(source: str, *, seed: int = 0, n: int | None = None, root: str | Path = TORCHVISION_ROOT) -> Dataset:
    """A dataset named the way the CLI takes it: `digits`, `shapes`, `torchvision:CIFAR10`, a .zip file or a folder.

    Raises:
        InvalidInputError: the source is none of these.
    """
    if source in ("digits", "shapes"):
        return open_source(source, seed=seed, n=n)
    if source.startswith("torchvision:"):
        return open_source("torchvision", source.split(":", 1)[1], seed=seed, n=n, root=root)
    path = Path(source).expanduser()
    if path.is_dir() or path.is_file():
        return open_source("folder" if path.is_dir() else "zip", str(path), seed=seed, n=n)
    raise InvalidInputError(
        f"No dataset '{source}'. Give digits, shapes, torchvision:NAME ({', '.join(TORCHVISION_SETS)}), "
        "a .zip of class folders or a folder of class folders."
    )
