"""Trained models as files: safetensors weights plus a small JSON saying how to rebuild, feed and explain them.

Loading never unpickles anything (no `torch.load`): the JSON is parsed within size limits and checked
field by field, the network is rebuilt from the registry (or a baseline) with random weights, and the
safetensors header must list exactly the tensors, shapes and dtypes that network has, before a byte
of weights is read. Anything else is refused with an InvalidInputError that says what was wrong.
"""

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core import baselines, heads, hooks, records, registry
from core.errors import InvalidInputError, did_you_mean
from core.models import LoadedModel
from core.runtime import resolve_device

FORMAT = "visionlens-checkpoint"
VERSION = 1
JSON_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
INTERPOLATIONS = ("bilinear", "bicubic")
_REQUIRED = {"format", "version", "base", "title", "head", "classes", "preprocessing", "cam_layer"}
_OPTIONAL = {"trained"}
_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Limits:
    """What an import may hold before it is refused."""

    max_json_bytes: int = 256 * 1024
    max_weights_bytes: int = 2 * 2**30  # ViT-B/16 in float32 is about 350 MB
    max_header_bytes: int = 8 * 2**20  # the safetensors JSON header
    max_classes: int = 10_000
    max_text: int = 200  # characters of a class name, a title, a layer path


@dataclass(frozen=True)
class Exported:
    json: Path
    weights: Path


@dataclass(frozen=True)
class Trained:
    """The plain facts about a training run that an export keeps in its JSON ("trained")."""

    dataset: str
    strategy: str
    test_accuracy: float
    best_epoch: int

    @classmethod
    def of(cls, run) -> "Trained":
        """From a `training.RunResult` (read by duck typing: checkpoints does not depend on training)."""
        return cls(run.dataset, run.config.strategy, run.accuracy, run.best_epoch)


# ---------------------------------------------------------------------------------------------
# Export


def manifest(model: LoadedModel, *, trained: Trained | None = None) -> dict:
    """The JSON description of `model`: base backbone, head, classes, preprocessing and CAM layer."""
    head = heads.head_of(model)
    base = model.spec.name
    if base not in baselines.BASELINES and not registry.known(base):
        raise InvalidInputError(f"'{base}' is neither a registered backbone nor a baseline: it cannot be exported.")
    spec = model.spec
    document = {
        "format": FORMAT,
        "version": VERSION,
        "base": base,
        "title": spec.title,
        "head": {"kind": head.kind, "slot": head.slot, "in_features": head.in_features, "hidden": head.hidden,
                 "dropout": head.dropout},
        "classes": list(spec.categories),
        "preprocessing": {"input_size": list(spec.input_size), "resize_size": spec.resize_size,
                          "mean": list(spec.mean), "std": list(spec.std), "interpolation": spec.interpolation},
        "cam_layer": spec.cam_layer,
    }
    if trained:
        document["trained"] = records.to_dict(trained)
    return document


def serialize(model: LoadedModel, *, trained: Trained | None = None) -> tuple[bytes, bytes]:
    """(JSON bytes, safetensors bytes) of `model`. `trained`: the run's plain facts, kept in the JSON."""
    from safetensors.torch import save

    document = manifest(model, trained=trained)
    with model.lock:
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.module.state_dict().items()}
    weights = save(tensors, metadata={"format": "pt", "producer": FORMAT})
    return json.dumps(document, indent=2).encode("utf-8"), weights


def export(model: LoadedModel, directory: str | Path, *, trained: Trained | None = None) -> Exported:
    """Write `model.json` and `model.safetensors` into `directory` (created if needed).

    Raises:
        InvalidInputError: the folder cannot be written, or the model's base is unknown.
    """
    folder = Path(directory).expanduser()
    document, weights = serialize(model, trained=trained)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JSON_NAME).write_bytes(document)
        (folder / WEIGHTS_NAME).write_bytes(weights)
    except OSError as error:
        raise InvalidInputError(f"Cannot write the export to {folder}: {error.strerror or error}") from None
    return Exported(folder / JSON_NAME, folder / WEIGHTS_NAME)


# ---------------------------------------------------------------------------------------------
# Import


