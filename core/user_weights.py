"""A user's own weights for a known architecture: a state dict file, checked, then loaded onto the registry's network.

Accepted: `.safetensors` (its header is read and checked against the architecture before a byte of tensor data
is), and `torch.save` files (`.pth`, `.pt`, `.bin`) read only with `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers. The file's kind is told by its bytes, not its name.
Refused with the reason: TorchScript archives, pickled whole models or code, truncated or oversized files,
NaN/inf values, and state dicts that do not fit the architecture (which keys are missing, which are
unexpected, which shapes differ, and what to do).

The common wrappers are unwrapped (`{"state_dict": ...}`, `{"model": ...}`, `{"model_state_dict": ...}`)
and the `module.` (DataParallel) and `model.` prefixes stripped where that makes the keys fit. The number
of classes is the head's: `spec.head`'s weight has one row per class; a head of another size than the
architecture's is replaced (`core.heads`). Class names come from a labels file (`labels`), or are
numbered ("class 0", ...), or are the architecture's own when the head keeps its size.
"""

import hashlib
import io
import json
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from core import baselines, heads, models, registry
from core.labels import check_count
from core.labels import read as read_labels
from core.errors import InvalidInputError
from core.models import LoadedModel
from core.registry import BackboneSpec

SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SOURCE = "user weights"
WRAPPERS = ("state_dict", "model_state_dict", "model")  # the keys a training script's checkpoint keeps them under
PREFIXES = ("module.", "model.", "module.model.", "model.module.")
PICKLED = ("this file is a pickled Python object (a whole model or code); save `model.state_dict()` with torch.save "
           "or safetensors instead")
# safetensors dtype -> (bytes per element, floating point)
_DTYPES = {"F64": (8, True), "F32": (4, True), "F16": (2, True), "BF16": (2, True), "I64": (8, False),
           "I32": (4, False), "I16": (2, False), "I8": (1, False), "U8": (1, False), "BOOL": (1, False)}
_HINT_CANDIDATES = 60  # registered architectures tried (on the meta device) to say which one a file is for


@dataclass(frozen=True)
class Limits:
    """What a user's weights file may hold before it is refused."""

    max_file_bytes: int = 2 * 2**30  # ViT-B/16 in float32 is about 350 MB
    max_header_bytes: int = 8 * 2**20  # the safetensors JSON header
    max_tensors: int = 20_000


@dataclass(frozen=True)
class _Entry:
    """One tensor as a file lists it: enough to check it against the architecture before reading it."""

    floating: bool
    shape: tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Public API


def load(
    architecture: str | BackboneSpec,
    weights: bytes | str | Path,
    *,
    labels: bytes | str | Path | None = None,
    filename: str | None = None,
    device: str = "cpu",
    limits: Limits = Limits(),
    on_note: Callable[[str], None] | None = None,
) -> LoadedModel:
    """A frozen LoadedModel: `architecture` (a registry name or a spec) with the state dict in `weights`.

    `weights`: a path, or the file's bytes (an upload; give `filename` for the title). `labels`: a labels file
    (path or bytes, see `core.labels.read`). `on_note`: told what was adapted (a prefix stripped, a head replaced).

    Raises:
        UnknownModelError: an unknown architecture name.
        InvalidInputError: the file cannot be read safely, or its tensors do not fit the architecture; the
            message says what is wrong and what to do.
    """
    spec = architecture if isinstance(architecture, BackboneSpec) else registry.get(architecture)
    note = on_note or (lambda message: None)
    names = read_labels(labels) if labels is not None else None  # a bad labels file fails first
    file = _open(weights, filename, limits)
    name, path = file.name, file.path
    if _is_safetensors(file.head(10)):
        listing = _safetensors_listing(file, limits)  # the header only: no tensor byte is read before the checks
        tensors = None
    else:
        tensors = _torch_state_dict(file.all(), limits, note)
        listing = {key: _Entry(t.is_floating_point(), tuple(t.shape)) for key, t in tensors.items()}
    if len(listing) > limits.max_tensors:
        raise InvalidInputError(f"{name} holds {len(listing):,} tensors; at most {limits.max_tensors:,} are accepted.")
    if not listing:
        raise InvalidInputError(f"{name} holds no tensors: it is not a state dict.")
    module = spec.build(False)
    expected = _listing(module)
    renamed, prefix = _align(list(listing), expected)
    if prefix:
        note(f"stripped the '{prefix}' prefix from the keys")
    listing = {renamed[key]: entry for key, entry in listing.items()}
    classes, in_features = _head_shape(spec, listing, expected)
    _fit_head(module, spec, classes, in_features, note)
    reference = module.state_dict()
    _check_fit(spec, listing, reference, name)
    if tensors is None:
        tensors = _safetensors_tensors(file)
    state = {renamed[key]: tensor for key, tensor in tensors.items()}
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidInputError(f"{name}: tensor '{key}' holds NaN or infinite values; refused. Were the weights "
                                    "saved after training diverged?")
    for key in reference.keys() - state.keys():  # only num_batches_tracked can be missing (see _check_fit)
        state[key] = reference[key]
    module.load_state_dict(state, strict=True)
    categories = _categories(spec, classes, names, labels, note)
    label_set = "labels file" if names is not None else spec.label_set if categories == spec.categories else "numbered"
    loaded_spec = replace(
        spec, title=f"{spec.title} ({name})", source=SOURCE, build=baselines.no_builder, categories=categories,
        weights_file=path, weights_url=None, hub_id=None, label_set=label_set, params=None, gmacs=None, top1=None,
    )
    return models.ready(loaded_spec, module, device=device, pretrained=True)


