"""Benchmarks: speed and size of backbones on this machine, measured with a stated method."""

import time

import plotly.graph_objects as go
import streamlit as st

from core import benchmarks
from core.errors import Cancelled
from dashboard import cache

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128]
SIZES = [None, 128, 160, 192, 224, 240, 256, 260, 288, 299, 320, 384]
REPEATS = [0, 3, 5, 10, 20, 50, 100]  # 0: until the median is stable
JOB, RESULT = "benchmark_job", "benchmark_result"

st.title("Benchmarks")
st.caption(
    "Latency, throughput, memory, size and compute of backbones, measured here and now. "
    "Speed and size do not depend on the weights' values, so backbones without weights on this machine run "
    "with random ones."
)

specs = cache.specs()
names = st.multiselect(
    "Backbones", list(specs), default=[n for n in ("efficientnet_lite0", "mobilenet_v3_large") if n in specs],
    format_func=lambda n: specs[n].title, key="bench_names",
)
c1, c2, c3, c4, c5, c6 = st.columns([3, 2, 2, 2, 2, 2])
batches = c1.multiselect("Batch sizes", BATCHES, default=[1], key="bench_batches")
size = c2.selectbox("Input size", SIZES, key="bench_size",
                    format_func=lambda s: "each model's own" if s is None else f"{s}×{s}")
device = c3.selectbox("Device", cache.devices(), key="bench_device")
precision = c4.selectbox("Precision", cache.benchmark_precisions(device), key="bench_precision",
                         help="fp32 everywhere; bf16 and fp16 autocast on GPU.")
repeats = c5.selectbox("Timed passes", REPEATS, key="bench_repeats",
                       format_func=lambda r: "auto (stable median)" if r == 0 else str(r))
warmup = c6.number_input("Warm-up passes", 0, 50, 3, key="bench_warmup")
settings = cache.BenchmarkSettings(
    tuple(names), tuple(sorted(batches)), size, precision, device, repeats or None, int(warmup)
)

job: cache.BenchmarkJob | None = st.session_state.get(JOB)
running = job is not None and not job.done
b1, b2 = st.columns([1, 3], vertical_alignment="center")
fresh = b2.checkbox("Measure again (ignore a cached result for these settings)", key="bench_fresh")
clicked = b1.button("Run benchmark", type="primary", key="bench_start", disabled=running or not names or not batches)
if clicked and not running:  # the button drawn before a run started stays enabled until the page reruns
    cached = None if fresh else cache.benchmark_cached(settings)
    if cached is None:
        job = st.session_state[JOB] = cache.benchmark_start(settings)
        running = True
    else:
        st.session_state[RESULT] = cached
        st.toast("Shown from the cache: the same settings were measured before.")


@st.fragment(run_every=1.0)
def _progress(job: cache.BenchmarkJob) -> None:
    if job.done:
        st.rerun()  # the whole page, which then shows the result
    done, total = len(job.rows), job.settings.total
    plan = [(n, b) for n in job.settings.names for b in sorted(set(job.settings.batches))]
    now = f"now {specs[plan[done][0]].title} at batch {plan[done][1]}" if done < total else "finishing"
    if job.state == "queued":  # other heavy work holds every slot
        st.info(job.queue_text())
    else:
        elapsed = time.time() - (job.running_since or job.started)
        st.progress(done / total, text=f"Measured {done} of {total} settings; {now} ({elapsed:.0f} s)")
    if job.stop.is_set():
        st.caption("Stopping after the current pass…")
    else:
        st.button("Stop", key="bench_stop", on_click=job.stop.set)
    if job.rows:
        _table(job.rows)


def _table(rows) -> None:
    st.dataframe(
        {c.header: [c.value(r) for r in rows] for c in benchmarks.COLUMNS}, hide_index=True,
        column_config={c.header: st.column_config.NumberColumn(format=f"%{c.fmt}")
                       for c in benchmarks.COLUMNS if c.fmt.endswith("f")},
    )


if running:
    _progress(job)
    st.stop()
if job is not None:  # finished since the last run
    del st.session_state[JOB]
    if isinstance(job.error, Cancelled):  # stopped while queued: nothing was measured
        st.info(str(job.error))
    elif job.error is not None:
        raise job.error  # core's errors are shown by the entry point
    else:
        st.session_state[RESULT] = job.result

