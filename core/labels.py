"""Class names from a labels file: one per line (`labels.txt`), a JSON list, or a JSON object of indices.

A user's checkpoint names its classes with one of these; every file is untrusted text, checked within limits.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInputError

SUFFIXES = (".txt", ".json")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 * 2**20
    max_classes: int = 100_000  # ImageNet-21k has 21,843
    max_text: int = 200  # characters of a class name


def read(
    source: bytes | str | Path, *, classes: int | None = None, limits: Limits = Limits()
) -> tuple[str, ...]:
    """Class names from a labels file: one per line (`labels.txt`), a JSON list of names, or a JSON object
    {"0": name, "1": name, ...} (a value may be a list whose last item is the name, as in ImageNet's
    `imagenet_class_index.json`). With `classes`, the count must be that.

    Raises:
        InvalidInputError: unreadable, empty, too large, blank or duplicate names, or the wrong count.
    """
    data, name = _read_file(source, limits)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"The labels file {name} is not UTF-8 text: give one class name per line, or a JSON "
                                "list of names.") from None
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        names = _json_labels(stripped, name)
    else:
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        if blank:
            raise InvalidInputError(f"The labels file {name} has a blank line (line {blank[0]}): give one class name "
                                    "per line, in the order of the model's outputs.")
        names = [line.strip() for line in lines]
    if not names:
        raise InvalidInputError(f"The labels file {name} lists no class names.")
    if len(names) > limits.max_classes:
        raise InvalidInputError(f"The labels file lists {len(names):,} names; at most {limits.max_classes:,} accepted.")
    for label in names:
        if len(label) > limits.max_text:
            raise InvalidInputError(f"A class name in {name} has {len(label)} characters; at most {limits.max_text}.")
    seen: set[str] = set()
    twice = [label for label in names if label in seen or seen.add(label)]
    if twice:
        raise InvalidInputError(f"The labels file {name} lists '{twice[0][:60]}' twice; class names must be unique.")
    if classes is not None:
        check_count(names, classes, name)
    return tuple(names)


def check_count(names, classes: int, name: str) -> None:
    """One name per output of the model's head, or InvalidInputError saying both counts."""
    if len(names) != classes:
        raise InvalidInputError(f"The labels file {name} lists {len(names)} class names, but the model's head has "
                                f"{classes} outputs. Give one name per output, in order.")


def _read_file(source, limits: Limits) -> tuple[bytes, str]:
    """(bytes, display name) of a labels file, refused over the size limit before it is read."""
    if isinstance(source, bytes | bytearray | memoryview):
        data, name = bytes(source), "(uploaded)"
    elif isinstance(source, str | Path):
        path = Path(source).expanduser()
        name = path.name
        if not path.is_file():
            raise InvalidInputError(f"No such labels file: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        if path.stat().st_size > limits.max_bytes:
            raise InvalidInputError(f"The labels file {name} is {path.stat().st_size / 2**20:,.1f} MB; at most "
                                    f"{limits.max_bytes / 2**20:,.0f} MB are accepted.")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InvalidInputError(f"Cannot read {path}: {error.strerror or error}") from None
    else:
        raise InvalidInputError(f"Give the labels file as a path or as bytes, not a {type(source).__name__}.")
    if len(data) > limits.max_bytes:
        raise InvalidInputError(f"The labels file is {len(data) / 2**20:,.1f} MB; at most "
                                f"{limits.max_bytes / 2**20:,.0f} MB are accepted.")
    return data, name


def _json_labels(text: str, name: str) -> list[str]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidInputError(f"The labels file {name} starts like JSON but is not valid JSON.") from None
    if isinstance(document, dict):
        try:
            order = sorted(document, key=int)
        except (TypeError, ValueError):
            raise InvalidInputError(f"The labels file {name} is a JSON object whose keys are not class indices "
                                    '("0", "1", ...): give a JSON list of names instead.') from None
        if [int(k) for k in order] != list(range(len(order))):
            raise InvalidInputError(f"The labels file {name} must number its classes 0, 1, 2, ... without gaps.")
        document = [document[k][-1] if isinstance(document[k], list) and document[k] else document[k] for k in order]
    if not isinstance(document, list) or not all(isinstance(label, str) for label in document):
        raise InvalidInputError(f"The labels file {name} must be a JSON list of class names (strings).")
    blank = [i for i, label in enumerate(document) if not label.strip()]
    if blank:
        raise InvalidInputError(f"The labels file {name} has an empty class name (index {blank[0]}).")
    return [label.strip() for label in document]