def digest(source: bytes | str | Path) -> str:
    """The sha256 (hex) of a file or of bytes: the key to cache a loaded model by its content."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    hasher = hashlib.sha256()
    with Path(source).expanduser().open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            hasher.update(block)
    return hasher.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading the file


@dataclass(frozen=True)
class _File:
    """A weights file as bytes in memory or a path on disk, read in part (a header) or whole."""

    name: str
    path: Path | None
    size: int
    data: bytes | None = None

    def head(self, count: int) -> bytes:
        if self.data is not None:
            return self.data[:count]
        with self.path.open("rb") as file:
            return file.read(count)

    def all(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise InvalidInputError(f"Cannot read {self.path}: {error.strerror or error}") from None


def _open(source, filename: str | None, limits: Limits) -> _File:
    """The weights file, refused over the size limit before it is read."""
    if isinstance(source, bytes | bytearray | memoryview):
        file = _File(filename or "uploaded weights file", None, len(source), bytes(source))
    elif isinstance(source, str | Path):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"No such weights file: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        file = _File(filename or path.name, path, path.stat().st_size)
    else:
        raise InvalidInputError(f"Give the weights file as a path or as bytes, not a {type(source).__name__}.")
    if file.size > limits.max_file_bytes:
        raise InvalidInputError(f"{file.name} is {file.size / 2**20:,.0f} MB; at most "
                                f"{limits.max_file_bytes / 2**20:,.0f} MB are accepted for a weights file.")
    return file


def _is_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object."""
    return len(data) >= 10 and data[8:9] == b"{"


def _safetensors_listing(file: _File, limits: Limits) -> dict[str, _Entry]:
    """The tensors a safetensors file lists, checked (dtypes, shapes, offsets, the file's length) before any is read."""
    (header_size,) = struct.unpack("<Q", file.head(8))
    if header_size > limits.max_header_bytes:
        raise InvalidInputError(f"The safetensors header declares {header_size:,} bytes (at most "
                                f"{limits.max_header_bytes:,} accepted): the file is damaged or not safetensors.")
    data = file.head(8 + header_size)
    if 8 + header_size > file.size:
        raise InvalidInputError("The safetensors file is truncated: it ends inside its header. Download or copy it again.")
    try:
        header = json.loads(data[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInputError("The safetensors header is not valid JSON: the file is damaged.") from None
    if not isinstance(header, dict):
        raise InvalidInputError("The safetensors header is not a JSON object: the file is damaged.")
    header.pop("__metadata__", None)
    if len(header) > limits.max_tensors:
        raise InvalidInputError(f"The file lists {len(header):,} tensors; at most {limits.max_tensors:,} are accepted.")
    listing, end = {}, 0
    for key, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if dtype not in _DTYPES:
            raise InvalidInputError(f"Tensor '{str(key)[:80]}' is stored as {str(dtype)[:12]}; readable: "
                                    f"{', '.join(_DTYPES)}.")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
                or len(shape) > 8):
            raise InvalidInputError(f"Tensor '{str(key)[:80]}' has a bad shape in the header: the file is damaged.")
        count = 1
        for side in shape:
            count *= side
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or offsets[0] < 0 or offsets[1] - offsets[0] != count * _DTYPES[dtype][0]):
            raise InvalidInputError(f"Tensor '{str(key)[:80]}' has data offsets that do not match its shape: the file "
                                    "is damaged.")
        end = max(end, offsets[1])
        listing[str(key)] = _Entry(_DTYPES[dtype][1], tuple(shape))
    body = file.size - 8 - header_size
    if body < end:
        raise InvalidInputError(f"The safetensors file is truncated: its header lists {end:,} bytes of tensor data, the "
                                f"file holds {body:,}. Download or copy it again.")
    if body > end:
        raise InvalidInputError(f"The safetensors file has {body - end:,} bytes after its tensors: it is damaged; refused.")
    return listing


