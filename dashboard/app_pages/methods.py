"""All methods at a glance: one image, every chosen CAM method, faithfulness scores, a sanity check."""

import plotly.graph_objects as go
import streamlit as st

from core import cams, faithfulness, images, report
from dashboard import cache, widgets

st.title("All methods at a glance")
st.caption(
    "The gradient methods come from one forward and one short backward pass, then each method's own "
    "weighting from pytorch-grad-cam. Which map should you trust? Score them."
)

choice = widgets.model_picker()
picked = widgets.require_image(key="methods_image")
decoded = cache.decoded(picked.key, picked.data)
model = cache.model(choice.name, choice.device, choice.pretrained)
preds = cache.top_k(choice.name, choice.device, choice.pretrained, picked.key, picked.data)

usable, fast = cams.applicable(model, include_slow=True), cams.applicable(model)
c1, c2 = st.columns([3, 2])
methods = c1.multiselect(
    "Methods", usable, default=fast, format_func=lambda m: cams.METHODS[m].title, key="methods_chosen",
    help="Score-CAM and Ablation-CAM run one forward pass per channel: minutes on a CPU.",
)
with c2:
    target = widgets.class_picker(model.categories, preds[0].index, key="methods_target")
c3, c4, c5 = st.columns(3)
eigen_smooth = c3.toggle("eigen_smooth", key="methods_eigen", help="Keep only the first principal component of each map.")
opacity = c4.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="methods_opacity")
colormap = c5.selectbox("Colormap", images.COLORMAPS, key="methods_colormap")
if not methods:
    st.info("Choose at least one method.")
    st.stop()
slow = [m for m in methods if cams.METHODS[m].slow]
if slow and not st.toggle(f"Also run {', '.join(cams.METHODS[m].title for m in slow)} (slow)", key="methods_slow"):
    methods = [m for m in methods if m not in slow]
    st.caption("Slow methods are skipped until you switch them on.")
if not methods:
    st.stop()

bar = st.progress(0.0, text="Computing…")
results = cache.cam_grid(
    choice.name, choice.device, choice.pretrained, picked.key, picked.data, tuple(methods), target, None,
    eigen_smooth, _on_progress=lambda f, msg: bar.progress(f, text=msg),
)
bar.empty()
explained = results[0].target
st.subheader(f"“{results[0].label}” ({explained}) · layer {results[0].layer}")

scores = None
if st.toggle("Score faithfulness (ROAD and confidence change; a few seconds per map)", key="methods_score"):
    with st.status("Scoring each map by removing the pixels it ranks highest and lowest…", expanded=False) as status:
        scores = cache.faithfulness_scores(
            choice.name, choice.device, choice.pretrained, picked.key, picked.data, tuple(methods), explained, None,
            eigen_smooth,
        )
        status.update(label="Faithfulness scored", state="complete")

columns = st.columns(3)
for index, result in enumerate(results):
    with columns[index % 3]:
        caption = f"{cams.METHODS[result.method].title} · {result.seconds * 1000:.0f} ms"
        if scores is not None:
            caption += f" · ROAD {scores[result.method].road_combined:+.3f}"
        st.image(result.overlay(decoded.image, opacity=opacity, colormap=colormap), caption=caption, width="stretch")

if scores is not None:
    order = sorted(scores, key=lambda m: scores[m].road_combined, reverse=True)
    st.markdown(
        "**Faithfulness** — *ROAD combined* (higher is better) is half the difference between the probability "
        "change when the 20% least relevant pixels are removed and when the 20% most relevant are removed. "
        "*Confidence change*: the image multiplied by the map."
    )
    chart = go.Figure(go.Bar(x=[cams.METHODS[m].title for m in order], y=[scores[m].road_combined for m in order],
                             marker_color="#1c7ed6"))
    chart.update_layout(height=280, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="ROAD combined")
    st.plotly_chart(chart, key="methods_faithfulness")
    st.dataframe(
        [
            {
                "method": cams.METHODS[m].title,
                "ROAD combined": round(scores[m].road_combined, 4),
                "remove most relevant 20%": round(scores[m].road_most_first, 4),
                "remove least relevant 20%": round(scores[m].road_least_first, 4),
                "confidence change (image x map)": round(scores[m].confidence_change, 4),
            }
            for m in order
        ],
        hide_index=True,
    )

widgets.report_button(
    decoded.image,
    [report.ModelSection(model.name, model.spec.title, model.pretrained, str(model.device), preds, results, scores)],
    source=picked.source, key="methods_report", opacity=opacity, colormap=colormap,
)

if model.pretrained and st.toggle("Sanity check: the same maps for a random-weights model", key="methods_sanity"):
    st.caption(
        "Adebayo et al. (2018): a method whose map barely changes when the weights are random explains the "
        "image, not the model. Rank correlation near 1 means the map did not depend on what the model learned."
    )
    random_results = cache.cam_grid(
        choice.name, choice.device, False, picked.key, picked.data, tuple(methods), explained, None, eigen_smooth,
    )
    columns = st.columns(3)
    for index, (trained, random) in enumerate(zip(results, random_results, strict=True)):
        similarity = faithfulness.rank_correlation(trained.heatmap, random.heatmap)
        with columns[index % 3]:
            st.image(
                random.overlay(decoded.image, opacity=opacity, colormap=colormap),
                caption=f"{cams.METHODS[random.method].title}, random weights · rank corr. with trained {similarity:+.2f}",
                width="stretch",
            )
