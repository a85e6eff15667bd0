"""The Datasets page's "Where the model looks" tab: a heatmap for every image from one background job, then
per-class mean maps, review galleries sorted by a statistic of the maps (the images that may be right for the
wrong reasons), two backbones compared on the same images, and the per-image table as Parquet or CSV.

Widgets -> one job (`jobs.audit_job`, `core.audit.explain_dataset`) -> render from the stored maps: nothing here
recomputes a map.
"""

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import audit, audit_both, cams, images
from dashboard import cache, jobs, shelf, widgets

GALLERY = 12  # images per review gallery
SIDE = 128  # px of a gallery tile
TARGETS = {"predicted": "the predicted class", "true": "the true class",
           "both": "both (a wrong prediction's map beside its true class's)"}
WATCHED = {"first": "audit_watched_first", "second": "audit_watched_second"}
LAST = "audit_last"  # the settings of this session's last finished audit


def section(data, choice: widgets.Choice, *, precision: str, batch_size: int, size: int) -> None:
    """The whole tab for dataset `data` and the sidebar's backbone."""
    st.caption(
        "One background job gives every image its prediction, its features and a low-resolution heatmap "
        "(28 x 28), close to the speed of classifying the set (a CAM's backward pass stops at the target layer; a "
        "transformer's attention methods read every block's attention from the same pass). Sort the "
        "images by where the heat is to find those that are right for the wrong reasons."
    )
    model = cache.model(choice.name, choice.device, choice.pretrained)
    methods = cams.one_pass(model)  # on a transformer: the attention ones too
    a, b = st.columns(2)
    method = a.selectbox("Method (one pass)", methods, format_func=lambda m: cams.METHODS[m].title, key="audit_method")
    comparable = tuple(model.categories) == tuple(data.classes)
    targets = list(audit.TARGETS) if comparable else ["predicted"]
    target = b.selectbox("Explain", targets, key="audit_target", format_func=TARGETS.get,
                         help="Both: where the model looked for what it said and for what it should have said "
                         "(the second map only for the wrong predictions)." if comparable else
                         "The true class needs a model trained on these classes.")
    first = _audit(data, choice, "first", method=method, target=target, precision=precision, batch_size=batch_size,
                   size=size, start_label="Explain every image")
    if first is None:
        return
    st.caption(f"{len(first)} maps from {cams.METHODS[first.method].title} at `{first.layer}`, {first.precision}"
               f"{' (auto)' if precision == 'auto' else ''}, "
               f"{first.images_per_second:.0f} images/s.")
    mean_maps(data.images, first)
    galleries(data.images, first)
    _compare(data, choice, first, precision=precision, batch_size=batch_size, size=size)
    _downloads(first)


def _audit(data, choice, which: str, *, method: str, target: str, precision: str, batch_size: int, size: int,
           start_label: str):
    """The finished audit of `data` by `choice`, or None while it is not there (a Start button, or its progress)."""
    settings = (choice.name, choice.device, choice.pretrained, data, method, target, precision, batch_size, size)
    ready = jobs.audit_ready(*settings)
    if ready is not None:
        widgets.follow(WATCHED[which], None, leave=jobs.dataset_job_leave)
        if which == "first":  # the features tab shows these stored maps beside its own (the set by its hash)
            st.session_state[LAST] = (*settings[:3], data.content_hash, *settings[4:])
        return ready
    running = st.session_state.get(WATCHED[which])
    wanted = jobs.audit_key(*settings)
    if running is None or running.key != wanted:
        if not st.button(start_label, key=f"audit_start_{which}", type="primary" if which == "first" else "secondary"):
            return None
        running = jobs.audit_job(*settings, session=widgets.session_id())
        widgets.follow(WATCHED[which], running, leave=jobs.dataset_job_leave)
    if not running.done:  # no st.stop(): the other tab goes on rendering; the page reruns when the job ends
        widgets.job_progress(running, "Explaining every image", key=f"audit_stop_{which}")
        return None
    def forget(job) -> None:  # the next click starts over
        jobs.dataset_job_forget(job)
        st.session_state.pop(WATCHED[which], None)

    if not widgets.job_ended(running, again="Explain again", key=f"audit_again_{which}", forget=forget):
        return None
    return running.result


def stored(data, choice: widgets.Choice) -> audit.Audit | None:
    """This session's last finished audit of `data` by `choice`'s backbone, if it is still kept: its maps open
    with a click on a point or a cell, with no recomputation."""
    settings = st.session_state.get(LAST)
    if settings is None or settings[:4] != (choice.name, choice.device, choice.pretrained, data.content_hash):
        return None
    return jobs.audit_ready(*settings[:3], data, *settings[4:])


def overlay(pictures, result: audit.Audit, index: int, side: int = SIDE, *, true: bool = False) -> np.ndarray:
    """Image `index` of `pictures` (a dataset's images, or a results folder's, None where it cannot be read)
    squeezed to a square, as the model saw it, under its stored map (`true`: of its true class, target "both");
    the map alone on grey without the image."""
    picture, heat = pictures[index], result.heatmap(index, side, side, true=true)
    if picture is None:
        return images.overlay(Image.new("RGB", (side, side), (128, 128, 128)), heat, opacity=0.85)
    return images.overlay(picture.convert("RGB").resize((side, side)), heat)


