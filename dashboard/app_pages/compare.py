"""Compare backbones: one image, 2 to 4 backbones side by side."""

import plotly.graph_objects as go
import streamlit as st

from core import cams, faithfulness, report
from dashboard import cache, shelf, widgets

st.title("Compare backbones")
st.caption("Top-5, heatmaps for each model's own top-1 and for one common class, speed, size, and agreement.")

found = shelf.finder(st, key="compare")
if found is not None and st.session_state.get("compare_found") != found:  # a new find joins the comparison
    st.session_state["compare_names"] = [*st.session_state.get("compare_names", []), found][-4:]
st.session_state["compare_found"] = found
offline = [n for n in shelf.names() if cache.weights_here(n)]
names = st.multiselect(
    "Backbones (2 to 4)", shelf.names(), default=offline[:3], max_selections=4, key="compare_names",
    format_func=shelf.title,
)
c1, c2, c3 = st.columns(3)
pretrained = c1.radio("Weights", ["pretrained", "random"], horizontal=True, key="compare_weights") == "pretrained"
device = c2.selectbox("Device", cache.devices(), key="compare_device")
method = c3.selectbox(
    "CAM method", [m for m in cams.METHODS if cams.METHODS[m].shared], key="compare_method",
    format_func=lambda m: cams.METHODS[m].title,
)
transformers = [n for n in names if cache.spec(n).family == "transformer"]
transformer_method = None
if transformers:
    offered = [None, *cams.ATTENTION]
    transformer_method = st.selectbox(
        "On the transformers", offered, key="compare_transformer_method",
        format_func=lambda m: "the same method" if m is None else cams.METHODS[m].title,
        help="Methods made for transformers read their attention maps: a CNN's Grad-CAM beside a ViT's LeGrad.",
    )
faithful = st.toggle(
    "Score each heatmap's faithfulness", key="compare_faithful",
    help="ROAD on each backbone's own top-1 map, beside a random map, as on the All methods page (slower: "
         "dozens of forward passes per backbone).",
)
picked = widgets.image_picker(key="compare_image")
if picked is None or len(names) < 2:
    st.info("Choose an image and at least two backbones.")
    st.stop()
first = cache.model(names[0], device, pretrained)
common = widgets.class_picker(first.categories, cache.top_k(names[0], device, pretrained, picked.key, picked.data)[0].index,
                              key="compare_common")
result = cache.compared(tuple(names), device, pretrained, picked.key, picked.data, method, common, transformer_method,
                        faithful)
image = cache.picture(picked.key, picked.data).image  # at screen size, as the heatmaps
label = first.categories[result.common_target]

faithfulness_explanation = faithfulness.explanation()
columns = st.columns(len(result.reports))
for column, backbone in zip(columns, result.reports, strict=True):
    with column:
        st.subheader(backbone.title)
        if not backbone.pretrained:
            st.caption("random weights: meaningless predictions")
        st.dataframe(
            [{"class": p.index, "label": p.label, "prob": f"{p.prob:.1%}"} for p in backbone.predictions],
            hide_index=True,
        )
        title = cams.METHODS[backbone.method].title
        st.image(backbone.own.overlay(image), caption=f"{title}, own top-1: {backbone.own.label}", width="stretch")
        st.image(backbone.common.overlay(image), caption=f"{title}, common class: {label}", width="stretch")
        if backbone.scorecard is not None:
            card = backbone.scorecard
            score, floor = card.methods[backbone.method], card.baselines["random"]
            st.metric(f"Faithfulness of {title}", f"{score.faithfulness:+.3f}",
                      help=f"Own top-1 map. {faithfulness_explanation}")
            st.caption(f"random map {floor.faithfulness:+.3f}"
                       + ("" if card.beats_random(backbone.method) else " · no better than a random map here"))
        st.metric("Forward pass", f"{backbone.latency_ms:.0f} ms")
        st.metric("Parameters", f"{backbone.params / 1e6:.1f} M")
        st.metric("Multiply-adds", f"{backbone.gmacs:.2f} GMACs")

st.subheader(f"How much do the heatmaps for “{label}” agree?")
titles = [r.title for r in result.reports]
heat = go.Figure(go.Heatmap(z=result.agreement, x=titles, y=titles, zmin=-1, zmax=1, colorscale="RdBu",
                            text=[[f"{v:+.2f}" for v in row] for row in result.agreement], texttemplate="%{text}"))
heat.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10))
st.plotly_chart(heat, key="compare_agreement")
st.caption(
    "Spearman rank correlation of the two heatmaps resized to 56x56: 1 means the same ranking of regions. "
    "Latency: median of 5 forward passes on this image (after one warm-up), on "
    f"{cache.device_label(device)}. Multiply-adds at each model's reference input size."
)
widgets.report_button(
    image,
    [report.ModelSection(r.name, r.title, r.pretrained, device, r.predictions, [r.common], None) for r in result.reports],
    source=picked.source, key="compare_report",
)
