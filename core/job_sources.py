"""What a distributed dataset job reads (core.distributed): one row per image with its file name, label and where
its bytes are (a local path or a URI that pyarrow's filesystems read, or the bytes themselves), from an opened dataset
(a folder, a zip, a built-in set), a list file (.txt, .csv or .parquet of path,label) or a folder URI (s3://...).
"""

import io
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from core import class_folders, datasets, image_lists, images, splits
from core.errors import InvalidInputError

LISTS = (".txt", ".csv", ".parquet")  # files that list images as path,label


@dataclass(frozen=True, eq=False)
class Source:
    """The rows of a job: one per image, `table` with columns index (int64, the row's place), file (its name in the
    results), label (int64 into `classes`), path (a local path or a URI, or null) and data (the bytes, or null), and
    mask_path / mask_data the same for an object mask (null: none). Duck-types the parts of a Dataset the CLI reads
    (name, classes, labels, files, skipped_reasons, ignored)."""

    name: str
    classes: tuple[str, ...]
    table: object = field(repr=False)  # pyarrow.Table
    skipped: tuple = ()
    ignored: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def labels(self) -> np.ndarray:
        return self.table.column("label").to_numpy().astype(np.int64)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.table.column("file").to_pylist())

    @property
    def masked(self) -> bool:
        return self.table.column("mask_path").null_count + self.table.column("mask_data").null_count < 2 * len(self)

    def skipped_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def ignored_summary(self) -> str:
        return f"Other files ignored (not in a class folder): {class_folders.listing(self.ignored)}." if self.ignored else ""


def _table(files, labels, paths, blobs, mask_paths, mask_blobs):
    import pyarrow as pa

    n = len(files)
    return pa.table({
        "index": pa.array(np.arange(n, dtype=np.int64)), "file": pa.array(list(files), pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int64)), "path": pa.array(paths or [None] * n, pa.string()),
        "data": pa.array(blobs or [None] * n, pa.binary()), "mask_path": pa.array(mask_paths or [None] * n, pa.string()),
        "mask_data": pa.array(mask_blobs or [None] * n, pa.binary()),
    })


def _png(array_or_picture) -> bytes:
    from PIL import Image

    picture = array_or_picture if isinstance(array_or_picture, Image.Image) else \
        Image.fromarray(np.asarray(array_or_picture, dtype=np.uint8) * 255, "L")
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")  # lossless: the decoded pixels are the in-memory ones
    return buffer.getvalue()


def _where(items) -> tuple[list | None, list | None]:
    """(paths, blobs) of a dataset's pictures or masks: files stay paths, bytes stay bytes, in-memory ones become PNG."""
    if isinstance(items, image_lists.Subset):
        inner_paths, inner_blobs = _where(items.inner)
        pick = (lambda values: None if values is None else [values[r] for r in items.rows])
        return pick(inner_paths), pick(inner_blobs)
    if isinstance(items, (image_lists.LazyImages, image_lists.LazyMasks)):
        if all(isinstance(b, Path) for b in items.blobs):
            return [str(b.resolve()) for b in items.blobs], None
        return None, [b if isinstance(b, bytes) else Path(b).read_bytes() for b in items.blobs]
    return None, [_png(item) for item in items]  # a list of PIL pictures or bool masks (digits, shapes)


def source_of(dataset: datasets.Dataset) -> Source:
    """The rows of an opened dataset (a folder, a zip, a built-in set)."""
    paths, blobs = _where(dataset.images)
    mask_paths, mask_blobs = _where(dataset.masks) if dataset.masks is not None else (None, None)
    table = _table(dataset.files, dataset.labels, paths, blobs, mask_paths, mask_blobs)
    return Source(dataset.name, tuple(dataset.classes), table, tuple(dataset.skipped), tuple(dataset.ignored))


def _filesystem(uri: str):
    """(pyarrow FileSystem, path in it) for a local path or a URI (s3://, gs://, hdfs://, file://)."""
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as error:  # ArrowInvalid for an unknown scheme, OSError for credentials
        raise InvalidInputError(f"Cannot open '{uri}' ({error}). Give a local path or an s3://, gs://, hdfs:// or "
                                "file:// URI that pyarrow can read from this machine.") from None


