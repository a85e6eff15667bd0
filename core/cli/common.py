"""What every subcommand does the same way: read an image, load a model, write a file, report progress."""

import sys
from pathlib import Path

from core import embeddings, images, models, registry, user_weights
from core.errors import InvalidInputError


def read_image(path: Path):
    """The decoded image at `path` (its notes on stderr), or InvalidInputError saying why it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"No such file: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder; give an image file.") from None
    except OSError as error:
        raise InvalidInputError(f"Cannot read {path}: {error.strerror or error}") from None
    decoded = images.decode(data)
    for note in decoded.notes:
        sys.stderr.write(f"note: {note}\n")
    return decoded.image


def load_model(args, name: str | None = None) -> models.LoadedModel:
    """`name` (default --model) with its pretrained weights, random ones (--random-weights), or the user's
    (--checkpoint FILE, class names from --labels FILE), what was adapted on stderr."""
    name = name or args.model
    registry.get(name)  # unknown names fail before anything heavy
    checkpoint, labels = getattr(args, "checkpoint", None), getattr(args, "labels", None)
    if checkpoint is None:
        if labels is not None:
            raise InvalidInputError("--labels names the classes of a --checkpoint; give --checkpoint FILE too.")
        return models.load(name, device=args.device, pretrained=not args.random_weights)
    if args.random_weights:
        raise InvalidInputError("--checkpoint gives the weights and --random-weights asks for none: choose one.")
    return user_weights.load(name, checkpoint, labels=labels, device=args.device,
                             on_note=lambda message: sys.stderr.write(f"note: {message}\n"))


def one_model_with_checkpoint(args, names: list[str]) -> None:
    """--checkpoint holds one network's weights: refuse it with several --models."""
    if getattr(args, "checkpoint", None) is not None and len(names) != 1:
        raise InvalidInputError(f"--checkpoint holds the weights of one architecture; --models lists {len(names)} "
                                f"({', '.join(names)}). Give the one the checkpoint was trained from.")


def image_paths(given: list[Path]) -> list[Path]:
    """The files given, with each folder replaced by the image files in it (sorted)."""
    paths: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in images.SUFFIXES and p.is_file())
            if not found:
                raise InvalidInputError(f"The folder {path} holds no image files ({', '.join(sorted(images.SUFFIXES))}).")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        raise InvalidInputError(f"Cannot write {path}: {error.strerror or error}") from None


def dataset_notes(dataset) -> None:
    """What was left out of a dataset, on stderr: skipped files per reason, other files ignored."""
    for reason, count in dataset.skipped_reasons().items():
        sys.stderr.write(f"note: skipped {count} file(s): {reason}\n")
    if dataset.ignored:
        sys.stderr.write(f"note: {dataset.ignored_summary()}\n")


def precision_note(precision: str, kind: str, device) -> None:
    """For --precision auto, what it runs for this job `kind` on `device` and why, on stderr."""
    if precision == "auto":
        sys.stderr.write(f"note: {embeddings.auto_note(kind, device)}\n")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 2:
        raise InvalidInputError(f"--limit must be at least 2, got {limit}.")


def progress_line(fraction: float, message: str) -> None:
    """One progress line on stderr, rewritten in place, ended when the work is done."""
    sys.stderr.write(f"\r{message}   " + ("\n" if fraction >= 1 else ""))