def load(
    source: str | Path | tuple[bytes, bytes], *, device: str = "cpu", limits: Limits = Limits()
) -> LoadedModel:
    """A frozen LoadedModel from an export folder or from (JSON bytes, safetensors bytes).

    Raises:
        InvalidInputError: missing files, files over the limits, a JSON that does not follow the
            format, an unknown backbone or head, or weights that are not exactly what the
            architecture expects (names, shapes, dtypes, finite values).
    """
    document_bytes, weights = _read(source, limits)
    document = _manifest(document_bytes, limits)
    head = heads.Head(document["head"]["kind"], document["head"]["slot"], document["head"]["in_features"],
                         len(document["classes"]), document["head"]["hidden"], document["head"]["dropout"])
    module = heads.architecture(document["base"], head)
    try:
        hooks.find(module, document["cam_layer"])
    except Exception:
        raise InvalidInputError(f"The JSON's cam_layer '{document['cam_layer']}' is not a layer of {document['base']}.") from None
    expected = module.state_dict()
    size = sum(t.numel() * t.element_size() for t in expected.values())
    _check_header(weights, expected, size, limits, head_path=head.path, classes=head.classes)
    tensors = _tensors(weights)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidInputError(f"The weights contain NaN or infinite values (tensor '{name}'); refused.")
    module.load_state_dict(tensors, strict=True)
    module.eval()
    module.requires_grad_(False)
    target = resolve_device(device)
    module.to(target)
    spec = _spec(document, head)
    return LoadedModel(spec=spec, module=module, device=target, pretrained=True,
                       params=sum(p.numel() for p in module.parameters()))


def _read(source, limits: Limits) -> tuple[bytes, bytes]:
    if isinstance(source, tuple):
        if len(source) != 2 or not all(isinstance(part, bytes | bytearray) for part in source):
            raise InvalidInputError("Give the export as (JSON bytes, safetensors bytes).")
        document, weights = bytes(source[0]), bytes(source[1])
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"'{source}' is not a folder. Give the folder that holds {JSON_NAME} and {WEIGHTS_NAME}.")
        document = _bounded(folder / JSON_NAME, limits.max_json_bytes, "JSON")
        weights = _bounded(folder / WEIGHTS_NAME, limits.max_weights_bytes, "weights")
    if len(document) > limits.max_json_bytes:
        raise InvalidInputError(f"The JSON file is {len(document) / 1024:.0f} KB; at most "
                                f"{limits.max_json_bytes // 1024} KB are accepted. Is it the right file?")
    if len(weights) > limits.max_weights_bytes:
        raise InvalidInputError(f"The weights file is {len(weights) / 2**20:.0f} MB; at most "
                                f"{limits.max_weights_bytes // 2**20} MB are accepted.")
    return document, weights


def _bounded(path: Path, limit: int, what: str) -> bytes:
    if not path.is_file():
        raise InvalidInputError(f"No {path.name} in {path.parent}: an export holds {JSON_NAME} and {WEIGHTS_NAME}.")
    if path.stat().st_size > limit:
        raise InvalidInputError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; at most {limit / 2**20:.1f} MB "
                                f"are accepted for the {what} file.")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"Cannot read {path}: {error.strerror or error}") from None


