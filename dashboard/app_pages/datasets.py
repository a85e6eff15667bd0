"""Datasets: class-folder zips and built-in sets -> features, t-SNE / PCA map, confusion matrix, metrics,
misclassified images with their heatmaps, and localisation scores on the shapes set."""

import pandas as pd
import streamlit as st

from core import cams, embeddings, images, probing
from dashboard import audit_view, cache, charts, dataset_cache, jobs, results_view, widgets

GALLERY = 8  # images shown per confusion-matrix cell
LOCALISATION_IMAGES = 48
JOB = "ds_job"  # the background job (features or t-SNE) this session is watching now, if any

st.title("Datasets")
st.caption(
    "Point a backbone at a labelled set: how do the classes cluster in feature space, where does the model "
    "confuse them, and do its heatmaps land on the object?"
)

st.session_state.pop(JOB, None)  # set again below while a job is watched
if st.toggle("Open a results folder", value=False, key="ds_results",
             help="The output of `python -m core audit|embed|evaluate` (in-process or --engine ray), written under a "
             "data root: browsed here without recomputing it."):
    results_view.page()
    st.stop()
choice = widgets.model_picker()
spec = cache.spec(choice.name)
WATCHED = {"features": "ds_watched_features", "tsne": "ds_watched_tsne"}  # the jobs this session waits for


def _follow(kind: str, job) -> None:
    """This session now waits for `job` ("features" or "tsne"; None: for nothing)."""
    widgets.follow(WATCHED[kind], job, leave=jobs.dataset_job_leave)


# ---------------------------------------------------------------------------------------------
# The dataset

data, seed = widgets.dataset_picker(key="ds", default_limit=300)
kind = st.session_state["ds_source"]

counts = data.counts()
st.subheader(f"{data.name}: {len(data)} images in {len(data.classes)} classes")
widgets.dataset_notes(data)
if data.skipped:
    reasons = ", ".join(f"{n} {reason}" for reason, n in data.skipped_reasons().items())
    st.warning(f"Skipped {len(data.skipped)} file(s): {reasons}.")
    with st.expander("Skipped files"):
        st.dataframe(pd.DataFrame([{"file": s.file, "reason": s.reason} for s in data.skipped]), hide_index=True)
if len(data.ignored) > 5:  # the caption names five
    with st.expander(f"Other files ignored ({len(data.ignored)})"):
        st.dataframe(pd.DataFrame({"file": data.ignored}), hide_index=True)