def read_bytes(uri: str, limit: int = images.MAX_BYTES) -> bytes:
    """The bytes of one file by local path or URI, at most `limit` (InvalidInputError past it or when unreadable)."""
    filesystem, path = _filesystem(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(limit + 1)
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"Cannot read {uri}: {error}") from None
    if len(data) > limit:
        raise InvalidInputError(f"{uri} is larger than {limit // 2**20} MB.")
    return data


def source_from_list(uri: str) -> Source:
    """Images listed in a .txt or .csv (`path,label` a line, a header line optional) or a .parquet (columns path and
    label); relative paths are relative to the list's folder. Labels are class names (the classes, sorted)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = PurePosixPath(uri.split("?")[0]).suffix.lower()
    data = read_bytes(uri, limit=1024 * 2**20)
    try:
        if suffix == ".parquet":
            table = pq.read_table(pa.BufferReader(data), columns=["path", "label"])
        else:
            first = data.split(b"\n", 1)[0].strip().lower().replace(b" ", b"")
            names = None if first == b"path,label" else ["path", "label"]
            table = pacsv.read_csv(pa.BufferReader(data), read_options=pacsv.ReadOptions(column_names=names),
                                   convert_options=pacsv.ConvertOptions(column_types={"path": pa.string(),
                                                                                      "label": pa.string()}))
    except (pa.ArrowInvalid, KeyError, OSError) as error:
        raise InvalidInputError(f"{uri} is not a list of images: expected columns path,label ({error}).") from None
    paths, labels = table.column("path").to_pylist(), table.column("label").to_pylist()
    if any(p is None or not str(p).strip() for p in paths) or any(v is None for v in labels):
        raise InvalidInputError(f"{uri}: every row needs a path and a label.")
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    absolute = [p if "://" in p or p.startswith("/") else f"{base}/{p}" for p in (str(p).strip() for p in paths)]
    classes = tuple(sorted({str(v) for v in labels}))
    if len(classes) < 2:
        raise InvalidInputError(f"{uri} names {len(classes)} class; at least two are needed.")
    index = {c: i for i, c in enumerate(classes)}
    table = _table(paths, [index[str(v)] for v in labels], absolute, None, None, None)
    return Source(PurePosixPath(uri.split("?")[0]).stem, classes, table)


def source_from_folder_uri(uri: str) -> Source:
    """A folder of class folders on storage pyarrow reads (s3://bucket/set/cats/1.jpg): listed, not header-checked."""
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"Cannot list {uri}: {error}") from None
    found = []
    for info in infos:
        relative = PurePosixPath(info.path[len(root):].lstrip("/"))
        if info.type == fs.FileType.File and len(relative.parts) == 2 and relative.suffix.lower() in images.SUFFIXES:
            found.append((relative.parts[0], f"{uri.rstrip('/')}/{relative}", relative.as_posix()))
    found.sort(key=lambda f: f[2])
    classes = tuple(sorted({c for c, _, _ in found}))
    if len(classes) < 2:
        raise InvalidInputError(f"{uri} has {len(classes)} class folder(s) with images; at least two are needed.")
    index = {c: i for i, c in enumerate(classes)}
    table = _table([r for _, _, r in found], [index[c] for c, _, _ in found], [p for _, p, _ in found], None, None, None)
    return Source(PurePosixPath(root).name, classes, table)


def open_source(text: str, *, seed: int = 0, n: int | None = None) -> Source:
    """What `--engine ray` reads: a list file (.txt, .csv, .parquet: path,label), a folder URI, or anything
    `datasets.load` opens (digits, shapes, a local folder or zip), sampled to at most `n` rows as `load` samples."""
    suffix = PurePosixPath(text.split("?")[0]).suffix.lower()
    if suffix in LISTS:
        source = source_from_list(text)
    elif "://" in text:
        source = source_from_folder_uri(text)
    else:
        return source_of(datasets.load(text, seed=seed, n=n))
    if n is not None and n < len(source):
        import pyarrow as pa

        rows = np.sort(splits.sample(source.labels, n, seed)) if n >= len(source.classes) else np.arange(n)
        table = source.table.take(rows)
        table = table.set_column(0, "index", pa.array(np.arange(len(rows), dtype=np.int64)))
        source = replace(source, table=table)
    return source
