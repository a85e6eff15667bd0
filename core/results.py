"""A dataset job's results folder read back, whichever engine wrote it: `audit.write`'s audit.parquet + maps.npy
(+ features.npy) or core.distributed's part-*.parquet shards (maps and features as columns), each with its
summary.json. An audit comes back as the same `audit.Audit` record the in-process job returns, so every view of it
(per-class statistics, mean maps, review galleries, the confusion matrix) is drawn by the same code; a feature job
comes back as `embeddings.Embeddings` with the rows' files and labels.

The folder is untrusted input (the dashboard opens folders under the operator's data roots, core.roots): only
regular files with these names are read, never through a symbolic link, and every column is checked.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import audit, audit_both, embeddings
from core.audit import Audit
from core.embeddings import Embeddings
from core.errors import InvalidInputError

SUMMARY = "summary.json"
MAX_SUMMARY = 64 * 2**20


@dataclass(frozen=True, eq=False)
class Results:
    """A results folder: its settings (summary.json), and the audit or the features it holds."""

    folder: Path
    kind: str  # "audit" or "features"
    engine: str  # "in-process" or "ray"
    settings: dict = field(repr=False)
    classes: tuple[str, ...]
    files: tuple[str, ...] = field(repr=False)
    labels: np.ndarray = field(repr=False)  # (N,) int64 into classes
    audit: Audit | None = field(default=None, repr=False)
    embeddings: Embeddings | None = field(default=None, repr=False)
    paths: tuple[str | None, ...] = field(default=(), repr=False)  # where each image was read, when the job said

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def features(self) -> np.ndarray | None:
        if self.embeddings is not None:
            return self.embeddings.features
        return self.audit.features if self.audit is not None and self.audit.features.size else None


def _file(folder: Path, name: str) -> Path | None:
    path = folder / name
    if path.is_symlink():
        raise InvalidInputError(f"{name} in the results folder is a symbolic link; refused.")
    return path if path.is_file() else None


def is_results(folder: Path) -> bool:
    """Whether `folder` holds a results summary (a cheap check for listings)."""
    path = folder / SUMMARY
    return path.is_file() and not path.is_symlink()


def read(folder: str | Path) -> Results:
    """The results in `folder`.

    Raises:
        InvalidInputError: no summary.json, an unknown kind, missing or inconsistent tables.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    summary = _file(folder, SUMMARY)
    if summary is None:
        raise InvalidInputError(f"{folder} holds no {SUMMARY}: not the results of `python -m core audit|embed|evaluate`.")
    if summary.stat().st_size > MAX_SUMMARY:
        raise InvalidInputError(f"{SUMMARY} is larger than {MAX_SUMMARY // 2**20} MB; refused.")
    try:
        settings = json.loads(summary.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{SUMMARY} is not JSON ({error}).") from None
    if not isinstance(settings, dict):
        raise InvalidInputError(f"{SUMMARY} is not a JSON object.")
    kind = settings.get("kind", "audit")
    classes = _names(settings, "class_names")
    if kind not in ("audit", "features"):
        raise InvalidInputError(f"Unknown kind of results '{kind}': expected audit or features.")
    whole = _file(folder, "audit.parquet")
    try:
        if whole is not None:
            table = pq.read_table(whole)
        else:
            shards = sorted(p for p in folder.glob("part-*.parquet") if p.is_file() and not p.is_symlink())
            if not shards:
                raise InvalidInputError(f"{folder} holds no audit.parquet and no part-*.parquet shards.")
            table = pa.concat_tables([pq.read_table(p) for p in shards], promote_options="default")
            table = table.sort_by("index") if "index" in table.column_names else table
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidInputError(f"The results tables cannot be read ({error}).") from None
    for column in ("file", "label"):
        if column not in table.column_names:
            raise InvalidInputError(f"The results table has no '{column}' column.")
    if "index" in table.column_names:
        index = table.column("index").to_numpy()
        if not np.array_equal(index, np.arange(len(index))):
            raise InvalidInputError("The shards' rows are not every image once (index 0..N-1): an incomplete job.")
    files = tuple(str(f) for f in table.column("file").to_pylist())
    labels = _indices(table.column("label").to_pylist(), classes, "label")
    paths = tuple(table.column("path").to_pylist()) if "path" in table.column_names else ()
    base = dict(folder=folder, kind=kind, engine=str(settings.get("engine", "in-process")), settings=settings,
                classes=classes, files=files, labels=labels, paths=paths)
    if kind == "features":
        features = _matrix(table, "features", folder)
        logits = _matrix(table, "logits", folder) if "logits" in table.column_names else None
        found = embeddings.Embeddings(features, logits, str(settings.get("model", "")),
                                      str(settings.get("precision", "fp32")), int(settings.get("image_size", 0)),
                                      float(settings.get("seconds", 0.0)))
        return Results(**base, embeddings=found)
    return Results(**base, audit=_audit(table, settings, folder, classes, files, labels))


def _names(settings: dict, key: str) -> tuple[str, ...]:
    names = settings.get(key)
    if names is None and key == "class_names" and isinstance(settings.get("classes"), list):
        names = [c.get("class") for c in settings["classes"] if isinstance(c, dict)]  # an older in-process summary
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(f"{SUMMARY} has no list of {key.replace('_', ' ')}.")
    return tuple(names)


def _indices(values, names: tuple[str, ...], what: str) -> np.ndarray:
    lookup: dict[str, int] = {}
    for i, name in enumerate(names):
        lookup.setdefault(name, i)  # a name the model has twice (ImageNet's two cranes): the first
    try:
        return np.asarray([lookup[str(v)] for v in values], dtype=np.int64)
    except KeyError as error:
        raise InvalidInputError(f"A {what} in the results ({error}) is not one of the summary's classes.") from None


def _matrix(table, column: str, folder: Path) -> np.ndarray:
    if column in table.column_names:
        values = table.column(column).combine_chunks()
        width = values.type.list_size
        return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32)
    stored = _file(folder, f"{column}.npy")
    if stored is None:
        raise InvalidInputError(f"The results hold no {column}.")
    return np.load(stored, allow_pickle=False).astype(np.float32)


