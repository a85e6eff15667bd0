"""CAM through depth, with the model-randomisation sanity check of Adebayo et al. (2018)."""

import streamlit as st

from core import cams, images
from dashboard import cache, widgets

st.title("Through depth")
st.caption(
    "The same CAM method at every stage of the backbone, next to that stage's feature maps: early stages "
    "see edges and textures, late stages see object parts. Then randomise the model from the top down and "
    "see which explanations still change."
)
choice = widgets.model_picker()
picked = widgets.require_image(key="depth_image")
model = cache.model(choice.name, choice.device, choice.pretrained)
preds = cache.top_k(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
image = cache.picture(picked.key, picked.data).image  # at screen size, as the heatmaps

c1, c2 = st.columns(2)
offered = [*cams.SHARED, *(["rollout"] if "rollout" in cams.applicable(model) else [])]  # a transformer: by block
method = c1.selectbox("CAM method", offered, format_func=lambda m: cams.METHODS[m].title, key="depth_method",
                      help="On a transformer, attention rollout up to each block is its CAM through depth.")
rollout = cams.METHODS[method].attention
with c2:
    target = widgets.class_picker(model.categories, preds[0].index, key="depth_target")
target = preds[0].index if target is None else target

with st.expander("Sanity checks (Adebayo et al. 2018)", expanded=False):
    cascade = cache.cascade(choice.name, choice.device, choice.pretrained)
    steps = st.slider(
        "Randomise the top layers (cascading from the head down)", 0, len(cascade), 0, key="depth_steps",
        help="Re-initialises a private copy of the model; the shared model is never touched.",
    )
    if steps:
        st.caption("Randomised: " + ", ".join(cascade[:steps]))
    if st.toggle("Random target class", key="depth_random_target"):
        target = cache.random_target(choice.name, choice.device, choice.pretrained, avoid=target)
    st.caption(
        "A faithful explanation must change when the weights it explains are destroyed, and must depend on "
        "the class asked for. A map that survives both explains the image, not the model."
    )

bar = st.progress(0.0, text="Computing a CAM at every stage…")
results = cache.depth(choice.name, choice.device, choice.pretrained, steps, picked.key, picked.data, method, target,
                      _on_progress=lambda f, m: bar.progress(f, text=m))
bar.empty()
stages = [r.layer for r in results] if rollout else list(model.spec.stages)
if not stages:
    st.info(f"{model.spec.title} names no stages to walk through." + (" Choose attention rollout: it goes block by "
            "block." if "rollout" in offered else ""))
    st.stop()
label = model.categories[target]
st.subheader(f"{cams.METHODS[method].title} for “{label}” ({target})" + (f" · {steps} layer(s) randomised" if steps else ""))
stage = st.select_slider("Stage", stages, value=stages[-1], key=f"depth_stage_{choice.name}")
index = stages.index(stage)
left, right = st.columns(2)
left.image(results[index].overlay(image), caption=f"{cams.METHODS[method].title} at {stage}", width="stretch")
if rollout:
    right.caption(f"Rollout up to {stage}: how attention, passed down through the residual path of every block "
                  "so far, spreads over the image (from the class token on a ViT; on Swin from a uniform start "
                  "on the block's own grid, as the model's mean pool reads it). It does not depend on the class.")
else:
    maps = cache.depth_feature_maps(choice.name, choice.device, choice.pretrained, steps, picked.key, picked.data,
                                    stage, 16)
    right.image(maps.grid, caption=f"16 most active of {maps.map_shape[0]} channels at {stage} "
                f"({maps.map_shape[1]}×{maps.map_shape[2]})", width="stretch")

st.markdown("**Every stage at once** (shallow → deep)")
columns = st.columns(min(4, len(stages)))
for i, (name, result) in enumerate(zip(stages, results, strict=True)):
    columns[i % len(columns)].image(images.overlay(image, result.heatmap, opacity=0.6), caption=name, width="stretch")
