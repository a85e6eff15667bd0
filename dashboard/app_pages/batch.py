"""Batch: several images at once, a grid of predictions with heatmaps."""

import streamlit as st

from core import cams
from core.errors import CoreError
from dashboard import cache, widgets

MAX_FILES = 24

st.title("Batch predictions")
st.caption(f"Upload up to {MAX_FILES} images: each gets its top-1 class and a heatmap for it.")

choice = widgets.model_picker()
offered = cams.one_pass(cache.model(choice.name, choice.device, choice.pretrained))  # what applies
if st.session_state.get("batch_method") not in offered:  # a method of the previous backbone that this one lacks
    st.session_state.pop("batch_method", None)
method = st.selectbox("CAM method", offered, key="batch_method", format_func=lambda m: cams.METHODS[m].title,
                      help="The one-pass methods: the Grad-CAM family, and on a transformer attention rollout, "
                      "gradient-weighted rollout and LeGrad.")
if not cams.METHODS[method].class_specific:
    st.caption(f"{cams.METHODS[method].title} is class-agnostic: the map is the same whatever the class.")
uploads = st.file_uploader(
    "Images", type=widgets.UPLOAD_TYPES, accept_multiple_files=True, key="batch_files",
    max_upload_size=widgets.UPLOAD_MB,
)
use_samples = st.toggle("Use the sample photos instead", value=not uploads, key="batch_samples")
if use_samples:
    items = [(f"{n}.jpg", cache.sample_bytes(n)) for n in cache.sample_names()]
else:
    items = [(u.name, u.getvalue()) for u in uploads or []]
if not items:
    st.info("Upload images, or use the sample photos.")
    st.stop()
if len(items) > MAX_FILES:
    st.warning(f"{len(items)} images uploaded; showing the first {MAX_FILES}.")
    items = items[:MAX_FILES]

progress = st.progress(0.0, text="Predicting…")
columns = st.columns(4)
for index, (name, data) in enumerate(items):
    key = cache.digest(data)
    with columns[index % 4]:
        try:
            shown = cache.picture(key, data).image  # at screen size, as the heatmaps
        except CoreError as error:  # one bad file gets its own message; the others still show
            st.error(f"{name}: {error}")
            continue
        top = cache.top_k(choice.name, choice.device, choice.pretrained, key, data)[0]
        result = cache.cam(choice.name, choice.device, choice.pretrained, key, data, method, None, None)
        st.image(result.overlay(shown), caption=f"{name}: {top.label} ({top.prob:.0%})", width="stretch")
    progress.progress((index + 1) / len(items), text=f"{index + 1} of {len(items)} images")
progress.empty()
