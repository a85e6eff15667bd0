"""Presenter mode: large type, no sidebar, one big image at a time, Back / Next buttons to walk a class through."""

import html

import streamlit as st

from core import cams
from dashboard import cache, widgets

STEPS = ("The photo", "What the model predicts", "Where it looks", "Every method", "Through depth", "Sanity check")
NAME, DEVICE = "efficientnet_lite0", "auto"

st.markdown(
    """<style>
    [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
    [data-testid="stMainBlockContainer"] {max-width: 1500px; padding-top: 3.5rem;}
    [data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li {font-size: 1.6rem; line-height: 1.45;}
    [data-testid="stMainBlockContainer"] h1 {font-size: 3.2rem;}
    [data-testid="stMainBlockContainer"] h2 {font-size: 2.4rem;}
    [data-testid="stImageCaption"] {font-size: 1.3rem !important;}
    div.stButton > button {font-size: 1.6rem; padding: .6rem 2.2rem;}
    </style>""",
    unsafe_allow_html=True,
)

step = st.session_state.setdefault("present_step", 0)
sample = st.session_state.setdefault("present_sample", "chelsea")


def _go(delta: int) -> None:
    st.session_state.present_step = max(0, min(len(STEPS) - 1, st.session_state.present_step + delta))


nav = st.columns([1, 4, 1])
nav[0].button("◀ Back", on_click=_go, args=(-1,), disabled=step == 0, key="present_back")
nav[1].markdown(f"<h2 style='text-align:center;margin:0'>{step + 1} / {len(STEPS)} · {html.escape(STEPS[step])}</h2>",
                unsafe_allow_html=True)
nav[2].button("Next ▶", on_click=_go, args=(1,), disabled=step == len(STEPS) - 1, key="present_next")

data = cache.sample_bytes(sample)
key = cache.digest(data)
image = cache.decoded(key, data).image
model = cache.model(NAME, DEVICE, True)
top = cache.top_k(NAME, DEVICE, True, key, data)

if step == 0:
    st.image(image, caption=f"{widgets.SAMPLE_CREDITS.get(sample, sample)}", width="stretch")
    st.markdown("A photo the network has never seen. It only gets the pixels: three numbers per point.")
    st.radio("Photo", cache.sample_names(), key="present_sample", horizontal=True)
elif step == 1:
    left, right = st.columns([3, 2])
    left.image(image, width="stretch")
    with right:
        for p in top:
            st.markdown(f"**{p.label}** — {p.prob:.0%}")
            st.progress(p.prob)
        st.markdown(f"{model.spec.title}: {model.params / 1e6:.1f} million learned numbers, trained on ImageNet.")
elif step == 2:
    result = cache.cam(NAME, DEVICE, True, key, data, "gradcam", None, None)
    st.image(result.overlay(image, opacity=0.55), caption=f"Grad-CAM for “{result.label}”", width="stretch")
    st.markdown("Red: the regions that pushed the score of this class up the most.")
elif step == 3:
    results = cache.cam_grid(NAME, DEVICE, True, key, data, ("gradcam", "gradcam++", "layercam", "eigencam"), None,
                             None)
    columns = st.columns(2)
    for index, result in enumerate(results):
        columns[index % 2].image(result.overlay(image), caption=cams.METHODS[result.method].title, width="stretch")
elif step == 4:
    results = cache.depth(NAME, DEVICE, True, 0, key, data, "gradcam", top[0].index)
    stages = model.spec.stages
    shown = [0, len(stages) // 3, 2 * len(stages) // 3, len(stages) - 1]
    columns = st.columns(len(shown))
    for column, index in zip(columns, shown, strict=True):
        column.image(results[index].overlay(image, opacity=0.6), caption=f"stage {stages[index]}", width="stretch")
    st.markdown("Early layers react to edges and textures; deep layers to parts of the object.")
else:
    steps = len(cache.cascade(NAME, DEVICE, True))
    trained = cache.cam(NAME, DEVICE, True, key, data, "gradcam", top[0].index, None)
    random = cache.depth(NAME, DEVICE, True, steps, key, data, "gradcam", top[0].index)[-1]
    left, right = st.columns(2)
    left.image(trained.overlay(image), caption="trained network", width="stretch")
    right.image(random.overlay(image), caption="same network, weights randomised", width="stretch")
    st.markdown("If the explanation did not change when the knowledge is destroyed, it would explain nothing.")
