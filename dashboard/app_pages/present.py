"""Presenter mode: large type, no sidebar, one big image at a time, Back / Next buttons to walk a class through.

It shows the photo and backbone last chosen on Explain (an upload or a camera shot included), else the defaults;
the first step offers the sample photos besides. "Exit presenter mode" goes back to Explain with the photo and
backbone on screen.
"""

import html

import streamlit as st

from core import cams, registry
from dashboard import cache, widgets

STEPS = ("The photo", "What the model predicts", "Where it looks", "Every method", "Through depth", "Sanity check")
YOURS = "yours"  # the photo option that stands for the image chosen on Explain (sample names are file stems)

st.markdown(
    """<style>
    [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
    [data-testid="stMainBlockContainer"] {max-width: 1500px; padding-top: 2.5rem;}
    [data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li {font-size: 1.6rem; line-height: 1.45;}
    [data-testid="stMainBlockContainer"] h1 {font-size: 3.2rem;}
    [data-testid="stMainBlockContainer"] h2 {font-size: 2.4rem;}
    [data-testid="stImageCaption"] {font-size: 1.3rem !important;}
    div.stButton > button {font-size: 1.6rem; padding: .6rem 2.2rem;}
    .st-key-present_exit {align-items: flex-end; margin-bottom: -1rem;}
    .st-key-present_exit button, .st-key-present_exit button p {font-size: 1rem !important; padding: .1rem .4rem; opacity: .75;}
    </style>""",
    unsafe_allow_html=True,
)

chosen = widgets.chosen_for_presenter()  # (Choice, Picked) from Explain, or None
choice = chosen[0] if chosen else widgets.Choice(registry.DEFAULT, cache.devices()[0], True)
own = chosen[1] if chosen and not chosen[1].sample else None  # an upload or camera shot
options = ([YOURS] if own else []) + cache.sample_names()
default = YOURS if own else (chosen[1].sample if chosen else widgets.default_sample())
if st.session_state.get("present_photo_of") != (chosen[1].key if chosen else None):  # a new choice on Explain
    st.session_state.present_photo = default
    st.session_state.present_photo_of = chosen[1].key if chosen else None
if st.session_state.get("present_photo") not in options:
    st.session_state.present_photo = default
photo = st.session_state.present_photo
if photo == YOURS:
    picked = own
else:
    sample_data = cache.sample_bytes(photo)
    picked = widgets.Picked(cache.digest(sample_data), sample_data, f"sample: {photo}", photo)
name, device, pretrained, key, data = choice.name, choice.device, choice.pretrained, picked.key, picked.data


def _go(delta: int) -> None:
    st.session_state.present_step = max(0, min(len(STEPS) - 1, st.session_state.present_step + delta))


def _pick_photo() -> None:
    st.session_state.present_photo = st.session_state.present_photo_radio


step = st.session_state.setdefault("present_step", 0)
with st.container(key="present_exit"):
    if st.button("Exit presenter mode", icon=":material/close:", type="tertiary", key="present_exit_button",
                 help="Back to Explain, with this photo and backbone"):
        widgets.restore(choice, picked)
        st.switch_page("app_pages/explain.py")
nav = st.columns([1, 4, 1])
nav[0].button("◀ Back", on_click=_go, args=(-1,), disabled=step == 0, key="present_back")
nav[1].markdown(f"<h2 style='text-align:center;margin:0'>{step + 1} / {len(STEPS)} · {html.escape(STEPS[step])}</h2>",
                unsafe_allow_html=True)
nav[2].button("Next ▶", on_click=_go, args=(1,), disabled=step == len(STEPS) - 1, key="present_next")

image = cache.picture(key, data).image  # at screen size, as the heatmaps
model = cache.model(name, device, pretrained)
top = cache.top_k(name, device, pretrained, key, data)
if not pretrained:
    st.warning(f"{model.spec.title} has random weights here: what it predicts and where it looks mean nothing.")

if step == 0:
    credit = "your photo" if photo == YOURS else widgets.SAMPLE_CREDITS.get(photo, photo)
    st.image(image, caption=credit, width="stretch")
    st.markdown("A photo the network has never seen. It only gets the pixels: three numbers per point.")
    st.radio("Photo", options, index=options.index(photo), key="present_photo_radio", horizontal=True,
             on_change=_pick_photo, format_func=lambda o: f"your photo ({own.source})" if o == YOURS else o)
elif step == 1:
    left, right = st.columns([3, 2])
    left.image(image, width="stretch")
    with right:
        for p in top:
            st.markdown(f"**{p.label}** — {p.prob:.0%}")
            st.progress(p.prob)
        knowledge = "trained on ImageNet" if pretrained else "random weights, never trained"
        st.markdown(f"{model.spec.title}: {model.params / 1e6:.1f} million learned numbers, {knowledge}.")
elif step == 2:
    result = cache.cam(name, device, pretrained, key, data, "gradcam", None, None)
    st.image(result.overlay(image, opacity=0.55), caption=f"Grad-CAM for “{result.label}”", width="stretch")
    st.markdown("Red: the regions that pushed the score of this class up the most.")
elif step == 3:
    results = cache.cam_grid(name, device, pretrained, key, data, ("gradcam", "gradcam++", "layercam", "eigencam"),
                             None, None)
    columns = st.columns(2)
    for index, result in enumerate(results):
        columns[index % 2].image(result.overlay(image), caption=cams.METHODS[result.method].title, width="stretch")
elif step == 4:
    results = cache.depth(name, device, pretrained, 0, key, data, "gradcam", top[0].index)
    stages = model.spec.stages
    shown = sorted({0, len(stages) // 3, 2 * len(stages) // 3, len(stages) - 1})
    columns = st.columns(len(shown))
    for column, index in zip(columns, shown, strict=True):
        column.image(results[index].overlay(image, opacity=0.6), caption=f"stage {stages[index]}", width="stretch")
    st.markdown("Early layers react to edges and textures; deep layers to parts of the object.")
else:
    steps = len(cache.cascade(name, device, pretrained))
    trained = cache.cam(name, device, pretrained, key, data, "gradcam", top[0].index, None)
    random = cache.depth(name, device, pretrained, steps, key, data, "gradcam", top[0].index)[-1]
    left, right = st.columns(2)
    left.image(trained.overlay(image), caption="trained network" if pretrained else "this network", width="stretch")
    right.image(random.overlay(image), caption="same network, weights randomised", width="stretch")
    st.markdown("If the explanation did not change when the knowledge is destroyed, it would explain nothing.")
