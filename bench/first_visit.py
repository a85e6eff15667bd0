"""First visit after the server starts, in Chromium: with the start-up warm-up against without it, in one run.

For each repeat and each entry point, a fresh server per page (nothing cached, nothing imported):
  spawn -> /_stcore/health 'ok', then the page is opened at once and timed from that moment:
  Explain: the title painted, the first heatmap (the Grad-CAM caption and its image loaded), the run finished;
  Feature maps: the title painted, the first channel map loaded, the run finished.
Entry points: `dashboard/streamlit_app.py` (plain `streamlit run`: no warm-up) and `dashboard/serve.py`
(st.App whose lifespan starts the warm-up thread). Prints medians and the ratio warm / plain.

    .venv/bin/python bench/first_visit.py [--repeats 3] [--delay 0] [--entries serve,plain]

--delay waits that many seconds after health before opening the page (a teacher typing the address).
"""

import argparse
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ENTRIES = {"plain": "dashboard/streamlit_app.py", "serve": "dashboard/serve.py"}
LOADED = "img => img.complete && img.naturalWidth > 0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(entry: str):
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", entry, "--server.headless=true", "--server.address=127.0.0.1",
         f"--server.port={port}", "--server.fileWatcherType=none", "--browser.gatherUsageStats=false"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < 120:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return process, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{entry}: no health in 120 s")


def _stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def _visit(browser, url: str, which: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside = []

    def guard(route):
        if (urlparse(route.request.url).hostname or "") in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    times = {}
    opened = time.perf_counter()
    if which == "explain":
        page.goto(url)
        page.get_by_role("heading", name="Explain a prediction").wait_for(timeout=180_000)
        times["paint"] = time.perf_counter() - opened
        page.get_by_text(re.compile(r"^Grad-CAM for")).first.wait_for(timeout=180_000)
        page.wait_for_function(f"() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].some({LOADED})",
                               timeout=60_000)
        times["result"] = time.perf_counter() - opened
    else:
        page.goto(f"{url}/features")
        page.get_by_role("heading", name="Feature maps").first.wait_for(timeout=180_000)
        times["paint"] = time.perf_counter() - opened
        page.get_by_text(re.compile(r"^ch \d+ · mean")).first.wait_for(timeout=180_000)
        page.wait_for_function(f"() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].some({LOADED})",
                               timeout=60_000)
        times["result"] = time.perf_counter() - opened
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=180_000)
    page.wait_for_timeout(200)  # the state flips to notRunning once before the first run starts
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=180_000)
    times["done"] = time.perf_counter() - opened
    context.close()
    if outside:
        raise RuntimeError(f"requests left 127.0.0.1: {outside}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--entries", default="serve,plain")
    args = parser.parse_args()
    entries = [e for e in args.entries.split(",") if e]
    from playwright.sync_api import sync_playwright

    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        for repeat in range(args.repeats):
            for entry in entries if repeat % 2 == 0 else entries[::-1]:  # interleaved: load drifts over a run
                for which in ("explain", "features"):
                    process, url, health = _start(ENTRIES[entry])
                    try:
                        time.sleep(args.delay)
                        times = _visit(browser, url, which)
                    finally:
                        _stop(process)
                    times["health"] = health
                    rows.setdefault((entry, which), []).append(times)
                    print(f"repeat {repeat + 1} {entry:5} {which:8} health {health:5.1f} s · "
                          f"page open -> paint {times['paint']:5.1f} s, first result {times['result']:5.1f} s, "
                          f"run done {times['done']:5.1f} s", flush=True)
        browser.close()
    print(f"\nmedians of {args.repeats} (page opened {args.delay:.0f} s after health):")
    medians = {}
    for (entry, which), values in rows.items():
        medians[entry, which] = {k: statistics.median(v[k] for v in values) for k in values[0]}
        m = medians[entry, which]
        print(f"  {entry:5} {which:8} health {m['health']:5.1f} s · paint {m['paint']:5.1f} s · "
              f"first result {m['result']:5.1f} s · done {m['done']:5.1f} s")
    if {"serve", "plain"} <= set(entries):
        for which in ("explain", "features"):
            ratio = medians["serve", which]["result"] / medians["plain", which]["result"]
            print(f"  {which}: first result with warm-up / without = {ratio:.2f}")


if __name__ == "__main__":
    main()