def mean_maps(pictures, result: audit.Audit) -> None:
    """Each class's mean map over its mean image (grey where `pictures` has none), correct and wrong apart."""
    st.subheader("Where it looks, class by class")
    groups = [("correct", True), ("wrong", False)] if result.comparable else [("all images", None)]
    st.caption("Each class's mean heatmap over the class's mean image"
               + (", for its correct and its wrong predictions." if result.comparable else
                  " (the model's classes are not the dataset's, so correct and wrong are not told apart)."))
    for title, correct in groups:
        means = result.mean_maps(correct=correct)
        columns = st.columns(min(len(result.classes), 6))
        for index, name in enumerate(result.classes):
            column = columns[index % len(columns)]
            rows = np.flatnonzero((result.labels == index) & (np.ones(len(result), bool) if correct is None
                                                              else result.correct == correct))
            if not len(rows):
                column.caption(f"{widgets.plain(name)} ({title}): none")
                continue
            shown = [p for p in (pictures[r] for r in rows[:200]) if p is not None]
            mean = images.mean_picture(shown, SIDE) if shown else Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
            heat = means[index]
            heat = heat / heat.max() if heat.max() > 0 else heat
            column.image(images.overlay(mean, audit.upsample(heat, SIDE, SIDE)), width=SIDE,
                         caption=f"{name} · {title} · {len(rows)}")


def galleries(pictures, result: audit.Audit, *, key: str = "audit_review") -> None:
    """The review galleries: images ranked by a statistic of their stored maps."""
    st.subheader("Review")
    offered = audit.reviews(result)
    title = st.selectbox("Show", [r[0] for r in offered], key=key)
    _, statistic, descending, correct = next(r for r in offered if r[0] == title)
    rows = result.ranked(statistic, descending=descending, correct=correct)[:GALLERY]
    if statistic == "heat_border":
        st.caption(f"A uniform map puts {audit.uniform_border():.0%} of its heat on the border band "
                   f"({audit.BORDER:.1%} of the side on each edge): read the values against that.")
    if not len(rows):
        st.info("No image fits this review.")
        return
    both = result.maps_true is not None  # a wrong prediction's two maps side by side: fewer, wider tiles
    columns = st.columns(3 if both else 6)
    for place, index in enumerate(rows):
        label = result.classes[result.labels[index]]
        guess = result.categories[result.predictions[index]]
        caption = f"{label} → {guess} · {statistic.replace('_', ' ')} {result.stats[statistic][index]:.2f}"
        column = columns[place % len(columns)]
        if not both or result.explained[index] == result.labels[index]:
            column.image(overlay(pictures, result, int(index)), caption=caption, width=SIDE)
            continue
        left, right = column.columns(2)
        left.image(overlay(pictures, result, int(index)), caption=f"looked for {guess} · {caption}", width=SIDE)
        again = result.stats.get(f"{statistic}{audit_both.SUFFIX}")
        right.image(overlay(pictures, result, int(index), true=True), width=SIDE,
                    caption=f"looked for {label}" + ("" if again is None else
                                                     f" · {statistic.replace('_', ' ')} {again[index]:.2f}"))


def _compare(data, choice, first: audit.Audit, *, precision: str, batch_size: int, size: int) -> None:
    st.subheader("Two backbones, the same images")
    names = [n for n in shelf.names() if n != choice.name]
    other = st.selectbox("Compare with", names, key="audit_other", format_func=lambda n: cache.spec(n).title)
    spec = cache.spec(other)
    second_choice = widgets.Choice(other, choice.device, cache.weights_here(other))
    shown = spec.title if second_choice.pretrained else f"{spec.title} (random weights: its weights are not here)"
    applies = not (cams.METHODS[first.method].cnn_only and spec.family != "cnn")
    method = first.method if applies else cams.DEFAULT_METHOD
    # the agreement compares the predicted classes' maps: a "both" audit's second maps are not needed there
    target = first.target if tuple(spec.categories) == tuple(data.classes) and first.target != "both" else "predicted"
    second = _audit(data, second_choice, "second", method=method, target=target, precision=precision,
                    batch_size=batch_size, size=spec.input_size[0] if spec.fixed_size else size,
                    start_label=f"Explain every image with {shown} too")
    if second is None:
        return
    rho, per_class = audit.agreement(first, second)
    st.dataframe(pd.DataFrame(per_class), hide_index=True)
    st.caption("Agreement: the rank correlation of the two heatmaps of each image (1: the same places, in the "
               "same order of heat), averaged per class.")
    st.markdown("**Where they disagree most**")
    for index in np.argsort(rho, kind="stable")[:4]:
        left, right = st.columns(2)
        label = data.classes[first.labels[index]]
        left.image(overlay(data.images, first, int(index), 2 * SIDE), width=2 * SIDE,
                   caption=f"{cache.spec(choice.name).title}: {first.categories[first.predictions[index]]} "
                           f"· true {label}")
        right.image(overlay(data.images, second, int(index), 2 * SIDE), width=2 * SIDE,
                    caption=f"{shown}: {second.categories[second.predictions[index]]} "
                            f"· agreement {rho[index]:.2f}")


def _downloads(result: audit.Audit) -> None:
    a, b = st.columns(2)
    a.download_button("Per-image table (Parquet)", audit.table_bytes(result, "parquet"), "audit.parquet",
                      mime="application/vnd.apache.parquet", key="audit_parquet")
    b.download_button("Per-image table (CSV)", audit.table_bytes(result, "csv"), "audit.csv", mime="text/csv",
                      key="audit_csv")
