"""Feature maps: what one layer sees in an image, the first layer's colour filters, and another backbone beside it."""

import streamlit as st

PER_ROW = 8
DEPTHS = {  # relative position among the layers that output spatial maps; None: the spec's CAM layer
    "default CAM layer (last)": None,
    "early (1/4 deep)": 0.25,
    "middle (1/2 deep)": 0.5,
    "late (3/4 deep)": 0.75,
}


def _shape(shape: tuple[int, ...] | None) -> str:
    return "×".join(map(str, shape)) if shape else "—"


def _at_depth(table, default: str, fraction: float | None) -> str:
    spatial = [info.name for info in table if info.cam_ready]
    if fraction is None or not spatial:
        return default
    return spatial[round(fraction * (len(spatial) - 1))]


def _compare_with(where, choice, picked) -> None:
    """The same kind of layer in another backbone, beside this one."""
    with where:
        names = shelf.names()
        st.session_state.setdefault("compare_name", names[(names.index(choice.name) + 1) % len(names)])
        other = widgets.model_picker(where=st, key="compare")
        depth = st.radio("Layer of each backbone", list(DEPTHS), horizontal=True, key="compare_depth")
        columns = st.columns(2, gap="large")
        for column, shown in zip(columns, (choice, other)):
            spec = cache.model(shown.name, shown.device, shown.pretrained).spec  # its layer found at load
            rows = cache.layer_table(shown.name, shown.device, shown.pretrained, picked.key, picked.data)
            compared = cache.feature_maps(
                shown.name, shown.device, shown.pretrained, picked.key, picked.data,
                _at_depth(rows, spec.cam_layer, DEPTHS[depth]), 16,
            )
            column.markdown(
                f"**{spec.title}**{'' if shown.pretrained else ' (random weights)'} · `{compared.layer}` · "
                f"{compared.map_shape[0]} channels, {compared.map_shape[1]}×{compared.map_shape[2]}"
            )
            column.image(compared.grid, caption="16 most active channels, strongest first (row by row)", width="stretch")


st.title("Feature maps")
st.caption(
    "Which channels of a layer respond most strongly to this image (ranked by mean activation, each map "
    "scaled to its own range), and what colours and edges the first convolution looks for."
)
# after the title: on a server's first visit this waits for the start-up warm-up's imports, the page painted
from dashboard import cache, shelf, widgets  # noqa: E402

choice = widgets.model_picker()
picked = widgets.require_image()

model = cache.model(choice.name, choice.device, choice.pretrained)
if not model.pretrained:
    st.warning(f"{model.spec.title} has random weights: its feature maps and filters show noise, not learned features.")
table = cache.layer_table(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
spatial = [info.name for info in table if info.cam_ready]

st.subheader("Layers")
st.dataframe(
    [
        {"layer": info.name, "type": info.type, "output shape": _shape(info.output_shape),
         "parameters": info.params, "spatial map": info.cam_ready}
        for info in table
    ],
    hide_index=True, width="stretch", height=280, key="layer_table",
)
st.caption(f"{len(table)} modules, {len(spatial)} of them output spatial maps · output shapes for {picked.source}")
left, right = st.columns(2, gap="large")
layer = left.selectbox(
    "Layer (spatial maps only)", spatial,
    index=spatial.index(model.spec.cam_layer) if model.spec.cam_layer in spatial else 0,
    key=f"fm_layer_{choice.name}",
    help="Default: the layer Grad-CAM explains. Earlier layers respond to edges and colours, later ones to parts.",
)
limit = right.slider("Channels", 4, 64, 16, 4, key="fm_channels", help="The most active channels, strongest first.")

maps = cache.feature_maps(choice.name, choice.device, choice.pretrained, picked.key, picked.data, layer, limit)
st.subheader(f"{len(maps.channels)} most active of {maps.map_shape[0]} channels at {maps.layer}")
st.caption(
    f"Layer output {_shape(maps.output_shape)}; each map is {maps.map_shape[1]}×{maps.map_shape[2]}, "
    "white = that channel's own maximum."
)
for start in range(0, len(maps.channels), PER_ROW):
    for column, index in zip(st.columns(PER_ROW), range(start, min(start + PER_ROW, len(maps.channels)))):
        column.image(
            maps.maps[index], caption=f"ch {maps.channels[index]} · mean {maps.means[index]:.2f}", width="stretch"
        )
mosaic = st.expander("All shown channels as one mosaic", key="fm_mosaic", on_change="rerun")
if mosaic.open:  # closed expanders compute nothing (on_change="rerun": opening one reruns the page)
    mosaic.image(maps.grid, caption=f"{maps.layer}: channels {', '.join(map(str, maps.channels))}")

filters = cache.first_conv_filters(choice.name, choice.device, choice.pretrained)
st.subheader("First-layer filters")
st.image(
    filters.grid,
    caption=f"{filters.count} filters of {filters.layer}, {filters.kernel_size[0]}×{filters.kernel_size[1]} "
    "pixels each, shown as RGB (each filter scaled to its own range)",
)

compare = st.expander("Compare with another backbone", key="fm_compare", on_change="rerun")
if compare.open:  # a second model to load and run: only once someone opens it
    _compare_with(compare, choice, picked)