with st.expander("Sample images and class counts", expanded=True):
    chart, grid = st.columns([1, 2])
    chart.plotly_chart(charts.class_counts(counts), width="stretch")
    shown = data.examples(per_class=max(1, min(4, 32 // len(data.classes))))[:32]
    grid.image([dataset_cache.dataset_thumbnail(data, i) for i in shown],
               caption=[data.classes[data.labels[i]] for i in shown], width=72)

# ---------------------------------------------------------------------------------------------
# Features

with st.expander("Extraction settings"):
    a, b, c = st.columns(3)
    batch_size = a.selectbox("Batch size", [8, 16, 32, 64, 128], index=2, key="ds_batch")
    precision = b.selectbox(
        "Precision", dataset_cache.dataset_precisions(choice.device), key="ds_precision",
        help=f"Features: {embeddings.auto_note('features', choice.device)}  \nWhere the model looks: "
        f"{embeddings.auto_note('audit', choice.device)}  \nbf16 is offered on CPUs that run it natively (about "
        "twice as fast), for work where a few changed predictions do not matter.",
    )
    own = spec.input_size[0]
    sizes = [own] if spec.fixed_size else [own, *[s for s in (160, 128, 96) if s < own]]  # ViT, Swin: theirs only
    size = c.selectbox(
        "Image size (whole image, no crop)", sizes, index=sizes.index(128) if kind == "digits" and 128 in sizes else 0,
        format_func=lambda s: f"{s} px" + (" (the model's)" if s == own else ""), key="ds_size",
        help="Small pictures (digits are 8x8) lose little at a smaller size, and it is several times faster.",
    )

features_tab, looks_tab = st.tabs(["Features, predictions and metrics", "Where the model looks"])
with looks_tab:  # first: the features tab stops the script while its extraction runs
    audit_view.section(data, choice, precision=precision, batch_size=batch_size, size=size)

with features_tab:
    # in the background: a rerun (any click) re-attaches to the running extraction instead of restarting it
    embedded = jobs.dataset_features_ready(choice.name, choice.device, choice.pretrained, data, precision, batch_size,
                                            size)
    explaining = None if embedded is not None else jobs.dataset_features_pending(
        choice.name, choice.device, choice.pretrained, data, precision, batch_size, size)
    if explaining is not None:  # an audit of these settings gives the features too: one pass, not two
        _follow("features", None)  # this session's own extraction, if any, is left (stopped unless others wait)
        _follow("tsne", None)
        st.session_state[JOB] = explaining
        widgets.job_progress(explaining, "Explaining every image (the features come from the same pass)",
                             key="ds_stop_features_audit")
        st.stop()
    if embedded is None:
        job = jobs.dataset_features_job(choice.name, choice.device, choice.pretrained, data, precision, batch_size, size,
                                         session=widgets.session_id())
        _follow("features", job)
        _follow("tsne", None)  # a t-SNE of other features is no longer wanted
        if not job.done:
            st.session_state[JOB] = job
            widgets.job_progress(job, "Extracting features", key="ds_stop_features")
            st.stop()
        if not widgets.job_ended(job, again="Extract again", key="ds_extract_again", forget=jobs.dataset_job_forget):
            st.stop()
        embedded = job.result
    else:
        _follow("features", None)
    features_key = (data.content_hash, choice.name, choice.device, choice.pretrained, precision, batch_size, size)
    st.caption(
        f"{embedded.features.shape[1]}-d features of {len(data)} images from {spec.title}'s `{spec.head}` input, "
        f"{embedded.precision}{' (auto)' if precision == 'auto' else ''}, {embedded.images_per_second:.0f} images/s."
    )

    # ---------------------------------------------------------------------------------------------
    # Predictions (needed to colour the map by prediction)

    st.header("Predictions")
    a, b = st.columns(2)
    mode = a.radio("Predict with", ["auto", "zero-shot", "linear probe"], horizontal=True, key="ds_mode",
                   help="Zero-shot: the backbone's own ImageNet head, when every folder maps to an ImageNet class. "
                   "Linear probe: logistic regression on the frozen features.")
    test_fraction = b.slider("Linear probe: held-out share", 0.1, 0.5, 0.3, 0.05, key="ds_test")
    result = dataset_cache.dataset_evaluation(
        features_key, embedded, data, tuple(spec.categories), mode, float(test_fraction), int(seed)
    )
    if result.method == "zero-shot":
        st.caption("Zero-shot with the ImageNet head: each image gets the mapped class with the highest score.")
        st.dataframe(pd.DataFrame({"folder": result.mapping.classes, "ImageNet class": result.mapping.labels,
                                   "matched by": result.mapping.how}), hide_index=True)
    else:
        st.caption(
            f"Linear probe: logistic regression on standardised features, trained on {result.train_size} images "
            f"(stratified, seed {seed}), scored on the other {len(result.indices)}; training accuracy "
            f"{result.train_accuracy:.1%}."
        )
    predicted_of = dict(zip(result.indices.tolist(), result.predicted.tolist(), strict=True))
    # the head the heatmaps explain: the probe's classes (a copy of the backbone with the probe as its head), or
    # zero-shot's folder classes as the ImageNet classes they map to
    explained_head = probing.DatasetHead(
        dataset_cache.dataset_evaluation_key(features_key, mode, float(test_fraction), int(seed)), result, embedded.image_size
    )

    # ---------------------------------------------------------------------------------------------
    # Map


    def _scatter(points, colour_by: str):
        if colour_by == "true label":
            groups = {name: [i for i in range(len(data)) if data.labels[i] == c] for c, name in enumerate(data.classes)}
        else:
            groups = {name: [i for i in range(len(data)) if predicted_of.get(i) == c] for c, name in enumerate(data.classes)}
            groups["(training row)"] = [i for i in range(len(data)) if i not in predicted_of]
        texts = [f"{data.files[r]}<br>true: {data.classes[data.labels[r]]}<br>predicted: "
                 f"{data.classes[predicted_of[r]] if r in predicted_of else '(training row)'}" for r in range(len(data))]
        return charts.scatter(points, groups, texts, legend=colour_by, grey="(training row)")


    st.header("Feature map")
    a, b, c, d = st.columns(4)
    method = a.radio("Map", ["t-SNE", "PCA"], horizontal=True, key="ds_map")
    colour_by = b.radio("Colour by", ["true label", "predicted label"], horizontal=True, key="ds_colour")
    perplexity = c.slider("Perplexity", 5, 100, 30, key="ds_perplexity", disabled=method == "PCA")
    iterations = d.select_slider("Iterations", [500, 750, 1000, 1500], 750, key="ds_iterations", disabled=method == "PCA")

    points, trust = dataset_cache.dataset_pca(features_key, embedded.features, int(seed))  # PCA: fast
    tsne, tsne_job = None, None
    if method == "t-SNE":  # in the background, with the PCA map shown meanwhile
        tsne = jobs.dataset_tsne_ready(features_key, float(perplexity), int(iterations), int(seed))
        if tsne is None:
            tsne_job = jobs.dataset_tsne_job(features_key, embedded.features, float(perplexity), int(iterations),
                                              int(seed), session=widgets.session_id())
            if tsne_job.done:
                tsne = tsne_job.result if widgets.job_ended(tsne_job, again="Run t-SNE again", key="ds_tsne_again",
                                                             forget=jobs.dataset_job_forget) else None
                tsne_job = None
        if tsne is not None:
            points, trust = tsne
    _follow("tsne", tsne_job)  # None: a t-SNE this session started for other settings is stopped
    if tsne_job is not None:  # running or queued
        st.session_state[JOB] = tsne_job
        widgets.job_progress(tsne_job, "t-SNE running", key="ds_stop_tsne")
        st.caption("The PCA map is shown until t-SNE is done; it replaces it then.")
    event = st.plotly_chart(_scatter(points, colour_by), width="stretch", on_select="rerun", key="ds_scatter",
                            selection_mode="points")
    st.caption(
        f"{'t-SNE' if tsne is not None else 'PCA'} map. "
        f"Trustworthiness {trust:.3f} (1.0: every neighbour on the map is a neighbour in feature space; "
        "below about 0.9, read clusters with care). Click a point to see that image."
    )


    def _first_point(returned, key: str) -> list | None:
        """customdata of the first selected point, read dict-style from the chart's event or session state."""
        for selection in (returned, st.session_state.get(key)):
            try:
                points_ = selection["selection"]["points"]
                if points_:
                    return list(points_[0]["customdata"])
            except (KeyError, IndexError, TypeError):
                continue
        return None


    def _targets(true: int, predicted: int | None) -> tuple[tuple[int | None, str], ...]:
        """Folder classes to explain (None: the head's own top-1, for a training row of the probe), with why."""
        if predicted is None:
            pairs = [(None, "the probe's prediction" if explained_head.probe else "top-1")]
        else:
            pairs = [(predicted, f"predicted: {data.classes[predicted]}")]
        if predicted != true:
            pairs.append((true, f"true: {data.classes[true]}"))
        return tuple(pairs)


    def _explain(row: int, column) -> None:
        true = int(data.labels[row])
        guess = predicted_of.get(row)
        targets = _targets(true, guess)
        results = dataset_cache.dataset_cams(choice.name, choice.device, choice.pretrained, data, row,
                                     tuple(t for t, _ in targets), head=explained_head)
        image = data.images[row]
        column.image(image, caption=f"{data.files[row]}: true {data.classes[true]}, predicted "
                     f"{data.classes[guess] if guess is not None else '(training row)'}", width=160)
        kept = audit_view.stored(data, choice)
        if kept is not None:  # the audit's map of this image: no recomputation
            column.image(audit_view.overlay(data.images, kept, row, 160), width=160,
                         caption=f"Stored {cams.METHODS[kept.method].title} for "
                                 f"'{kept.categories[kept.explained[row]]}' (from the audit)")
            if kept.maps_true is not None and kept.explained[row] != kept.labels[row]:  # target "both"
                column.image(audit_view.overlay(data.images, kept, row, 160, true=True), width=160,
                             caption=f"Stored {cams.METHODS[kept.method].title} for "
                                     f"'{kept.classes[kept.labels[row]]}' (from the audit)")
        for (_, why), cam in zip(targets, results, strict=True):
            blank = " (all zero: nothing at this layer speaks for this class)" if cam.heatmap.max() <= 1e-6 else ""
            column.image(cam.overlay(image), caption=f"Grad-CAM for {explained_head.describe(cam)} ({why}){blank}",
                         width=160)


    selected = _first_point(event, "ds_scatter")
    row = int(selected[0]) if selected else None
    if row is not None and 0 <= row < len(data):
        st.subheader("Selected image")
        _explain(row, st.columns(1)[0])

    # ---------------------------------------------------------------------------------------------
    # Metrics

    st.header("Confusion matrix and metrics")
    a, b = st.columns([1, 3])
    a.metric("Accuracy", f"{result.accuracy:.1%}", help=f"on {len(result.indices)} images ({result.method})")
    normalised = a.toggle("Row-normalised", value=False, key="ds_normalised")
    values = result.normalised if normalised else result.confusion
    figure = charts.confusion(values, data.classes, normalised=normalised, clickable=True)
    clicked = b.plotly_chart(figure, width="stretch", on_select="rerun", key="ds_confusion", selection_mode="points")

    charts.per_class_table(result.per_class)

    cells = [(t, p) for t in range(len(data.classes)) for p in range(len(data.classes))]
    nonzero = sorted(((int(result.confusion[t, p]), t, p) for t, p in cells if result.confusion[t, p] and t != p), reverse=True)
    point = _first_point(clicked, "ds_confusion")
    cell = (int(point[0]), int(point[1])) if point else None
    options = [(t, p) for _, t, p in nonzero]
    if cell is None and options:
        cell = st.selectbox(
            "Open a cell (or click one in the matrix)", options, key="ds_cell",
            format_func=lambda tp: f"true {data.classes[tp[0]]} → predicted {data.classes[tp[1]]} "
            f"({result.confusion[tp[0], tp[1]]} image{'s' if result.confusion[tp[0], tp[1]] != 1 else ''})",
        )
    if cell is not None:
        rows = result.cell(*cell)
        st.subheader(f"True {data.classes[cell[0]]}, predicted {data.classes[cell[1]]}: {len(rows)} image(s)")
        if explained_head.probe:
            st.caption("Heatmaps explain the linear probe's score for each class: the backbone with the probe "
                       "(standardisation folded in) as its final layer.")
        else:
            st.caption("Heatmaps explain the ImageNet class each folder maps to.")
        for column, r in zip(st.columns(4) * 2, rows[:GALLERY].tolist(), strict=False):
            _explain(r, column)
    elif not options:
        st.success("No misclassified images: every evaluated image is on the diagonal.")

    with st.expander("Misclassified images"):
        wrong = result.misclassified[:24].tolist()
        if wrong:
            st.image([dataset_cache.dataset_thumbnail(data, i) for i in wrong], width=96, caption=[
                f"{data.classes[data.labels[i]]} → {data.classes[predicted_of[i]]}" for i in wrong])
        else:
            st.write("None.")

    with st.expander("Average Grad-CAM per class"):
        st.caption("The mean heatmap over up to 8 images of each class, for that class (each image resized to a square "
                   "first), over the mean of those images; each scaled to its own maximum. The class explained is the "
                   "linear probe's, or the ImageNet class a zero-shot folder maps to.")
        if st.toggle("Compute", value=False, key="ds_average"):
            columns = st.columns(min(len(data.classes), 6))
            for c, name in enumerate(data.classes):
                members = tuple(int(i) for i in (data.labels == c).nonzero()[0][:8])
                heat = dataset_cache.dataset_average_cam(choice.name, choice.device, choice.pretrained, data, members, c,
                                                 head=explained_head)
                which = f"probe class '{name}'" if explained_head.probe else f"ImageNet '{result.mapping.labels[c]}'"
                picture = dataset_cache.dataset_mean_picture(data.content_hash, data, members, heat.shape[0])
                columns[c % len(columns)].image(images.overlay(picture, heat / max(float(heat.max()), 1e-6)),
                                                caption=f"{name} ({len(members)} images): {which}", width=120)

    # ---------------------------------------------------------------------------------------------
    # Localisation (masks: the shapes set)

    if data.masks is not None:
        st.header("Localisation scores")
        st.caption(
            "For each CAM method, over the images' ground-truth masks: the share of heat inside the object, and "
            "the pointing game (is the hottest pixel on the object, within 15 px per 224 px?). A random smooth map "
            f"is the floor. Each image is explained for the backbone's top-1 class; first {LOCALISATION_IMAGES} images."
        )
        one_pass = cams.one_pass(cache.model(choice.name, choice.device, choice.pretrained))  # attention ones too
        methods = st.multiselect(
            "Methods", one_pass, default=[m for m in ("gradcam", "gradcam++", "layercam", "eigencam", "rollout",
                                                      "grad_rollout", "legrad") if m in one_pass],
            format_func=lambda m: cams.METHODS[m].title, key="ds_loc_methods",
        )
        if methods and st.toggle("Score localisation", value=kind == "shapes", key="ds_localise"):
            bar = st.progress(0.0, text="Scoring heatmaps…")
            subset = data if len(data) <= LOCALISATION_IMAGES else data.subset(range(LOCALISATION_IMAGES))
            table = dataset_cache.dataset_localisation(
                choice.name, choice.device, choice.pretrained, subset, tuple(methods),
                _on_progress=lambda fraction, message: bar.progress(fraction, text=message),
            )
            bar.empty()
            st.dataframe(pd.DataFrame([
                {"rank": i + 1, "method": r.title, "heat in mask": r.heat_share, "pointing game": r.pointing,
                 "images": r.images, "ms per image": r.seconds / max(r.images, 1) * 1e3}
                for i, r in enumerate(table.rows)
            ]), hide_index=True, column_config={
                "heat in mask": st.column_config.NumberColumn(format="%.3f"),
                "pointing game": st.column_config.NumberColumn(format="%.2f"),
                "ms per image": st.column_config.NumberColumn(format="%.0f"),
            })
            st.caption(f"A uniform map would put {table.mask_share:.1%} of its heat inside the masks.")
