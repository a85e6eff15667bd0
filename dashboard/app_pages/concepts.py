"""Concepts: Deep Feature Factorization splits the image into K concepts, each named by the model's head."""

import html

import streamlit as st

from core import images
from dashboard import cache, widgets

st.title("Concepts in the image")
st.caption(
    "Deep Feature Factorization (Collins et al. 2018): non-negative matrix factorisation of one layer's "
    "activations splits the image into K concepts; the model's own classifier names each concept."
)
choice = widgets.model_picker()
picked = widgets.require_image(key="concepts_image")
model = cache.model(choice.name, choice.device, choice.pretrained)
c1, c2 = st.columns(2)
k = c1.slider("Number of concepts (K)", 2, 10, 5, key="concepts_k")
layers = cache.cam_layers(choice.name, choice.device, choice.pretrained)
layer = c2.selectbox("Layer", layers, index=layers.index(model.spec.cam_layer), key=f"concepts_layer_{choice.name}",
                     format_func=widgets.layer_label(choice))
result = cache.concepts_of(choice.name, choice.device, choice.pretrained, picked.key, picked.data, k,
                           layer if layer != model.spec.cam_layer else None)
left, right = st.columns([3, 2])
left.image(result.overlay, caption=f"Each pixel coloured by its dominant concept · layer {result.layer}", width="stretch")
with right:
    if not result.named:
        st.caption("This layer's channels do not feed the classifier directly, so the concepts are not named.")
    for concept in result.concepts:
        r, g, b = concept.color
        # labels can be user text (an imported model's classes): escaped, since this markdown allows HTML
        names = ", ".join(f"{html.escape(label)} ({prob:.0%})" for _, label, prob in concept.labels) or "unnamed"
        st.markdown(
            f"<span style='display:inline-block;width:14px;height:14px;background:rgb({r},{g},{b});"
            f"border-radius:3px;margin-right:6px'></span>**Concept {concept.index + 1}** · "
            f"{concept.share:.0%} of the image · {names}",
            unsafe_allow_html=True,
        )
columns = st.columns(min(5, len(result.concepts)))
image = cache.picture(picked.key, picked.data).image
for concept in result.concepts:
    with columns[concept.index % len(columns)]:
        st.image(images.overlay(image, concept.heatmap, opacity=0.6), caption=f"Concept {concept.index + 1}",
                 width="stretch")