result: cache.BenchmarkResult | None = st.session_state.get(RESULT)
if result is not None and not result.complete:
    st.warning(f"Stopped after {len(result.rows)} of {result.settings.total} settings. Partial results are not cached.")
if result is None or not result.rows:
    st.info("Choose backbones and batch sizes, then press Run benchmark. Results are cached per settings.")
    st.stop()

rows = result.rows
if result.busy:
    st.warning(result.busy)
st.caption(f"Measured at {time.strftime('%H:%M:%S', time.localtime(result.finished))}.")
_table(rows)
d1, d2, _ = st.columns([1, 1, 4])
d1.download_button("Download CSV", benchmarks.to_csv(rows), file_name="benchmarks.csv", mime="text/csv",
                   key="bench_csv")
d2.download_button("Download JSON", benchmarks.to_json(rows, machine=result.machine, method=result.method),
                   file_name="benchmarks.json", mime="application/json", key="bench_json")

titles = list(dict.fromkeys(r.title for r in rows))
latency = go.Figure([
    go.Bar(
        name=f"batch {batch}", x=[r.title for r in rows if r.batch == batch],
        y=[r.median_ms for r in rows if r.batch == batch],
        error_y=dict(type="data", symmetric=False, array=[r.p95_ms - r.median_ms for r in rows if r.batch == batch],
                     arrayminus=[0] * sum(r.batch == batch for r in rows)),
        hovertemplate="%{x}: p50 %{y:.2f} ms per batch<extra></extra>",
    )
    for batch in sorted({r.batch for r in rows})
])
latency.update_layout(title="Latency per batch: median, whisker to p95", barmode="group", height=380,
                      yaxis_title="milliseconds per batch", margin=dict(l=10, r=10, t=50, b=10))
st.plotly_chart(latency, key="bench_latency")

smallest = min(r.batch for r in rows)
known = [r for r in rows if r.batch == smallest and r.top1 is not None]
left, right = st.columns(2)
with left:
    if known:
        largest = max(r.params for r in known)
        scatter = go.Figure(go.Scatter(
            x=[r.per_image_ms for r in known], y=[r.top1 for r in known], mode="markers+text",
            text=[r.title for r in known], textposition="top center",
            marker=dict(size=[r.params / 1e6 for r in known], sizemode="area", sizeref=2 * largest / 1e6 / 50**2,
                        sizemin=6, opacity=0.7),
            customdata=[r.params / 1e6 for r in known],
            hovertemplate="%{text}: %{x:.2f} ms/image, top-1 %{y:.1f}%, %{customdata:.1f} M parameters<extra></extra>",
        ))
        scatter.update_layout(title=f"Accuracy vs latency (batch {smallest}; bubble area = parameters)", height=420,
                              xaxis_title="milliseconds per image", yaxis_title="ImageNet top-1 (%)",
                              margin=dict(l=10, r=10, t=50, b=10))
        st.plotly_chart(scatter, key="bench_accuracy")
    missing = sorted({r.title for r in rows if r.top1 is None})
    if missing:
        st.caption(f"No published top-1 for: {', '.join(missing)}.")
with right:
    throughput = go.Figure([
        go.Scatter(name=title, x=[r.batch for r in rows if r.title == title],
                   y=[r.images_per_second for r in rows if r.title == title], mode="lines+markers")
        for title in titles
    ])
    throughput.update_layout(title="Throughput vs batch size", height=420, xaxis_title="batch size",
                             yaxis_title="images per second", margin=dict(l=10, r=10, t=50, b=10),
                             xaxis=dict(type="log", tickvals=sorted({r.batch for r in rows})))
    st.plotly_chart(throughput, key="bench_throughput")
    if len({r.batch for r in rows}) == 1:
        st.caption("Choose several batch sizes to see how throughput grows with the batch.")

st.subheader("How this was measured")
st.markdown(f"**Machine.** {result.machine}")
st.markdown(f"**Method.** {result.method}")
st.caption(
    "Top-1: ImageNet-1K accuracy of the published pretrained weights (torchvision's metadata; EfficientNet-Lite: "
    "its authors' figures), whatever weights ran here. Weights MiB: the weights file where it is on this machine, "
    "else the size of the fp32 state dict. On CPU, peak memory is how much the process's resident memory grew: "
    "memory the allocator kept from earlier work is reused without growing, so it can read lower than the working set."
)
