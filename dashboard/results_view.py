"""The Datasets page's "Open a results folder": the results of `python -m core audit|embed|evaluate` written by either
engine (in-process, or Ray on a cluster), browsed here without recomputing anything but the map of the features: the
per-class statistics, the confusion matrix, the per-class mean maps and the review galleries from the stored maps
(drawn by audit_view), and a t-SNE of the features (on a sample when there are many, the rest placed by openTSNE's
transform).

Only folders under the operator's data roots are offered and opened (core.roots.resolve); an image is shown under its
map only when the path the job recorded lies under a root too, else the map is shown alone.
"""

from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import streamlit as st

from core import embeddings, evaluation, images, results, roots
from core.errors import InvalidInputError
from dashboard import audit_view, charts

TSNE_SAMPLE = 3000  # points fitted by t-SNE; the others are placed on its map


@st.cache_data(ttl=30, show_spinner="Looking for results folders…")
def _folders(paths: tuple[str, ...]) -> tuple[results.Found, ...]:
    return results.list_folders(tuple(Path(p) for p in paths))


@st.cache_resource(max_entries=4, show_spinner="Reading the results…")
def _read(path: str, stamp: float) -> results.Results:
    """The results folder at `path` (already resolved under a root); `stamp` (its summary's mtime) keys the cache."""
    return results.read(path)


@st.cache_data(max_entries=4, show_spinner="t-SNE of the stored features…")
def _tsne(path: str, stamp: float, _features: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return embeddings.tsne_sampled(_features, sample=TSNE_SAMPLE, seed=seed)


class _Pictures:
    """The results' images by row, read only where the recorded path lies under a data root (else None)."""

    def __init__(self, found: results.Results, configured: roots.Roots) -> None:
        self.paths, self.roots = found.paths, configured

    def __getitem__(self, index: int):
        if not self.paths or not self.paths[index] or "://" in str(self.paths[index]):
            return None
        path = PurePath(str(self.paths[index]))
        try:
            folder = roots.resolve(path.parent, self.roots)
            file = folder / path.name
            if file.is_symlink() or not file.is_file():
                return None
            return images.decode(file.read_bytes(), max_side=512).image
        except (InvalidInputError, OSError):
            return None


def page() -> None:
    """Pick a results folder under the data roots and show it."""
    configured = roots.configured()
    found = _folders(tuple(str(p) for p in configured.paths))
    if not found:
        st.info("No results folder under the data roots yet. Write one there with `python -m core audit DATASET --out "
                "DIR` (either engine); roots: " + ", ".join(f"`{p}`" for p in configured.paths) + ".")
        return
    by_path = {str(f.path): f for f in found}
    chosen = st.selectbox("Results folder", list(by_path), format_func=lambda p: by_path[p].label(),
                          key="results_folder", help="Folders with a summary.json under the operator's data roots.")
    try:
        folder = roots.resolve(chosen, configured)
        opened = _read(str(folder), (folder / results.SUMMARY).stat().st_mtime)
    except (InvalidInputError, OSError) as error:
        st.error(str(error))
        return
    settings = opened.settings
    nodes = settings.get("nodes") or {}
    st.subheader(f"{settings.get('dataset', '')}: {len(opened)} images, {settings.get('model', '')}")
    st.caption(f"{opened.kind} results written by the {opened.engine} engine"
               + (f" on {len(nodes)} node(s)" if nodes else "")
               + f", {float(settings.get('seconds', 0)):.1f} s" + (f" (+ {settings['startup_seconds']:.1f} s start-up)"
                                                                 if "startup_seconds" in settings else "") + ".")
    pictures = _Pictures(opened, configured)
    if opened.audit is not None:
        _audit(opened, pictures)
    else:
        _features(opened)
    if opened.features is not None and len(opened) >= 5:
        _map(opened, str(folder), (folder / results.SUMMARY).stat().st_mtime)


def _audit(opened: results.Results, pictures) -> None:
    found = opened.audit
    st.header("Per class")
    st.dataframe(pd.DataFrame(found.summary()), hide_index=True)
    if found.comparable:
        scored = evaluation.metrics(found.labels, found.predictions, found.classes)
        _confusion(scored, found.classes, lambda rows: _gallery(pictures, found, rows))
    audit_view.mean_maps(pictures, found)
    audit_view.galleries(pictures, found, key="results_review")


def _gallery(pictures, found, rows) -> None:
    columns = st.columns(6)
    for place, index in enumerate(rows[:audit_view.GALLERY]):
        columns[place % 6].image(audit_view.overlay(pictures, found, int(index)), width=audit_view.SIDE,
                                 caption=f"{found.files[index]} → {found.categories[found.predictions[index]]}")


def _features(opened: results.Results) -> None:
    categories = tuple(opened.settings.get("categories") or ())
    try:
        scored = evaluation.evaluate(opened.embeddings.features, opened.embeddings.logits, opened.labels,
                                     opened.classes, categories=categories)
    except InvalidInputError as error:
        st.info(f"No evaluation: {error}")
        return
    st.caption(f"Predictions by {scored.method}" + (f" (trained on {scored.train_size} images)"
                                                    if scored.train_size else "") + ".")
    _confusion(scored, opened.classes, lambda rows: st.dataframe(
        pd.DataFrame({"file": [opened.files[r] for r in rows]}), hide_index=True))


def _confusion(scored: evaluation.Evaluation, classes, show) -> None:
    st.header("Confusion matrix and metrics")
    a, b = st.columns([1, 3])
    a.metric("Accuracy", f"{scored.accuracy:.1%}", help=f"on {len(scored.indices)} images ({scored.method})")
    clicked = b.plotly_chart(charts.confusion(scored.confusion, classes, clickable=True), width="stretch",
                             on_select="rerun", key="results_confusion", selection_mode="points")
    charts.per_class_table(scored.per_class, key="results_per_class")
    try:
        true, predicted = clicked["selection"]["points"][0]["customdata"]
    except (KeyError, IndexError, TypeError):
        return
    rows = scored.cell(int(true), int(predicted))
    st.subheader(f"True {classes[int(true)]}, predicted {classes[int(predicted)]}: {len(rows)} image(s)")
    show(rows)


def _map(opened: results.Results, path: str, stamp: float) -> None:
    st.header("Feature map")
    many = len(opened) > TSNE_SAMPLE
    st.caption(f"t-SNE of the stored features" + (f": fitted on {TSNE_SAMPLE:,} of the {len(opened):,} points, the "
                                                  "others placed on that map by openTSNE's transform." if many else "."))
    if not st.toggle("Compute the map", value=False, key="results_tsne"):
        return
    points, fitted = _tsne(path, stamp, opened.features, 0)
    groups = {name: np.flatnonzero(opened.labels == c).tolist() for c, name in enumerate(opened.classes)}
    texts = [f"{opened.files[r]}<br>true: {opened.classes[opened.labels[r]]}" + ("" if fitted[r] else "<br>(placed)")
             for r in range(len(opened))]
    st.plotly_chart(charts.scatter(points, groups, texts, legend="true label"), width="stretch", key="results_scatter")
