"""Records as plain JSON-ready values: the one place a frozen dataclass becomes a dict.

`to_dict(record)` walks a dataclass field by field (`dataclasses.fields`), turning nested records, tuples, numpy
arrays and scalars, and paths into dicts, lists, numbers and strings. A record whose JSON is not its fields (a
score reported through its properties) says so with its own `to_dict()` method, which is used instead. Two field
options, in `field(metadata=...)`: `{"key": "class"}` writes the field under another name (a Python keyword),
`{"omit_none": True}` leaves the key out while the value is None (a zero-shot-only mapping).
"""

import dataclasses
import json
from pathlib import PurePath

import numpy as np


def to_dict(record) -> dict:
    """The record's JSON-ready dict (see the module docstring)."""
    value = plain(record)
    if not isinstance(value, dict):
        raise TypeError(f"to_dict takes a record (a dataclass), got {type(record).__name__}.")
    return value


def to_json(record, **options) -> str:
    """`json.dumps(to_dict(record), **options)`."""
    return json.dumps(to_dict(record), **options)


def plain(value):
    """`value` as JSON-ready data: records, mappings, sequences, numpy values and paths, recursively."""
    own = getattr(value, "to_dict", None)
    if callable(own) and not isinstance(value, type):
        return plain(own())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("key", f.name)] = plain(item)
        return out
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    return value