def _audit(table, settings: dict, folder: Path, classes, files, labels) -> audit.Audit:
    categories = _names(settings, "categories")
    n = len(files)
    side = int(settings.get("map_side", audit.MAP_SIDE))
    maps = _maps(table, folder, "map", "maps.npy", n, side)
    both = settings.get("target") == "both"  # the true class's maps too (map_true or maps_true.npy)
    maps_true = _maps(table, folder, "map_true", "maps_true.npy", n, side) if both else None
    tops = sorted(int(c[3:]) for c in table.column_names if c.startswith("top") and c[3:].isdigit())
    top_classes = np.stack([_indices(table.column(f"top{k}").to_pylist(), categories, "class") for k in tops], axis=1)
    top_probabilities = np.stack([table.column(f"top{k}_probability").to_numpy() for k in tops], axis=1)
    stats = {}
    plain = (*audit.STATISTICS, *audit.MASK_STATISTICS)
    for name in (*plain, *audit_both.names(plain)):
        if name in table.column_names:
            values = table.column(name).to_numpy(zero_copy_only=False)
            stats[name] = values.astype(bool) if name.startswith("pointing_hit") else values.astype(np.float32)
    try:
        features = _matrix(table, "features", folder)
    except InvalidInputError:
        features = np.zeros((n, 0), np.float32)
    return audit.Audit(
        model=str(settings.get("model", "")), method=str(settings.get("method", "")),
        layer=str(settings.get("layer", "")), target=str(settings.get("target", "predicted")),
        precision=str(settings.get("precision", "fp32")), image_size=int(settings.get("image_size", 0)),
        seconds=float(settings.get("seconds", 0.0)), dataset=str(settings.get("dataset", "")), classes=classes,
        categories=categories, files=files, labels=labels,
        predictions=_indices(table.column("prediction").to_pylist(), categories, "prediction"),
        top_classes=top_classes, top_probabilities=top_probabilities.astype(np.float32),
        explained=_indices(table.column("explained").to_pylist(), categories, "class"),
        features=features, maps=np.asarray(maps, dtype=np.float16), stats=stats,
        maps_true=None if maps_true is None else np.asarray(maps_true, dtype=np.float16),
    )


def _maps(table, folder: Path, column: str, name: str, n: int, side: int) -> np.ndarray:
    """(n, side, side) maps from a binary column of the shards, or from the .npy file `name` beside the table."""
    if column in table.column_names:
        raw = b"".join(table.column(column).to_pylist())
        if len(raw) != n * side * side * 2:
            raise InvalidInputError(f"The {column} column does not hold {n} maps of {side} x {side}.")
        return np.frombuffer(raw, dtype=np.float16).reshape(n, side, side)
    stored = _file(folder, name)
    if stored is None:
        raise InvalidInputError(f"The results hold no maps ({name} or a {column} column).")
    maps = np.load(stored, allow_pickle=False)
    if maps.shape != (n, side, side):
        raise InvalidInputError(f"{n} rows but {name} of shape {maps.shape}.")
    return maps


@dataclass(frozen=True)
class Found:
    """A results folder under a data root: `path` is what `roots.resolve` accepts."""

    name: str  # the root's name and the path below it
    path: Path
    kind: str
    engine: str
    images: int

    def label(self) -> str:
        return f"{self.name} · {self.kind}, {self.images:,} images ({self.engine})"


def list_folders(paths: tuple[Path, ...], *, max_entries: int = 100_000, max_depth: int = 6) -> tuple[Found, ...]:
    """Every results folder (one holding a summary.json of a dataset job) under the data roots `paths`, symbolic
    links never followed, hidden folders passed over, at most `max_entries` entries looked at per root."""
    import os

    found: list[Found] = []
    for root in paths:
        seen, stack = 0, [(Path(root), 0)]
        while stack and seen < max_entries:
            folder, depth = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            seen += len(entries)
            for entry in entries:
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False) and depth < max_depth:
                    stack.append((Path(entry.path), depth + 1))
                elif entry.name == SUMMARY and entry.is_file(follow_symlinks=False):
                    described = _described(Path(entry.path))
                    if described is not None:
                        below = folder.relative_to(root).as_posix()
                        name = root.name if below == "." else f"{root.name}/{below}"
                        found.append(Found(name, folder, *described))
    return tuple(sorted(found, key=lambda f: f.name))


def _described(summary: Path) -> tuple[str, str, int] | None:
    try:
        if summary.stat().st_size > MAX_SUMMARY:
            return None
        settings = json.loads(summary.read_text(encoding="utf-8"))
        kind, images = settings.get("kind", "audit"), int(settings.get("images", 0))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        return None
    if kind not in ("audit", "features") or "categories" not in settings and kind == "audit":
        return None
    return str(kind), str(settings.get("engine", "in-process")), images
