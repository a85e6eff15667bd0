"""Start-up warm-up: the heavy imports, the default model and the first view of Explain and Feature maps.

`start()` runs `run()` in a daemon thread when the server starts (dashboard/serve.py's lifespan), once the
health endpoint answers, so neither it nor the first page paint waits for it; the first visitor finds torch
and pytorch-grad-cam imported, the default backbone loaded, its first forward passes done (the slowest ones
of a process) and the default sample's top-5, Grad-CAM, layer table and feature maps in the same caches the
pages read. Once a browser is connected, the warm-up computes no more of the default view: that visitor's
page computes what it shows, and a second guess on the side would only compete with it for the cores. A page that asks for a value the warm-up is still computing waits for it (Streamlit's cache
holds one compute lock per key) instead of computing it twice. Every step is best effort: a failure is
logged and the pages compute that value themselves as before.

Off with VISIONLENS_WARMUP=0 (for example to time a cold first visit, bench/first_visit.py).
"""

import logging
import os
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as streamlit_app.py: this thread may import torch first
os.environ.setdefault("TQDM_DISABLE", "1")

NAME = "visionlens-warmup"  # the thread's name
_CONTEXT_LOGGER = "streamlit.runtime.scriptrunner_utils.script_run_context"

_lock = threading.Lock()
_thread: threading.Thread | None = None
timings: dict[str, float] = {}  # step -> seconds, filled as the steps finish
done = threading.Event()


def enabled() -> bool:
    return os.environ.get("VISIONLENS_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def start() -> threading.Thread | None:
    """Start the warm-up thread once per process (later calls return the same thread); None when disabled."""
    global _thread
    if not enabled():
        return None
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=run, args=(10.0,), name=NAME, daemon=True)
            _thread.start()
        return _thread


def _not_this_thread(record: logging.LogRecord) -> bool:
    """Hide "missing ScriptRunContext" for this thread only: it has no page, on purpose."""
    return record.threadName != NAME


def _log() -> logging.Logger:
    from streamlit.logger import get_logger  # Streamlit's format and level, in the server's log

    return get_logger("visionlens.warmup")


def _step(name: str, work) -> None:
    started = time.perf_counter()
    try:
        work()
    except Exception as error:  # the pages compute it themselves; never take the server down
        _log().warning("warm-up step '%s' failed: %s", name, error)
    finally:
        timings[name] = time.perf_counter() - started


def run(wait: float = 0.0) -> dict[str, float]:
    """Warm up in this thread, most urgent first; returns the seconds each step took.

    wait: seconds to wait at most for the server's health check to answer first.
    """
    context_logger = logging.getLogger(_CONTEXT_LOGGER)
    context_logger.addFilter(_not_this_thread)
    try:
        return _run(wait)
    finally:
        context_logger.removeFilter(_not_this_thread)
        done.set()


def _wait_for_server(timeout: float) -> None:
    """Until the server answers its health check (or `timeout`): its start-up and first answers come first."""
    import urllib.request

    from streamlit import config

    if config.get_option("server.sslCertFile"):
        return  # https on a certificate made for another name: do not wait on it
    address = config.get_option("server.address") or "127.0.0.1"
    address = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    url = f"http://{address}:{config.get_option('server.port')}/{base + '/' if base else ''}_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)


def _visitor_connected() -> bool:
    """Whether a browser is connected to this server (False outside a server, as in tests)."""
    from streamlit.runtime import Runtime, RuntimeState

    return Runtime.exists() and Runtime.instance().state == RuntimeState.ONE_OR_MORE_SESSIONS_CONNECTED


def _run(wait: float) -> dict[str, float]:
    if wait:
        _wait_for_server(wait)
    started = time.perf_counter()
    state: dict = {}

    def imports():
        import plotly.graph_objects  # noqa: F401  (Explain's chart)

        from core import runtime
        from dashboard import cache, widgets

        runtime.configure_threads()  # before the first forward pass, as streamlit_app.py does
        state.update(cache=cache, widgets=widgets)

    def default_view():
        """What the pages show before anyone touches a widget: the sidebar's and the image picker's defaults."""
        from core import registry

        cache, widgets = state["cache"], state["widgets"]
        data = cache.sample_bytes(widgets.default_sample())
        state.update(name=registry.DEFAULT, device=cache.devices()[0], data=data, key=cache.digest(data))

    def model():
        state["model"] = state["cache"].model(state["name"], state["device"], True)

    def explain():
        from core import cams

        cache, name, device, key, data = (state[k] for k in ("cache", "name", "device", "key", "data"))
        cache.decoded(key, data)
        cache.top_k(name, device, True, key, data)
        cache.cam_layers(name, device, True)
        cache.cam(name, device, True, key, data, cams.DEFAULT_METHOD, None, None)

    def feature_maps():
        cache, name, device, key, data = (state[k] for k in ("cache", "name", "device", "key", "data"))
        spatial = [info.name for info in cache.layer_table(name, device, True, key, data) if info.cam_ready]
        layer = state["model"].spec.cam_layer  # the page's default layer and channel count
        cache.feature_maps(name, device, True, key, data, layer if layer in spatial else spatial[0], 16)
        cache.first_conv_filters(name, device, True)

    _step("imports", imports)
    if "cache" in state:
        _step("default view", default_view)
    if "key" in state:
        _step("model", model)
    for name, work in (("explain", explain), ("feature maps", feature_maps)):
        if "model" not in state:
            break
        if _visitor_connected():  # its page computes what it shows; on 2 cores a guess on the side slows it down
            timings["skipped (a visitor came first)"] = 0.0
            break
        _step(name, work)
    timings["total"] = time.perf_counter() - started
    _log().info("warm-up done in %.1f s: %s", timings["total"],
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total"))
    return dict(timings)