def _safetensors_tensors(file: _File) -> dict[str, torch.Tensor]:
    import safetensors.torch
    from safetensors import SafetensorError

    try:
        if file.data is not None:
            return safetensors.torch.load(file.data)
        return safetensors.torch.load_file(file.path, device="cpu")
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise InvalidInputError(f"{file.name} is not a readable safetensors file ({error}).") from None


def _torch_state_dict(data: bytes, limits: Limits, note: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """A torch.save file read with weights_only=True, after refusing TorchScript; unwrapped to a flat state dict."""
    if data[:4] == b"PK\x03\x04":
        try:
            entries = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise InvalidInputError("The file is a truncated or damaged torch.save archive (its zip directory is "
                                    "missing). Download or copy it again.") from None
        inner = {entry.partition("/")[2] for entry in entries}
        if "constants.pkl" in inner or any(entry.startswith("code/") for entry in inner):
            raise InvalidInputError("The file is a TorchScript archive (torch.jit.save): it holds code, which VisionLens "
                                    "never runs. Save `model.state_dict()` with torch.save or safetensors instead.")
    elif data[:1] != b"\x80":
        raise InvalidInputError("The file is neither safetensors nor a torch.save file (.pth/.pt/.bin). Save "
                                "`model.state_dict()` with torch.save or safetensors.")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error).lower():
            raise InvalidInputError(f"Refused: {PICKLED}. ({_unpickler_reason(error)})") from None
        raise InvalidInputError(f"The file is a damaged torch.save file ({_first_line(error)}).") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as error:
        raise InvalidInputError(f"The file is a truncated or damaged torch.save file ({type(error).__name__}: "
                                f"{_first_line(error)}). Download or copy it again.") from None
    return _unwrap(loaded, note)


def _unpickler_reason(error: BaseException) -> str:
    """What torch.load(weights_only=True) refused, without its advice to load untrusted files unsafely."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if found:
        return f"it refers to {found.group(1)}, which a file of tensors never needs"
    found = re.search(r"WeightsUnpickler error: ([^\n]{1,200})", str(error))
    return f"torch.load with weights_only=True refused it: {found.group(1) if found else 'not tensors'}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _unwrap(loaded, note: Callable[[str], None]) -> dict[str, torch.Tensor]:
    if isinstance(loaded, nn.Module):  # cannot happen under weights_only, kept as a belt
        raise InvalidInputError(f"Refused: {PICKLED}.")
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"The file holds a {type(loaded).__name__}, not a state dict (a dict of tensors). "
                                "Save `model.state_dict()`.")
    for _ in range(3):  # {"model": {"state_dict": ...}} too
        key = next((k for k in WRAPPERS if isinstance(loaded.get(k), dict) and loaded[k]), None)
        if key is None or all(isinstance(v, torch.Tensor) for v in loaded.values()):
            break
        note(f"took the state dict under '{key}'")
        loaded = loaded[key]
    not_tensors = [str(k)[:60] for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InvalidInputError(f"The file is not a flat state dict: {len(not_tensors)} entries are not tensors "
                                f"(e.g. {', '.join(not_tensors[:3])}). Give `model.state_dict()`, or a dict holding it "
                                f"under one of: {', '.join(WRAPPERS)}.")
    return {str(k): v for k, v in loaded.items()}


# ---------------------------------------------------------------------------------------------
# Fitting the architecture


def _listing(module: nn.Module) -> dict[str, _Entry]:
    return {k: _Entry(t.is_floating_point(), tuple(t.shape)) for k, t in module.state_dict().items()}


def _meta_listing(spec: BackboneSpec) -> dict[str, _Entry]:
    """Another architecture's tensors, from a build on the meta device (no memory, no weights), cached."""
    cached = _META.get(spec.name)
    if cached is None or cached[0] is not spec.build:
        with torch.device("meta"):
            cached = _META[spec.name] = (spec.build, _listing(spec.build(False)))
    return cached[1]


_META: dict[str, tuple[Callable, dict[str, _Entry]]] = {}


def _align(keys: list[str], expected: dict[str, _Entry]) -> tuple[dict[str, str], str]:
    """{file key: architecture key}, stripping the wrapper prefix that makes most keys fit (or none)."""
    best, best_prefix, best_hits = {k: k for k in keys}, "", sum(k in expected for k in keys)
    for prefix in PREFIXES:
        if not any(k.startswith(prefix) for k in keys):
            continue
        mapping = {k: k.removeprefix(prefix) for k in keys}
        hits = sum(v in expected for v in mapping.values())
        if hits > best_hits and len(set(mapping.values())) == len(mapping):
            best, best_prefix, best_hits = mapping, prefix, hits
    return best, best_prefix


