"""The dashboard's charts, each built in one place: top-k bars, class counts, the confusion matrix and the
per-class table (Datasets and Transfer learning), training curves, the feature-map scatter and the benchmark
charts. Functions of plain records returning Plotly figures (or drawing one table); pages only place them.
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core import benchmark_tables

MARGIN = dict(l=10, r=10, t=10, b=10)
TITLED = dict(l=10, r=10, t=50, b=10)  # room for a title


def class_counts(counts: dict[str, int]) -> go.Figure:
    bars = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), marker_color="#4C78A8"))
    bars.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title="Images per class", xaxis_type="category")
    return bars


def confusion(values, classes, *, normalised: bool = False, clickable: bool = False) -> go.Figure:
    """The confusion matrix (rows: true class, columns: predicted), counts or row shares in the cells.

    `clickable` lays invisible markers over the cells, whose customdata is [true, predicted]: heatmaps emit
    no selection events, markers do.
    """
    classes = list(classes)
    n = len(classes)
    text = [[f"{v:.2f}" if normalised else f"{int(v)}" for v in line] for line in values]
    hover = "true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"
    figure = go.Figure(go.Heatmap(z=values, x=classes, y=classes, colorscale="Blues", text=text,
                                  texttemplate="%{text}", hovertemplate=hover, showscale=False))
    if clickable:
        cells = [(t, p) for t in range(n) for p in range(n)]
        figure.add_trace(go.Scatter(
            x=[classes[p] for _, p in cells], y=[classes[t] for t, _ in cells], mode="markers",
            marker=dict(size=28, opacity=0.01, symbol="square"), customdata=[[t, p] for t, p in cells],
            # "skip" would also drop the click events these markers are here for; the hover repeats the heatmap's
            text=[text[t][p] for t, p in cells], hovertemplate=hover, showlegend=False,
        ))
    last = n - 0.5
    figure.update_layout(
        height=max(360, 40 * n + 120), margin=MARGIN, clickmode="event+select" if clickable else None,
        # class names are categories even when they are digits; the ranges stop the markers widening the axes
        xaxis=dict(title="predicted", type="category", range=[-0.5, last]),
        yaxis=dict(title="true", type="category", range=[last, -0.5]),
    )
    return figure


def per_class_table(per_class, *, key: str | None = None) -> None:
    """Precision, recall, F1 and support of every class (evaluation.ClassMetrics), as a table."""
    st.dataframe(
        pd.DataFrame([{"class": m.name, "precision": m.precision, "recall": m.recall, "F1": m.f1, "support": m.support}
                      for m in per_class]),
        hide_index=True, width="stretch", key=key,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "F1")},
    )


def curves(history, *, best: int | None = None) -> go.Figure:
    """Loss and accuracy per epoch (training.EpochStats), train and validation; a dotted line at the kept epoch."""
    epochs = [s.epoch for s in history]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss (cross-entropy)", "Accuracy"))
    for col, (train_values, val_values) in enumerate(
        (([s.train_loss for s in history], [s.val_loss for s in history]),
         ([s.train_accuracy for s in history], [s.val_accuracy for s in history])), start=1,
    ):
        figure.add_trace(go.Scatter(x=epochs, y=train_values, name="train", mode="lines+markers",
                                    line=dict(color="#1f77b4"), showlegend=col == 1, legendgroup="train"), 1, col)
        figure.add_trace(go.Scatter(x=epochs, y=val_values, name="validation", mode="lines+markers",
                                    line=dict(color="#d9480f"), showlegend=col == 1, legendgroup="val"), 1, col)
    if best:
        for col in (1, 2):
            figure.add_vline(x=best, line_dash="dot", line_color="grey", row=1, col=col)
        # at the foot of the accuracy panel: the curves run along its top once the model is good
        figure.add_annotation(x=best, y=0.02, yref="y2 domain", text=f"kept: epoch {best}", showarrow=False,
                              xanchor="right" if best > len(history) / 2 else "left", yanchor="bottom", row=1, col=2)
    figure.update_xaxes(title="epoch", dtick=1 if len(history) <= 20 else None)
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    figure.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return figure


def scatter(points, groups: dict[str, list[int]], texts: list[str], *, legend: str, grey: str = "") -> go.Figure:
    """A 2-D map, one trace per group of rows (customdata [row], hover `texts[row]`); group `grey` in grey.

    WebGL only past 3,000 points: SVG otherwise, which every browser draws.
    """
    figure = go.Figure()
    palette = qualitative.Plotly + qualitative.Dark24
    trace = go.Scattergl if len(points) > 3000 else go.Scatter
    for c, (name, rows) in enumerate(groups.items()):
        if not rows:
            continue
        figure.add_trace(trace(
            x=points[rows, 0], y=points[rows, 1], mode="markers", name=name, customdata=[[r] for r in rows],
            text=[texts[r] for r in rows], hovertemplate="%{text}<extra></extra>",
            marker=dict(size=7, opacity=0.85, color="#888" if name == grey else palette[c % len(palette)]),
        ))
    figure.update_layout(height=520, margin=MARGIN, legend_title_text=legend, clickmode="event+select", dragmode="pan")
    return figure


def latency(rows) -> go.Figure:
    """Median latency per batch (benchmarks.BenchmarkRow), grouped by batch size, whiskers to p95."""
    figure = go.Figure([
        go.Bar(
            name=f"batch {batch}", x=[r.title for r in rows if r.batch == batch],
            y=[r.median_ms for r in rows if r.batch == batch],
            error_y=dict(type="data", symmetric=False, array=[r.p95_ms - r.median_ms for r in rows if r.batch == batch],
                         arrayminus=[0] * sum(r.batch == batch for r in rows)),
            hovertemplate="%{x}: p50 %{y:.2f} ms per batch<extra></extra>",
        )
        for batch in sorted({r.batch for r in rows})
    ])
    figure.update_layout(title="Latency per batch: median, whisker to p95", barmode="group", height=380,
                         yaxis_title="milliseconds per batch", margin=TITLED)
    return figure


def accuracy_vs_latency(rows, batch: int) -> go.Figure:
    """Published top-1 against milliseconds per image at `batch`, bubble area = parameters (rows with a top-1)."""
    largest = max(r.params for r in rows)
    figure = go.Figure(go.Scatter(
        x=[r.per_image_ms for r in rows], y=[r.top1 for r in rows], mode="markers+text",
        text=[r.title for r in rows], textposition="top center",
        marker=dict(size=[r.params / 1e6 for r in rows], sizemode="area", sizeref=2 * largest / 1e6 / 50**2,
                    sizemin=6, opacity=0.7),
        customdata=[r.params / 1e6 for r in rows],
        hovertemplate="%{text}: %{x:.2f} ms/image, top-1 %{y:.1f}%, %{customdata:.1f} M parameters<extra></extra>",
    ))
    figure.update_layout(title=f"Accuracy vs latency (batch {batch}; bubble area = parameters)", height=420,
                         xaxis_title="milliseconds per image", yaxis_title="ImageNet top-1 (%)", margin=TITLED)
    return figure


def throughput(rows) -> go.Figure:
    """Images per second against batch size, one line per backbone."""
    titles = list(dict.fromkeys(r.title for r in rows))
    figure = go.Figure([
        go.Scatter(name=title, x=[r.batch for r in rows if r.title == title],
                   y=[r.images_per_second for r in rows if r.title == title], mode="lines+markers")
        for title in titles
    ])
    figure.update_layout(title="Throughput vs batch size", height=420, xaxis_title="batch size",
                         yaxis_title="images per second", margin=TITLED,
                         xaxis=dict(type="log", tickvals=sorted({r.batch for r in rows})))
    return figure


def benchmark_table(rows) -> None:
    """Benchmark rows under the CLI's column headers (benchmark_tables.COLUMNS), numbers formatted as there."""
    st.dataframe(
        {c.header: [c.value(r) for r in rows] for c in benchmark_tables.COLUMNS}, hide_index=True,
        column_config={c.header: st.column_config.NumberColumn(format=f"%{c.fmt}")
                       for c in benchmark_tables.COLUMNS if c.fmt.endswith("f")},
    )
