"""Phone photos in a real browser: upload -> heatmap shown, opacity change, and the server's memory under load.

Starts `streamlit run dashboard/streamlit_app.py` on 127.0.0.1 (from this checkout, or from --baseline DIR, for
example `git archive <old commit> | tar -x -C DIR`, to measure the old path in the same run) and drives Debian's
Chromium through Playwright. 12-MP photos come from tests/phones.py (4032 x 3024 JPEGs, every one different).

  latency  one session: for each of --photos photos, the time from handing the file to the uploader until its
           heatmap image is loaded in the page (the page caption names the file, the script is idle, the
           overlay <img> is complete); then one opacity step (arrow key on the slider) until the new overlay
           is loaded. Prints each, and the medians. Bars: upload <= 1.5 s, opacity <= 0.5 s (2-core CPU, Lite0).
  memory   --sessions browser sessions (tabs with their own Streamlit session, kept open) each upload --photos
           different photos, round robin; the server's RSS after every upload. Checks every page's top-1 label
           against core on the same bytes, and prints: idle RSS, the bound idle + budget + 1 GB, the peak, and
           the growth over the last half of the uploads. --small uses 640 x 480 photos instead.

Usage:
  python bench/phone_photos.py latency [--photos 10] [--baseline DIR]
  python bench/phone_photos.py memory [--sessions 10] [--photos 20] [--small] [--cache-mb 2048]
The machine may be shared: absolute times are inflated by other load; compare with --baseline in one run.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import budget  # noqa: E402  (no Streamlit in it)
from tests.phones import phone_jpeg  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# the overlay: the picture whose caption says "… at layer …"
_FIND_OVERLAY = """() => {
    for (const box of document.querySelectorAll("[data-testid='stImage']")) {
        const holder = box.closest("[data-testid='stElementContainer']") || box.parentElement;
        if (holder && holder.textContent.includes('at layer')) return box.querySelector('img');
    }
    return null;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(Path(tempfile.gettempdir()) / f"phone-bench-{port}.log", "w")
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "streamlit", "run", "dashboard/streamlit_app.py",
         "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={port}",
         "--server.fileWatcherType=none", "--browser.gatherUsageStats=false"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server in {root} did not become healthy (log: {log.name})")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def new_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside: list[str] = []

    def guard(route):
        host = urlparse(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.goto(url)
    page.get_by_text("Top-5 predictions").wait_for(timeout=240_000)
    page.wait_for_function(f"({_FIND_OVERLAY})() !== null", timeout=240_000)
    page.get_by_text("Upload", exact=True).click()
    page.wait_for_selector(IDLE, state="attached", timeout=120_000)
    page.get_by_test_id("stFileUploader").wait_for(timeout=60_000)
    return page, outside


def _overlay_loaded(page, previous: str | None, timeout: float = 240_000) -> str:
    """Wait until the overlay <img> has a src other than `previous` and has finished loading; returns the src."""
    page.wait_for_function(
        """(previous) => {
            const app = document.querySelector("[data-testid='stApp']");
            if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
            const img = (""" + _FIND_OVERLAY + """)();
            return img && img.src && img.src !== previous && img.complete && img.naturalWidth > 0;
        }""",
        arg=previous or "", timeout=timeout, polling=20,
    )
    return _overlay_src(page)


def _overlay_src(page) -> str | None:
    return page.evaluate(f"() => {{ const img = ({_FIND_OVERLAY})(); return img ? img.src : null; }}")


def upload(page, path: Path) -> float:
    """Seconds from handing `path` to the uploader until its heatmap is shown."""
    previous = _overlay_src(page)
    started = time.perf_counter()
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(path))
    try:
        page.get_by_text(f"upload: {path.name}").wait_for(timeout=240_000)
        _overlay_loaded(page, previous)
    except Exception:
        shot = Path(tempfile.gettempdir()) / f"phone-bench-failed-{path.stem}.png"
        page.screenshot(path=str(shot))
        print(f"{path.name}: no heatmap in time; screenshot {shot}", flush=True)
        raise
    return time.perf_counter() - started


def opacity_step(page, fraction: float) -> float:
    """Click the opacity slider's track at `fraction` of its width (a definite new value, whatever it was)."""
    previous = _overlay_src(page)
    box = page.evaluate("""() => {
        const input = document.querySelector("input[aria-label='Overlay opacity']");
        let thumb = input;
        while (thumb && getComputedStyle(thumb).position !== 'absolute') thumb = thumb.parentElement;
        thumb = thumb.parentElement.closest("[style*='left:']") || thumb;
        const track = thumb.parentElement.getBoundingClientRect();
        return {x: track.x, y: track.y, width: track.width, height: track.height};
    }""")
    started = time.perf_counter()
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
    try:
        _overlay_loaded(page, previous, timeout=60_000)
    except Exception:
        shot = Path(tempfile.gettempdir()) / "phone-bench-failed-opacity.png"
        page.screenshot(path=str(shot))
        print(f"opacity click at {fraction:.0%}: no new overlay; screenshot {shot}", flush=True)
        raise
    return time.perf_counter() - started


def _photos(folder: Path, start: int, count: int, small: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"{'small' if small else 'phone'}_{index:03d}.jpg"
        if not path.exists():
            path.write_bytes(phone_jpeg(index, size=(640, 480) if small else (4032, 3024)))
        paths.append(path)
    return paths


def latency(args) -> None:
    from playwright.sync_api import sync_playwright

    photos = _photos(Path(args.folder), 500, args.photos, False)
    roots = [("this checkout", ROOT)] + ([("baseline", Path(args.baseline))] if args.baseline else [])
    medians = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        for label, root in roots:
            process, url = start_server(root, {})
            try:
                page, outside = new_page(browser, url)
                upload(page, _photos(Path(args.folder), 499, 1, False)[0])  # warm-up: first-upload imports
                ups, steps = [], []
                for index, path in enumerate(photos):
                    ups.append(upload(page, path))
                    steps.append(opacity_step(page, 0.3 if index % 2 else 0.7))
                    print(f"[{label}] {path.name}: upload -> heatmap {ups[-1]:.2f} s, opacity step {steps[-1]:.2f} s",
                          flush=True)
                assert not outside, outside
                medians[label] = (statistics.median(ups), statistics.median(steps))
                print(f"[{label}] median of {len(photos)}: upload -> heatmap {medians[label][0]:.2f} s "
                      f"(max {max(ups):.2f}), opacity step {medians[label][1]:.2f} s (max {max(steps):.2f}); "
                      f"server RSS {rss_mb(process.pid):.0f} MB", flush=True)
                page.context.close()
            finally:
                process.terminate()
                process.wait(timeout=20)
        browser.close()
    if len(medians) == 2:
        (new_up, new_step), (old_up, old_step) = medians["this checkout"], medians["baseline"]
        print(f"ratio old/new: upload -> heatmap {old_up / new_up:.1f}x, opacity step {old_step / new_step:.1f}x")


def memory(args) -> None:
    from playwright.sync_api import sync_playwright

    from core import images, models, predictions

    env = {"VISIONLENS_CACHE_MB": str(args.cache_mb), "VISIONLENS_MODEL_CACHE_MB": str(args.model_cache_mb)}
    budget_mb = args.cache_mb + args.model_cache_mb
    total = args.sessions * args.photos
    photos = _photos(Path(args.folder), 0, total, args.small)
    print(f"{total} photos ready ({'640x480' if args.small else '4032x3024'})", flush=True)
    lite0 = models.load("efficientnet_lite0", device="cpu")
    expected = {p.name: predictions.predict(lite0, images.decode(p.read_bytes()).image, top_k=1)[0].label
                for p in photos}
    del lite0
    process, url = start_server(ROOT, env)
    wrong, rss, times = [], [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            pages = [new_page(browser, url) for _ in range(args.sessions)]
            time.sleep(2)
            idle = rss_mb(process.pid)
            print(f"idle (after {args.sessions} sessions opened, model loaded): {idle:.0f} MB; "
                  f"bound idle + budget {budget_mb} MB + 1 GB = {idle + budget_mb + 1024:.0f} MB", flush=True)
            for round_ in range(args.photos):
                for s, (page, _outside) in enumerate(pages):
                    path = photos[s * args.photos + round_]
                    times.append(upload(page, path))
                    # the overlay's caption names the explained class (the top-1) and the page names the file
                    caption = page.evaluate(f"() => {{ const img = ({_FIND_OVERLAY})(); "
                                            "return img.closest(\"[data-testid='stElementContainer']\").innerText; }")
                    if f"for “{expected[path.name]}”" not in caption or not page.get_by_text(f"upload: {path.name}").count():
                        wrong.append((s, path.name, caption))
                    rss.append(rss_mb(process.pid))
                print(f"round {round_ + 1}/{args.photos}: {len(rss)} uploads, RSS {rss[-1]:.0f} MB, "
                      f"median upload {statistics.median(times[-args.sessions:]):.2f} s", flush=True)
            outside = [u for _p, o in pages for u in o]
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    half = len(rss) // 2
    tail = rss[half:]
    growth = (tail[-1] - tail[0]) / tail[0]
    print(f"\n{total} uploads by {args.sessions} sessions: idle {idle:.0f} MB, peak {max(rss):.0f} MB, "
          f"final {rss[-1]:.0f} MB; bound {idle + budget_mb + 1024:.0f} MB -> "
          f"{'OK' if max(rss) < idle + budget_mb + 1024 else 'OVER'}")
    print(f"last {len(tail)} uploads: RSS {tail[0]:.0f} -> {tail[-1]:.0f} MB ({growth:+.1%}), range "
          f"{min(tail):.0f}..{max(tail):.0f} MB -> {'flat' if abs(growth) <= 0.10 else 'NOT flat'} (within 10%)")
    print(f"median upload -> heatmap under load: {statistics.median(times):.2f} s; wrong results: "
          f"{len(wrong)} {wrong[:3] if wrong else ''}; "
          f"requests outside 127.0.0.1: {len(outside)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("latency", "memory"))
    parser.add_argument("--photos", type=int, default=None, help="latency: photos (10); memory: per session (20)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="memory: 640x480 photos instead of 12 MP")
    parser.add_argument("--baseline", default=None, help="latency: also measure a server started from DIR")
    parser.add_argument("--cache-mb", type=int, default=budget.DEFAULT_DATA_MB, help="the server's VISIONLENS_CACHE_MB")
    parser.add_argument("--model-cache-mb", type=int, default=budget.DEFAULT_MODEL_MB,
                        help="the server's VISIONLENS_MODEL_CACHE_MB")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "visionlens-phone-photos"))
    args = parser.parse_args()
    if args.photos is None:
        args.photos = 10 if args.mode == "latency" else 20
    latency(args) if args.mode == "latency" else memory(args)


if __name__ == "__main__":
    main()
