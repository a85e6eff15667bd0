"""The whole zoo as records: every torchvision builder, every timm pretrained config and the project's own backbones.

Parameters, multiply-adds, family and prefix tokens of timm's configs need a built network, so they are read
once by scripts/build_catalogue.py (on the meta device, core.network_facts) into assets/catalogue.json; the
rest comes from each source's metadata when asked. `registry.catalogue()` and `registry.search()` read this;
`search` filters entries (core.backbone_spec.CatalogueEntry) for them.
"""

import json
from functools import cache
from pathlib import Path

from core import network_facts

FILE = Path(__file__).resolve().parents[1] / "assets" / "catalogue.json"
FORMAT = "visionlens-catalogue-1"
TORCHVISION_COLUMNS = ("family", "prefix_tokens", "head")
TIMM_COLUMNS = ("params", "gmacs", "family", "prefix_tokens", "head")  # head: null when it is the config's classifier


def torchvision_row(facts) -> list:
    return [facts.family, facts.prefix_tokens, facts.head]


def timm_row(name: str, facts) -> list:
    from timm.models import get_pretrained_cfg

    head = None if facts.head == network_facts.classifier(get_pretrained_cfg(name)) else facts.head
    return [facts.params, facts.gmacs, facts.family, facts.prefix_tokens, head]


@cache
def document() -> dict:
    """assets/catalogue.json, read once ({} when it is missing: facts are then derived per model)."""
    try:
        return json.loads(FILE.read_text())
    except FileNotFoundError:
        return {}


def row(source: str, name: str) -> dict | None:
    """The stored facts of one model as {column: value}, None when the file has no row for it."""
    values = document().get(source, {}).get(name)
    if values is None:
        return None
    columns = TORCHVISION_COLUMNS if source == "torchvision" else TIMM_COLUMNS
    return dict(zip(columns, values, strict=True))


def _normal(text: str) -> str:
    return "".join(c for c in text.lower() if c not in "-_ ")


def search(found, text: str, *, family=None, source=None, weights_here=None, max_params=None, min_params=None):
    """`found` filtered as `registry.search` describes."""
    text = str(text or "")[:200]
    words = [w for w in (_normal(word) for word in text.split()) if w]
    query = _normal(text)
    picked = []
    for entry in found:
        key = _normal(entry.name) + " " + _normal(entry.title)
        if any(word not in key for word in words):
            continue
        if family and entry.family != family:
            continue
        if source and entry.source != source and not entry.source.startswith(source + " "):
            continue
        if max_params is not None and (entry.params is None or entry.params > max_params):
            continue
        if min_params is not None and (entry.params is None or entry.params < min_params):
            continue
        picked.append(entry)
    if weights_here is not None:
        picked = [entry for entry in picked if entry.weights_here() == weights_here]

    def rank(entry) -> int:
        names = (_normal(entry.name), _normal(entry.name.rpartition("/")[2]), _normal(entry.title))
        if query and query in names:
            return 0
        return 1 if query and any(n.startswith(query) for n in names) else 2

    return tuple(sorted(picked, key=rank))