def _manifest(data: bytes, limits: Limits) -> dict:
    """The export's JSON, checked field by field."""
    if data[8:10] == b'{"' and any(byte < 9 for byte in data[:8]):  # a little-endian header length
        raise InvalidInputError(f"The JSON file looks like a safetensors weights file. Give {JSON_NAME} as the JSON and "
                                f"{WEIGHTS_NAME} as the weights.")
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise InvalidInputError("The JSON file is not JSON (it looks like a binary or weights file). Give the "
                                f"{JSON_NAME} written by the export.")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInputError(f"The JSON file is not valid JSON ({type(error).__name__}). Give the {JSON_NAME} "
                                "written by the export.") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"The JSON file must hold an object, got a {type(document).__name__}.")
    if document.get("format") != FORMAT:
        raise InvalidInputError(f"This JSON is not a VisionLens export (its 'format' is {str(document.get('format'))[:40]!r}, "
                                f"expected '{FORMAT}').")
    if document.get("version") != VERSION:
        raise InvalidInputError(f"Unsupported export version {str(document.get('version'))[:20]!r}; this VisionLens "
                                f"reads version {VERSION}.")
    missing = sorted(_REQUIRED - set(document))
    extra = sorted(set(document) - _REQUIRED - _OPTIONAL)
    if missing or extra:
        raise InvalidInputError("The JSON does not follow the export format: "
                                + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                                          extra and f"unknown {', '.join(e[:40] for e in extra[:5])}"]))
                                + ".")
    base = _text(document["base"], "base", limits)
    known = [*registry.names(), *baselines.BASELINES]
    if base not in baselines.BASELINES and not registry.known(base):
        raise InvalidInputError(f"Unknown backbone '{base}' in the JSON.{did_you_mean(base, known)} Known: {', '.join(known)}.")
    _text(document["title"], "title", limits)
    _text(document["cam_layer"], "cam_layer", limits)
    head = document["head"]
    if not isinstance(head, dict) or set(head) != {"kind", "slot", "in_features", "hidden", "dropout"}:
        raise InvalidInputError("The JSON's head must have exactly: kind, slot, in_features, hidden, dropout.")
    if head["kind"] not in heads.HEADS:
        raise InvalidInputError(f"Unknown head kind {str(head['kind'])[:40]!r}; known: {', '.join(heads.HEADS)}.")
    _text(head["slot"], "head slot", limits)
    _integer(head["in_features"], "head in_features", 1, 100_000)
    _integer(head["hidden"], "head hidden", 1 if head["kind"] == "mlp" else 0, 8192 if head["kind"] == "mlp" else 0)
    dropout = _number(head["dropout"], "head dropout", 0.0, 0.999)
    if head["kind"] == "linear" and dropout != 0:
        raise InvalidInputError("A linear head has no dropout; the JSON says otherwise.")
    classes = document["classes"]
    if not isinstance(classes, list) or not 2 <= len(classes) <= limits.max_classes:
        raise InvalidInputError(f"The JSON must list between 2 and {limits.max_classes} class names.")
    for name in classes:
        _text(name, "class name", limits)
    if len(set(classes)) != len(classes):
        raise InvalidInputError("The JSON lists a class name twice; class names must be unique.")
    pre = document["preprocessing"]
    if not isinstance(pre, dict) or set(pre) != {"input_size", "resize_size", "mean", "std", "interpolation"}:
        raise InvalidInputError("The JSON's preprocessing must have exactly: input_size, resize_size, mean, std, interpolation.")
    if not isinstance(pre["input_size"], list) or len(pre["input_size"]) != 2:
        raise InvalidInputError("preprocessing.input_size must be [height, width].")
    for side in pre["input_size"]:
        _integer(side, "input size", 16, 1024)
    _integer(pre["resize_size"], "resize size", 16, 2048)
    for key, low in (("mean", -10.0), ("std", 1e-6)):
        if not isinstance(pre[key], list) or len(pre[key]) != 3:
            raise InvalidInputError(f"preprocessing.{key} must hold 3 numbers (R, G, B).")
        for value in pre[key]:
            _number(value, f"preprocessing {key}", low, 10.0)
    if pre["interpolation"] not in INTERPOLATIONS:
        raise InvalidInputError(f"preprocessing.interpolation must be one of {', '.join(INTERPOLATIONS)}.")
    if "trained" in document:
        facts = document["trained"]
        if not isinstance(facts, dict) or len(facts) > 32:
            raise InvalidInputError("The JSON's 'trained' must be an object of at most 32 plain facts.")
        for key, value in facts.items():
            _text(key, "trained key", limits)
            if isinstance(value, str):
                _text(value, "trained value", limits)
            elif not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidInputError(f"The JSON's trained.{key[:40]} must be a string or a finite number.")
    return document


