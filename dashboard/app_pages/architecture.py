"""Architecture: the modules of a backbone, its parameters per stage, and a second backbone beside it."""

import plotly.graph_objects as go
import streamlit as st

from dashboard import cache, shelf, widgets


def _shape(shape: tuple[int, ...] | None) -> str:
    return "×".join(map(str, shape)) if shape else "—"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M"


def _count(count: int) -> str:
    return _millions(count) if count >= 1e5 else f"{count / 1e3:.1f} k" if count >= 1e3 else str(count)


def _stage_chart(arch, color: str, *, largest: int | None = None) -> go.Figure:
    stages = arch.stages[::-1]  # plotly draws the first bar at the bottom
    figure = go.Figure(
        go.Bar(
            x=[stage.params / 1e6 for stage in stages],
            y=[stage.name for stage in stages],
            orientation="h",
            text=[_count(stage.params) for stage in stages],
            textposition="auto",
            marker_color=color,
            hovertemplate="%{y}: %{x:.3f} M parameters<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"{arch.title}: parameters per stage",
        height=120 + 22 * len(stages),
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title="parameters (millions)", range=[0, largest / 1e6 * 1.02] if largest else None),
    )
    return figure


st.title("Architecture")
st.caption("What a backbone is made of: every module, what it outputs, and where its parameters are.")

choice = widgets.model_picker()
arch = cache.architecture(choice.name, choice.device, choice.pretrained)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Parameters", _millions(arch.total_params), help=f"{arch.total_params:,} in all")
c2.metric("Trainable", f"{arch.trainable_params:,}", help="Loaded backbones are frozen: fine-tuning unfreezes a head.")
c3.metric("Modules", f"{len(arch.rows):,}")
c4.metric("Input", _shape(arch.input_shape[2:]), help="The probe input the output shapes below are for.")

st.plotly_chart(_stage_chart(arch, "#1c7ed6"), width="stretch", key="stages")
st.caption(
    "The stages are the ones fine-tuning unfreezes on the Transfer learning page and CAM through depth explains: "
    "each bar is named after the layer that ends the stage and holds everything since the previous one; the "
    "head is the last bar."
)

st.subheader("Modules")
st.dataframe(
    [
        {"module": row.name or f"(root) {arch.name}", "type": row.type, "output shape": _shape(row.output_shape),
         "parameters": row.params, "trainable": row.trainable}
        for row in arch.rows
    ],
    hide_index=True, width="stretch", height=420, key="modules",
)
st.caption(
    f"Parameters are the ones each module owns itself, so the column adds up to {arch.total_params:,}. "
    f"Output shapes for a grey {_shape(arch.input_shape)} input."
)

st.subheader("Compare with another backbone")
picker, metrics = st.columns([1, 2], gap="large")
names = shelf.names()
st.session_state.setdefault("arch_compare_name", names[(names.index(choice.name) + 1) % len(names)])
with picker:
    other_choice = widgets.model_picker(where=st, key="arch_compare")
other = cache.architecture(other_choice.name, other_choice.device, other_choice.pretrained)
with metrics:
    m1, m2 = st.columns(2)
    for column, shown in ((m1, arch), (m2, other)):
        column.metric(
            f"{shown.title}: parameters", _millions(shown.total_params),
            delta=None if shown is arch else f"{(shown.total_params - arch.total_params) / 1e6:+.2f} M",
            delta_color="off",
        )
        column.metric(f"{shown.title}: modules", f"{len(shown.rows):,}")
        column.metric(f"{shown.title}: stages", len(shown.stages))
largest = max(stage.params for stage in (*arch.stages, *other.stages))  # one scale for both charts
left, right = st.columns(2, gap="large")
left.plotly_chart(_stage_chart(arch, "#1c7ed6", largest=largest), width="stretch", key="stages_main")
right.plotly_chart(_stage_chart(other, "#e8590c", largest=largest), width="stretch", key="stages_other")
