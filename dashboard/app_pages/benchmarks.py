"""Benchmarks: speed and size of backbones on this machine, measured with a stated method."""

import time

import streamlit as st

from core import benchmark_tables, benchmarks
from dashboard import cache, charts, jobs, shelf, widgets

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

found = shelf.finder(st, key="bench")
if found is not None and st.session_state.get("bench_found") != found:  # a new find joins the benchmark
    st.session_state["bench_names"] = [*st.session_state.get("bench_names", []), found]
st.session_state["bench_found"] = found
offered = shelf.names()
names = st.multiselect(
    "Backbones", offered, default=[n for n in ("efficientnet_lite0", "mobilenet_v3_large") if n in offered],
    format_func=lambda n: cache.spec(n).title, key="bench_names",
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
settings = benchmarks.BenchmarkSettings(
    tuple(names), tuple(sorted(batches)), size, precision, device, repeats or None, int(warmup)
)

job: jobs.BenchmarkJob | None = st.session_state.get(JOB)
running = job is not None and not job.done
b1, b2 = st.columns([1, 3], vertical_alignment="center")
fresh = b2.checkbox("Measure again (ignore a cached result for these settings)", key="bench_fresh")
clicked = b1.button("Run benchmark", type="primary", key="bench_start", disabled=running or not names or not batches)
if clicked and not running:  # the button drawn before a run started stays enabled until the page reruns
    cached = None if fresh else jobs.benchmark_cached(settings)
    if cached is None:
        job = st.session_state[JOB] = jobs.benchmark_start(settings)
        running = True
    else:
        st.session_state[RESULT] = cached
        st.toast("Shown from the cache: the same settings were measured before.")


if running:
    widgets.job_progress(job, "Benchmark", key="bench_stop", stopping="Stopping after the current pass…",
                         stop_help="Stops after the current pass; the rows measured so far are shown.",
                         details=lambda job: charts.benchmark_table(job.rows) if job.rows else None)
    st.stop()
if job is not None:  # finished since the last run
    del st.session_state[JOB]
    if widgets.job_ended(job):  # else: stopped while queued (nothing was measured), or a core error, said
        st.session_state[RESULT] = job.result

result: benchmarks.BenchmarkResult | None = st.session_state.get(RESULT)
if result is not None and not result.complete:
    st.warning(f"Stopped after {len(result.rows)} of {result.settings.total} settings. Partial results are not cached.")
if result is None or not result.rows:
    st.info("Choose backbones and batch sizes, then press Run benchmark. Results are cached per settings.")
    st.stop()

rows = result.rows
if result.busy:
    st.warning(result.busy)
st.caption(f"Measured at {time.strftime('%H:%M:%S', time.localtime(result.finished))}.")
charts.benchmark_table(rows)
d1, d2, _ = st.columns([1, 1, 4])
d1.download_button("Download CSV", benchmark_tables.to_csv(rows), file_name="benchmarks.csv", mime="text/csv",
                   key="bench_csv")
d2.download_button("Download JSON", benchmark_tables.to_json(rows, machine=result.machine, method=result.method),
                   file_name="benchmarks.json", mime="application/json", key="bench_json")

smallest = min(r.batch for r in rows)
known = [r for r in rows if r.batch == smallest and r.top1 is not None]
st.plotly_chart(charts.latency(rows), key="bench_latency")
left, right = st.columns(2)
with left:
    if known:
        st.plotly_chart(charts.accuracy_vs_latency(known, smallest), key="bench_accuracy")
    missing = sorted({r.title for r in rows if r.top1 is None})
    if missing:
        st.caption(f"No published top-1 for: {', '.join(missing)}.")
with right:
    st.plotly_chart(charts.throughput(rows), key="bench_throughput")
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