def _text(value, what: str, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limits.max_text:
        raise InvalidInputError(f"The JSON's {what} must be a non-empty string of at most {limits.max_text} characters.")
    return value


def _integer(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"The JSON's {what} must be a whole number between {low} and {high}, got {str(value)[:40]}.")
    return value


def _number(value, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidInputError(f"The JSON's {what} must be a number between {low} and {high}, got {str(value)[:40]}.")
    return float(value)


def _check_header(
    data: bytes, expected: dict[str, torch.Tensor], size: int, limits: Limits, *, head_path: str, classes: int
) -> None:
    """The safetensors header lists exactly the expected tensors, and the file has exactly their bytes."""
    if len(data) < 8:
        raise InvalidInputError(f"The weights file is {len(data)} bytes: too short to be a safetensors file.")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > limits.max_header_bytes or 8 + header_size > len(data):
        if data[:4] == b"PK\x03\x04":
            raise InvalidInputError(
                "The weights file is a PyTorch checkpoint (a torch.save zip of pickles), not safetensors. VisionLens "
                "never unpickles uploaded files: export the model with VisionLens, or save it with safetensors."
            )
        if data[:1] == b"\x80":
            raise InvalidInputError(
                "The weights file is a Python pickle (a .pth/.pkl file), not safetensors. VisionLens never unpickles "
                "uploaded files: export the model with VisionLens, or save it with safetensors."
            )
        if header_size > limits.max_header_bytes:
            raise InvalidInputError(
                f"The weights file declares a {header_size:,}-byte header (at most {limits.max_header_bytes:,} "
                "accepted): it is not a safetensors file we can read, or it is damaged."
            )
        raise InvalidInputError("The weights file is truncated: it ends inside its header. Download or copy it again.")
    try:
        header = json.loads(data[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInputError("The weights file's header is not valid JSON: it is not a safetensors file.") from None
    if not isinstance(header, dict):
        raise InvalidInputError("The weights file's header is not a safetensors header.")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidInputError("The weights file's __metadata__ must map strings to strings.")
    final = header.get(f"{head_path}.weight")
    if isinstance(final, dict) and isinstance(final.get("shape"), list) and final["shape"][:1] != [classes]:
        raise InvalidInputError(f"The JSON lists {classes} classes, but the weights' head has {str(final['shape'][:1])[1:-1] or 'no'} "
                                "outputs. Are the JSON and the weights from the same export?")
    missing = [name for name in expected if name not in header]
    unexpected = [name for name in header if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(str(n)[:60] for n in unexpected[:3])})")
        raise InvalidInputError(f"The weights do not match the architecture the JSON describes: {'; '.join(parts)} "
                                "tensor names. Are the JSON and the weights from the same export?")
    for name, reference in expected.items():
        entry = header[name]
        if not isinstance(entry, dict):
            raise InvalidInputError(f"The header entry of '{name}' is not an object.")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        want = _DTYPES.get(reference.dtype)
        if dtype != want:
            raise InvalidInputError(f"Tensor '{name}' is stored as {str(dtype)[:10]}; the architecture needs {want}.")
        if shape != list(reference.shape):
            raise InvalidInputError(f"Tensor '{name}' has shape {str(shape)[:60]}; the architecture needs "
                                    f"{list(reference.shape)}. Are the JSON and the weights from the same export?")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or offsets[1] - offsets[0] != reference.numel() * reference.element_size() or offsets[0] < 0):
            raise InvalidInputError(f"Tensor '{name}' has bad data offsets in the header: the file is damaged.")
    body = len(data) - 8 - header_size
    if body < size:
        raise InvalidInputError(f"The weights file is truncated: {body:,} bytes of tensor data, {size:,} expected.")
    if body > size:
        raise InvalidInputError(f"The weights file has {body - size:,} bytes more than its tensors need: refused.")


def _tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as parse

    try:
        return parse(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise InvalidInputError(f"The weights file is not a readable safetensors file ({error}).") from None


def _spec(document: dict, head: heads.Head) -> registry.BackboneSpec:
    base = document["base"]
    pre = document["preprocessing"]
    size = tuple(pre["input_size"])
    if base in baselines.BASELINES:
        spec = baselines.baseline_spec(base, document["classes"], size[0])
    else:
        spec = registry.get(base)
    return replace(
        spec, title=document["title"], source="imported", build=baselines.no_builder, head=head.path,
        cam_layer=document["cam_layer"], categories=tuple(document["classes"]), weights_file=None, weights_url=None,
        input_size=size, resize_size=pre["resize_size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
        interpolation=pre["interpolation"], fixed_size=True, params=None, gmacs=None, top1=None,
    )
