"""Explain: one image, its top-5 and a class activation map."""

import streamlit as st

# The title first: on a server's first visit the imports below wait for the start-up warm-up (torch, the
# model), and the page is painted meanwhile.
st.title("Explain a prediction")
st.caption("What does the model predict for this image, and where does it look? Everything runs on this machine.")

from core import cams, images, report  # noqa: E402
from dashboard import cache, widgets  # noqa: E402

choice = widgets.model_picker()
picked = widgets.require_image()
widgets.remember_for_presenter(choice, picked)  # presenter mode shows this photo and backbone

# The page shows the picture at screen size (cache.picture); models see the whole decoded image.
picture = cache.picture(picked.key, picked.data)
for note in picture.notes:
    st.info(note)
custom = st.session_state.get("custom_model")  # a trained or imported model, set by the Transfer learning page
if custom is not None and st.sidebar.checkbox(f"Use my trained model ({custom.spec.title})", key="use_custom"):
    from core import predictions

    whole = cache.decoded(picked.key, picked.data).image
    mine = predictions.predict(custom, whole, top_k=min(5, len(custom.categories)))
    st.subheader(f"{custom.spec.title}: top predictions")
    st.dataframe([{"class": p.index, "label": p.label, "probability": f"{p.prob:.2%}"} for p in mine], hide_index=True)
    target = widgets.class_picker(custom.categories, mine[0].index, key="custom_target")
    (result,) = cams.compute(custom, whole, methods=["gradcam"], target=target, size=picture.image.size)
    st.image(result.overlay(picture.image), width="stretch",
             caption=f"Grad-CAM for “{result.label}” ({result.target}) at layer {result.layer} · {custom.spec.title}")
    st.stop()
model = cache.model(choice.name, choice.device, choice.pretrained)
if not model.pretrained:
    st.warning(f"{model.spec.title} has random weights: its predictions and heatmaps are meaningless.")
preds = cache.top_k(choice.name, choice.device, choice.pretrained, picked.key, picked.data)

left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader(f"Top-{len(preds)} predictions")
    for p in preds:  # built-in bars: the first visit does not wait for Plotly's script
        st.progress(p.prob, text=f"{p.label} ({p.index}) · {p.prob:.1%}")
    st.dataframe(
        [{"class": p.index, "label": p.label, "probability": f"{p.prob:.2%}"} for p in preds],
        hide_index=True, width="stretch",
    )
    width, height = picture.full_size
    shown = "" if picture.image.size == picture.full_size else f" (shown at {picture.image.width}×{picture.image.height})"
    st.caption(f"{picture.format} · {width}×{height} px{shown} · {picked.source}")

with right:
    st.subheader("Where it looks")
    usable = cams.applicable(model, include_slow=True)
    c1, c2 = st.columns(2)
    method = c1.selectbox(
        "CAM method", usable, index=usable.index(cams.DEFAULT_METHOD),
        format_func=lambda m: f"{cams.METHODS[m].title} — {cams.METHODS[m].cost}", key="method",
    )
    layers = cache.cam_layers(choice.name, choice.device, choice.pretrained)
    layer = c2.selectbox(
        "Target layer", layers, index=layers.index(model.spec.cam_layer), key=f"layer_{choice.name}",
        format_func=widgets.layer_label(choice),
        help="Default: the last feature layer of this architecture. Earlier layers give finer, less semantic maps.",
    )
    target = widgets.class_picker(model.categories, preds[0].index)
    if not cams.METHODS[method].class_specific:
        st.caption(f"{cams.METHODS[method].title} does not depend on the class: every class gets the same map.")
    c3, c4 = st.columns(2)
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
    colormap = c4.selectbox("Colormap", images.COLORMAPS, key="colormap")
    c5, c6, c7 = st.columns(3)
    eigen_smooth = c5.toggle("eigen_smooth", key="eigen_smooth", help="Keep the first principal component of the map.")
    aug_smooth = c6.toggle(
        "aug_smooth", key="aug_smooth", help="Average over flips and brightness changes (6 passes, library path)."
    )
    show_guided = c7.toggle("Guided Grad-CAM", key="guided", help="Pixel-level detail: Guided Backpropagation x Grad-CAM.")
    slow = cams.METHODS[method].slow
    run = True
    if slow:
        seconds = cache.estimate(choice.name, choice.device, choice.pretrained, picked.key, picked.data, method,
                                 layer if layer != model.spec.cam_layer else None)
        st.warning(f"{cams.METHODS[method].title} costs {cams.METHODS[method].cost}: about {seconds:.0f} s here.")
        run = st.button(f"Run {cams.METHODS[method].title}", key="run_slow")
    if run:
        progress, clear = (widgets.slow_progress(f"Computing {cams.METHODS[method].title}", key="cancel_slow")
                           if slow else (None, None))
        settings = (choice.name, choice.device, choice.pretrained, picked.key, method, target,
                    layer if layer != model.spec.cam_layer else None, eigen_smooth, aug_smooth)
        result = cache.cam(*settings[:4], picked.data, *settings[4:], _on_progress=progress)
        if clear:
            clear()
        # a screen-sized JPEG, cached per (result, opacity, colormap): a slider move blends 1.4 MP, not 12
        result_key = (*cache.cam_key(*settings[:4], (method,), *settings[5:]), method)
        st.image(
            cache.overlay_jpeg(picked.key, picked.data, result, result_key, opacity, colormap),
            caption=f"{cams.METHODS[method].title} for “{result.label}” ({result.target}) "
            + ("from every block's attention" if cams.METHODS[method].attention else f"at layer {result.layer}")
            + f" · {result.seconds * 1000:.0f} ms",
            width="stretch",
        )
        width, height = picture.full_size
        st.download_button(
            f"Download overlay (PNG, {width}×{height})",
            # made on the click, at the full size, in a thread of its own: reruns never pay for it
            lambda: cache.full_overlay_png(picked.key, picked.data, result, opacity, colormap),
            file_name=f"{choice.name}_{method}_{result.target}.png", mime="image/png", key="download",
            on_click="ignore",
        )
        widgets.report_button(
            picture.image,
            [report.ModelSection(model.name, model.spec.title, model.pretrained, str(model.device), preds, [result], None)],
            source=picked.source, key="explain_report", opacity=opacity, colormap=colormap,
        )
        if show_guided:
            guided = cache.guided(choice.name, choice.device, choice.pretrained, picked.key, picked.data, target,
                                  layer if layer != model.spec.cam_layer else None)
            g1, g2 = st.columns(2)
            g1.image(guided.guided_backprop, caption="Guided Backpropagation", width="stretch")
            g2.image(guided.guided_gradcam, caption=f"Guided Grad-CAM for “{guided.label}”", width="stretch")