def _head_shape(spec: BackboneSpec, listing: dict[str, _Entry], expected: dict[str, _Entry]) -> tuple[int, int]:
    """(classes, in_features) of the file's head, or the architecture's when the file has no head weight."""
    key = f"{spec.head}.weight"
    ours = expected.get(key)
    if ours is None or len(ours.shape) != 2:
        raise InvalidInputError(f"{spec.title}'s head '{spec.head}' is not a Linear layer: its weights cannot be "
                                "loaded with another number of classes.")
    theirs = listing.get(key)
    if theirs is None or len(theirs.shape) != 2 or theirs.shape[0] < 1:
        return ours.shape  # reported as missing or as a shape mismatch by _check_fit
    return theirs.shape


def _fit_head(module: nn.Module, spec: BackboneSpec, classes: int, in_features: int, note: Callable[[str], None]) -> None:
    """A new Linear head when the file's has another number of classes (a different in_features is a misfit)."""
    old = module.get_submodule(spec.head)
    if isinstance(old, nn.Linear) and old.out_features != classes and old.in_features == in_features:
        heads.install(module, spec.head, heads.Head("linear", spec.head, in_features, classes).build())
        note(f"head '{spec.head}' replaced: {classes} classes instead of {old.out_features}")


def _check_fit(spec: BackboneSpec, listing: dict[str, _Entry], reference: dict[str, torch.Tensor], name: str) -> None:
    """Every tensor the network has, of its shape and kind, and nothing else; else say what differs and what to do."""
    missing = [k for k in reference if k not in listing and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in listing if k not in reference]
    shapes = [(k, tuple(reference[k].shape), listing[k].shape) for k in reference
              if k in listing and listing[k].shape != tuple(reference[k].shape)]
    kinds = [k for k in reference if k in listing and listing[k].floating != reference[k].is_floating_point()]
    if not (missing or unexpected or shapes or kinds):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape(s) differ: " + "; ".join(
            f"{k} expected {list(want)}, got {list(got)}" for k, want, got in shapes[:4])
            + (f"; and {len(shapes) - 4} more" if len(shapes) > 4 else ""))
    if kinds:
        parts.append(f"{len(kinds)} tensor(s) of the wrong kind (integer vs floating point): {_few(kinds)}")
    hint = _which_architecture(spec, listing)
    advice = (hint or f"Check that the file was saved from a {spec.title} ({spec.name}) and give that architecture "
              "(--model), or save `model.state_dict()` of the network you trained.")
    raise InvalidInputError(f"{name} does not fit {spec.title} ({spec.name}): {'. '.join(parts)}. {advice}")


def _few(keys: list[str], shown: int = 5) -> str:
    return ", ".join(k[:80] for k in keys[:shown]) + (f", … ({len(keys) - shown} more)" if len(keys) > shown else "")


def _which_architecture(spec: BackboneSpec, listing: dict[str, _Entry]) -> str:
    """'This looks like a ResNet-50 state dict...' when another registered architecture fits the file's keys."""
    for other in [n for n in registry.names() if n != spec.name][:_HINT_CANDIDATES]:
        candidate = _fits(other, spec.source, {k: e.shape for k, e in listing.items()})
        if candidate:
            return (f"This looks like a {candidate} ({other}) state dict, not {spec.title}: choose --model {other} "
                    "(or that architecture in the picker).")
    return ""


def _fits(name: str, source: str, listing: dict[str, tuple[int, ...]]) -> str:
    """The title of `name` when it comes from `source` and its network has exactly these keys and shapes (the
    head's class count aside). Only one zoo's names are tried: a file for a torchvision network has its keys."""
    try:
        spec = registry.get(name)
        if spec.source != source:
            return ""
        expected = _meta_listing(spec)
    except Exception:  # an architecture that cannot be built on the meta device gives no hint
        return ""
    renamed, _ = _align(list(listing), expected)
    listing = {renamed[k]: shape for k, shape in listing.items()}
    head = f"{spec.head}."
    wanted = {k: e.shape for k, e in expected.items() if not k.endswith("num_batches_tracked")}
    if not set(wanted) <= set(listing) or not set(listing) <= set(expected):
        return ""
    for key, shape in wanted.items():
        if listing[key] != shape and not (key.startswith(head) and listing[key][1:] == shape[1:]):
            return ""
    return spec.title


def _categories(spec: BackboneSpec, classes: int, names: tuple[str, ...] | None, labels,
                note: Callable[[str], None]) -> tuple[str, ...]:
    if names is not None:
        check_count(names, classes, Path(labels).name if isinstance(labels, str | Path) else "(uploaded)")
        return names
    if classes == len(spec.categories):
        note(f"no labels file: the architecture's own {classes} class names are used")
        return spec.categories
    note(f"no labels file: the {classes} classes are numbered (give a labels file for their names)")
    return tuple(f"class {i}" for i in range(classes))
