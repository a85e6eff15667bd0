"""Caches bounded in bytes, not in entries: what the server keeps for all sessions fits a set budget.

An entry count says nothing about memory: 64 heatmaps of small samples are 13 MB, 64 of 12-MP phone photos
3 GB. Here every kept value is measured (`nbytes`) and a `Budget` evicts the least recently used values,
across all the stores that share it, until the total fits. A value larger than `largest` (a quarter of the
budget by default) is returned but not kept, so one huge upload cannot push everything else out.

Two budgets, from the environment (megabytes):
- VISIONLENS_CACHE_MB (default 1024): pictures, heatmaps, overlays, feature maps, dataset features, results.
- VISIONLENS_MODEL_CACHE_MB (default 2048): loaded models and private copies of them (randomised, probes);
  here one value may take half the budget (a model not kept would load again on every rerun).
No Streamlit and no torch here: tensors and modules are measured through their own methods (duck typing).
"""

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from PIL import Image

MB = 2**20
DEFAULT_DATA_MB = 1024  # about 70 phone photos' pictures and heatmaps, thousands of small ones
DEFAULT_MODEL_MB = 2048
LARGEST_SHARE = 0.25  # a value over this share of its budget is not kept

# Pillow keeps 8-bit multi-band images as 4 bytes per pixel (RGB included), 32-bit modes as 4.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_MISSING = object()


def megabytes_from_env(variable: str, default: int) -> int:
    """The budget in bytes from `variable` (megabytes, a positive number), else `default` megabytes."""
    raw = os.environ.get(variable, "").strip()
    try:
        value = float(raw) if raw else float(default)
    except ValueError:
        value = float(default)
    return int(max(value, 1.0) * MB)


def nbytes(value, _seen: set[int] | None = None) -> int:
    """The memory `value` holds, counting arrays, pictures, bytes, tensors and modules inside it (each once)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if value is None or isinstance(value, bool | int | float | complex | str):
        return sys.getsizeof(value)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, np.generic):
        return int(value.nbytes)
    if isinstance(value, Image.Image):
        return value.width * value.height * _PIXEL_BYTES.get(value.mode, 4) + 200
    if hasattr(value, "untyped_storage") and hasattr(value, "element_size"):  # a torch tensor
        return int(value.untyped_storage().nbytes())
    if callable(getattr(value, "parameters", None)) and callable(getattr(value, "buffers", None)):  # a module
        tensors = {t.data_ptr(): t for t in (*value.parameters(), *value.buffers())}
        return sum(int(t.untyped_storage().nbytes()) for t in tensors.values()) + 10_000
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(nbytes(k, seen) + nbytes(v, seen) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + sum(nbytes(item, seen) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = sum(nbytes(getattr(value, f.name, None), seen) for f in dataclasses.fields(value))
        extra = vars(value) if hasattr(value, "__dict__") else {}
        names = {f.name for f in dataclasses.fields(value)}
        return 64 + inner + sum(nbytes(v, seen) for k, v in extra.items() if k not in names)
    if hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        return sys.getsizeof(value) + sum(nbytes(v, seen) for v in vars(value).values())
    return sys.getsizeof(value)


class Budget:
    """Values of several named stores under one byte limit, least recently used evicted first. Thread-safe."""

    def __init__(self, name: str, limit: int, *, largest: int | None = None) -> None:
        self.name = name
        self.limit = int(limit)
        self.largest = int(largest if largest is not None else limit * LARGEST_SHARE)
        self.total = 0
        self.refused = 0  # values not kept because they were over `largest`
        self._items: OrderedDict = OrderedDict()  # (store, key) -> (value, bytes)
        self._counts: dict[str, int] = {}
        self._flights: dict = {}  # (store, key) -> [lock, threads using it]: one computation per missing key
        self.lock = threading.Lock()

    def get(self, store: str, key, default=None):
        with self.lock:
            entry = self._items.get((store, key))
            if entry is None:
                return default
            self._items.move_to_end((store, key))
            return entry[0]

    def put(self, store: str, key, value, *, max_entries: int | None = None) -> bool:
        """Keep `value` (True), or do not (False: larger than `largest`); evicts what it must to fit."""
        size = nbytes(value)
        with self.lock:
            self._pop((store, key))
            if size > self.largest:
                self.refused += 1
                return False
            self._items[(store, key)] = (value, size)
            self._counts[store] = self._counts.get(store, 0) + 1
            self.total += size
            if max_entries is not None and self._counts[store] > max_entries:
                oldest = next(k for k in self._items if k[0] == store)
                self._pop(oldest)
            while self.total > self.limit and len(self._items) > 1:
                self._pop(next(iter(self._items)))
            return True

    @contextlib.contextmanager
    def computing(self, store: str, key):
        """Held while one thread computes the value for (store, key); others asking for it wait."""
        with self.lock:
            entry = self._flights.get((store, key))
            if entry is None:
                entry = self._flights[(store, key)] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self.lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._flights.pop((store, key), None)

    def clear(self, store: str | None = None) -> None:
        with self.lock:
            for key in [k for k in self._items if store is None or k[0] == store]:
                self._pop(key)

    def _pop(self, key) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            self.total -= entry[1]
            self._counts[key[0]] -= 1

    def usage(self) -> dict[str, int]:
        """Bytes held per store (for the README's server note and the tests)."""
        with self.lock:
            held: dict[str, int] = {}
            for (store, _key), (_value, size) in self._items.items():
                held[store] = held.get(store, 0) + size
            return held

    def __len__(self) -> int:
        return len(self._items)


class Store:
    """One named store in a Budget: `get(key, compute)`, `peek`, `put`, like a dict with a memory limit."""

    def __init__(self, budget: Budget, name: str, *, max_entries: int | None = None) -> None:
        self.budget, self.name, self.max_entries = budget, name, max_entries

    def get(self, key, compute: Callable[[], object]):
        """The kept value, else compute() (kept if it fits). Sessions asking for the same missing key at once
        wait for one computation (thirty students opening the app load the model once)."""
        value = self.budget.get(self.name, key, _MISSING)
        if value is not _MISSING:
            return value
        with self.budget.computing(self.name, key):
            value = self.budget.get(self.name, key, _MISSING)
            if value is _MISSING:
                value = compute()
                self.put(key, value)
        return value

    def peek(self, key, default=None):
        """The value for `key` if it is kept, else `default` (computes nothing)."""
        return self.budget.get(self.name, key, default)

    def put(self, key, value) -> bool:
        return self.budget.put(self.name, key, value, max_entries=self.max_entries)

    def clear(self) -> None:
        self.budget.clear(self.name)


def memoize(budget: Callable[[], Budget], *, around: Callable[[], object] | None = None,
            max_entries: int | None = None):
    """Cache a function's results in a store of `budget()` named after the function (`budget` is a callable, so
    that the budget can itself be a cached resource), keyed like st.cache_data: by every argument whose name
    does not start with an underscore. `around()`, when given, is a context manager entered around a
    computation (a spinner). The wrapper's `clear()` drops what it kept.
    """
    def wrap(function):
        signature = inspect.signature(function)
        name = f"{function.__module__}.{function.__qualname__}"

        @functools.wraps(function)
        def cached(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = tuple((k, v) for k, v in bound.arguments.items() if not k.startswith("_"))

            def compute():
                if around is None:
                    return function(*args, **kwargs)
                with around():
                    return function(*args, **kwargs)

            return Store(budget(), name, max_entries=max_entries).get(key, compute)

        cached.clear = lambda: budget().clear(name)
        return cached

    return wrap
