"""All methods at a glance: one image, every chosen CAM method, faithfulness scores, a sanity check."""

import time

import plotly.graph_objects as go
import streamlit as st

from core import cams, faithfulness, images, report
from dashboard import cache, jobs, widgets

st.title("All methods at a glance")
st.caption(
    "The gradient methods come from one forward and one short backward pass, then each method's own "
    "weighting from pytorch-grad-cam. Which map should you trust? Score them."
)

choice = widgets.model_picker()
picked = widgets.require_image(key="methods_image")
decoded = cache.picture(picked.key, picked.data)  # at screen size, as the heatmaps
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

WATCHED = "methods_watched"  # the scoring job this session waits for, if any
card, job = None, None
if st.toggle(
    f"Score faithfulness (ROAD over {faithfulness.fractions_text()} of the pixels removed, beside baselines)",
    key="methods_score",
    help="Scoring runs in the background and joins the heavy-work queue: several seconds on a CPU.",
):
    args = (choice.name, choice.device, choice.pretrained, picked.key)
    card = jobs.faithfulness_ready(*args, tuple(methods), explained, None, eigen_smooth)
    if card is None:
        job = jobs.faithfulness_job(*args, picked.data, tuple(methods), explained, None, eigen_smooth,
                                     session=widgets.session_id())
        quick = job.wait(max(0.0, 1.5 - (time.time() - job.started)))  # a fast device: no progress bar at all
        if quick and widgets.job_ended(job, again="Score again", key="methods_score_again",
                                       forget=jobs.faithfulness_forget):
            card, job = job.result, None
        elif job.done:
            job = None
widgets.follow(WATCHED, job, leave=jobs.faithfulness_leave)  # settings changed: the old scoring is left
if job is not None:
    widgets.job_progress(job, "Scoring faithfulness", key="methods_score_stop")


def _verdict(name: str) -> str:
    return "" if card.beats_random(name) else " · no better than a random map here"


columns = st.columns(3)
for index, result in enumerate(results):
    with columns[index % 3]:
        caption = f"{cams.METHODS[result.method].title} · {result.seconds * 1000:.0f} ms"
        if card is not None:
            caption += f" · faithfulness {card.methods[result.method].faithfulness:+.3f}{_verdict(result.method)}"
        st.image(result.overlay(decoded.image, opacity=opacity, colormap=colormap), caption=caption, width="stretch")

if card is not None:
    rows = [(cams.METHODS[m].title, s, False) for m, s in card.methods.items()]
    rows += [(faithfulness.BASELINE_TITLES[b] + (f": 1 − {cams.METHODS[card.inverted].title}" if b == "inverted"
              else ""), s, True) for b, s in card.baselines.items()]
    rows.sort(key=lambda row: row[1].faithfulness, reverse=True)
    random_score = card.baselines["random"].faithfulness
    st.markdown(f"**Faithfulness** — {faithfulness.explanation()}")
    st.caption(
        f"{faithfulness.REMOVAL} Baselines scored in the same pass: a random map (one value per 32-pixel cell), "
        f"the inverted map of the best method ({cams.METHODS[card.inverted].title}) and a Sobel edge map of the "
        f"image. One image is noisy: a method below the random map is no better than a random map here. "
        f"{len(card.methods)} maps and 3 baselines scored in {card.seconds:.1f} s on {model.device}."
    )
    chart = go.Figure(go.Bar(  # horizontal: the longest at the top, names readable
        y=[title.split(":")[0] for title, _, _ in rows][::-1], x=[s.faithfulness for _, s, _ in rows][::-1],
        orientation="h", marker_color=["#adb5bd" if baseline else "#1c7ed6" for _, _, baseline in rows][::-1],
    ))
    chart.add_vline(x=random_score, line_dash="dash", line_color="#868e96", annotation_text="random map")
    chart.update_layout(height=24 * len(rows) + 70, margin=dict(l=10, r=10, t=30, b=10),
                        xaxis_title="faithfulness (higher is better; grey: baselines)")
    st.plotly_chart(chart, key="methods_faithfulness", width="stretch")
    st.dataframe(
        [
            {
                "map": title,
                "faithfulness ↑": round(s.faithfulness, 4),
                "vs random map": "baseline" if baseline else ("better" if s.faithfulness > random_score
                                                              else "no better than a random map here"),
                "most relevant removed ↓": round(s.road_most_first, 4),
                "least relevant removed ↑": round(s.road_least_first, 4),
                "confidence change ↑ (image × map)": round(s.confidence_change, 4),
            }
            for title, s, baseline in rows
        ],
        hide_index=True, height=36 * (len(rows) + 1) + 2, key="methods_scores_table",
        column_config={"map": st.column_config.TextColumn(width="medium")},
    )
    st.caption(
        "Every column is a change of the class probability (−1 to 1), averaged over the fractions removed. "
        "↓: lower is better, ↑: higher is better."
    )
    with st.expander(f"At each fraction removed ({faithfulness.fractions_text()})"):
        percent = [f"{f * 100:g}%" for f in card.methods[card.best].fractions]
        st.dataframe(
            [
                {
                    "map": title,
                    **{f"most {p} ↓": round(v, 3) for p, v in zip(percent, s.most_first, strict=True)},
                    **{f"least {p} ↑": round(v, 3) for p, v in zip(percent, s.least_first, strict=True)},
                }
                for title, s, _ in rows
            ],
            hide_index=True, height=36 * (len(rows) + 1) + 2, key="methods_fractions_table",
            column_config={"map": st.column_config.TextColumn(width="medium")},
        )
        st.caption("“most 20%”: the 20% of the pixels the map ranks highest removed; “least 20%”: the 20% it ranks "
                   "lowest. A faithful map drops the probability fast when its most relevant pixels go, and keeps it "
                   "when its least relevant go.")

widgets.report_button(
    decoded.image,
    [report.ModelSection(model.name, model.spec.title, model.pretrained, str(model.device), preds, results, card)],
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
