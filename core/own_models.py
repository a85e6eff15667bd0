"""A user's own weights offered under a backbone name, so every page, cache and command that takes a name takes them.

`register` checks the file once (`core.user_weights.load`: nothing executed, misfits explained), keeps it in a
folder by its content hash and registers a spec named `own/<hash>` that rebuilds the network from that file.
The same file (with the same labels, for the same architecture) gets the same name, in any session; the name
is not in `registry.names()`: a session sees the models it brought. Random weights give the same network
(the user's head included) with every parameter re-initialised.
"""

import hashlib
import os
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

from torch import nn

from core import registry, user_weights

PREFIX = "own/"
FOLDER_ENV = "VISIONLENS_OWN_MODELS"  # where uploaded weights are kept (default: a folder in the temp dir)


_BASES: dict[str, str] = {}  # own name -> the architecture's registry name


def base(name: str) -> str:
    """The architecture a backbone's weights go onto: its own name, or for a user's model, its architecture's."""
    return _BASES.get(name, name)


def folder() -> Path:
    return Path(os.environ.get(FOLDER_ENV) or Path(tempfile.gettempdir()) / "visionlens-own-models")


def register(architecture: str, weights: bytes, *, filename: str, labels: bytes | None = None) -> str:
    """The name `weights` (a state dict file's bytes, for registry backbone `architecture`) is offered under.

    Raises:
        UnknownModelError: an unknown architecture.
        InvalidInputError: the file or the labels cannot be used (the message says why and what to do).
    """
    base_spec = registry.get(base(architecture))
    digest = hashlib.sha256()
    for part in (base_spec.name.encode(), weights, labels or b""):
        digest.update(hashlib.sha256(part).digest())
    name = PREFIX + digest.hexdigest()[:16]
    if registry.known(name):
        return name
    loaded = user_weights.load(base_spec, weights, labels=labels, filename=filename, device="cpu")  # checks it all
    suffix = Path(filename).suffix.lower()  # the user's file name names nothing else on the server
    stored = folder() / f"{name.removeprefix(PREFIX)}{suffix if suffix in user_weights.SUFFIXES else '.bin'}"
    stored.parent.mkdir(parents=True, exist_ok=True)
    partial_file = stored.with_name(stored.name + ".partial")
    partial_file.write_bytes(weights)
    partial_file.replace(stored)  # a reader never sees half a file
    spec = replace(loaded.spec, name=name, weights_file=stored,
                   build=partial(_build, base_spec.name, stored, labels, filename))
    try:
        registry.register(spec, listed=False)
        _BASES[name] = base_spec.name
    except ValueError:  # another session registered the same file a moment ago
        pass
    return name


def _build(architecture: str, path: Path, labels: bytes | None, filename: str, pretrained: bool) -> nn.Module:
    module = user_weights.load(architecture, path, labels=labels, filename=filename, device="cpu").module
    if not pretrained:
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    return module
