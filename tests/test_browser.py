"""Real browser: Debian's Chromium via Playwright against a real server on 127.0.0.1.

Screenshots land in artifacts/screenshots/ (ignored by git) for a person to look at.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing on CI: .ci/run installs it with apt (chromium chromium-driver).")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    yield from serve()


STARTS: dict[str, tuple[float, float]] = {}  # server URL -> (seconds from spawn to health, perf_counter at health)


def serve(env: dict[str, str] | None = None, log_name: str = "browser-server.log"):
    """Starts the dashboard on a free port (with `env` added to the environment), yields its URL, stops it.

    Served as `make run` serves it: dashboard/serve.py, whose start-up warm-up begins when the server starts.
    """
    port = _free_port()
    log = open(ROOT / "artifacts" / log_name, "w") if (ROOT / "artifacts").exists() else subprocess.DEVNULL
    spawned = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/serve.py", "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}", "--server.fileWatcherType=none",
         "--browser.gatherUsageStats=false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                STARTS[url] = (time.perf_counter() - spawned, time.perf_counter())
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the Streamlit server did not become healthy in 90 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
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
    yield page
    context.close()
    assert not outside, f"the page tried to reach outside 127.0.0.1: {outside}"


def _settle(page, timeout=120_000):
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached", timeout=timeout)


def _zip_uploader(page):
    """Choose "Upload a zip" and return the uploader's file input. A rerun that lands under the click can undo the
    choice on a loaded machine (seen on a clean clone: the uploader never came), so choose again until it shows."""
    uploader = page.get_by_test_id("stFileUploader").locator("input[type=file]")
    for _ in range(4):
        page.get_by_text("Upload a zip", exact=True).click()
        _settle(page)
        try:
            uploader.wait_for(state="attached", timeout=30_000)
            return uploader
        except PlaywrightTimeout:
            continue
    uploader.wait_for(state="attached", timeout=30_000)
    return uploader


def _screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => { const c = document.querySelector(\"[data-testid='stMainBlockContainer']\"); return c ? c.scrollHeight : 1000; }"
    )
    page.set_viewport_size({"width": 1400, "height": max(1000, int(height) + 120)})
    page.wait_for_timeout(300)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")
    return path


LOADED = "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].some(i => i.complete && i.naturalWidth)"


def _first_visit(url: str, page, opened: float, what: str) -> None:
    """Print how long the first visit took (tracked across changes: no timed assertion, the machine is shared)."""
    health, healthy_at = STARTS.get(url, (float("nan"), float("nan")))
    print(f"\nfirst visit, {what} {time.perf_counter() - opened:.1f} s after the page opened "
          f"(opened {opened - healthy_at:.1f} s after /_stcore/health answered, {health:.1f} s after the server "
          "was spawned)")


def test_first_start_then_upload_a_photo(server, page, tmp_path):
    opened = time.perf_counter()
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"^Grad-CAM for")).first.wait_for(timeout=120_000)
    page.wait_for_function(LOADED, timeout=120_000)
    _first_visit(server, page, opened, "Explain: the first heatmap")
    _settle(page)
    assert page.get_by_text("Egyptian cat").first.is_visible()
    _screenshot(page, "explain-first-start")

    photo = tmp_path / "coffee.png"
    from PIL import Image

    Image.open(ROOT / "assets" / "samples" / "coffee.jpg").save(photo)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(photo))
    page.get_by_text("upload: coffee.png").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("espresso").first.wait_for(timeout=60_000)
    overlay = page.locator("[data-testid='stImage'] img").first
    overlay.wait_for(timeout=60_000)
    assert page.get_by_text("Grad-CAM for “espresso”").first.is_visible()
    assert overlay.evaluate("img => img.naturalWidth / img.naturalHeight") == pytest.approx(600 / 400, rel=0.01)
    path = _screenshot(page, "explain-upload")
    assert path.stat().st_size > 20_000


def test_upload_an_iphone_heic_photo_and_see_its_heatmap(server, page, tmp_path):
    from PIL import Image

    from core import images  # noqa: F401  (registers pillow-heif: Pillow can write HEIC)

    photo = tmp_path / "IMG_0042.HEIC"  # as an iPhone names it
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways with "rotate 90" in EXIF, as phones do
    Image.open(ROOT / "assets" / "samples" / "coffee.jpg").transpose(Image.Transpose.ROTATE_90).save(
        photo, format="HEIF", quality=85, exif=exif.tobytes())
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    chooser = page.get_by_test_id("stFileUploader").locator("input[type=file]")
    accept = chooser.get_attribute("accept") or ""
    assert ".heic" in accept and ".avif" in accept, accept  # the file dialog offers iPhone photos
    chooser.set_input_files(str(photo))
    page.get_by_text("upload: IMG_0042.HEIC").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("espresso").first.wait_for(timeout=60_000)
    overlay = page.locator("[data-testid='stImage'] img").first
    overlay.wait_for(timeout=60_000)
    assert page.get_by_text("Grad-CAM for “espresso”").first.is_visible()
    # upright (EXIF orientation applied): the overlay has the photo's own landscape aspect
    assert overlay.evaluate("img => img.naturalWidth / img.naturalHeight") == pytest.approx(600 / 400, rel=0.01)
    assert page.locator("[data-testid='stException']").count() == 0
    path = _screenshot(page, "explain-upload-heic")
    assert path.stat().st_size > 20_000


def test_datasets_page_takes_a_finder_zip_with_a_readme_beside_the_class_folders(server, page, tmp_path):
    from tests import zips

    archive = tmp_path / "pets.zip"
    archive.write_bytes(zips.finder(zips.tree(extras={**zips.README, **zips.LABELS}, names=("red", "blue"),
                                              per_class=8), "pets"))
    page.goto(f"{server}/datasets")
    page.get_by_role("heading", name="Datasets").first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    _zip_uploader(page).set_input_files(str(archive))
    page.get_by_text("16 images in 2 classes").wait_for(timeout=120_000)
    page.get_by_text("Confusion matrix and metrics").wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    note = page.get_by_text(re.compile(r"Other files ignored \(not in a class folder\): pets/README\.txt"))
    assert note.first.is_visible()
    assert page.get_by_text("Class folders read from pets/.").first.is_visible()
    assert page.get_by_text(re.compile("Skipped")).count() == 0  # macOS debris is not worth a warning
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "page-datasets-readme-zip")


@pytest.fixture
def fresh_server():
    yield from serve(log_name="browser-server-fresh.log")


def test_first_visit_to_feature_maps_on_a_fresh_server(fresh_server, page):
    opened = time.perf_counter()
    page.goto(f"{fresh_server}/features")
    page.get_by_text(re.compile(r"^ch \d+ · mean")).first.wait_for(timeout=120_000)
    page.wait_for_function(LOADED, timeout=120_000)
    _first_visit(fresh_server, page, opened, "Feature maps: the first channel map")
    _settle(page)
    page.get_by_text("First-layer filters").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.get_by_text("Compare with another backbone").click()  # computed only now
    page.get_by_text(re.compile(r"^EfficientNet-Lite1 · ")).first.wait_for(timeout=120_000)
    _settle(page)
    assert page.locator("[data-testid='stException']").count() == 0


def test_navigation_icons_are_material_symbols_from_the_server(server, page):
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    _settle(page)
    nav = page.get_by_test_id("stSidebarNav")
    more = nav.get_by_role("button", name=re.compile(r"View \d+ more"))
    if more.count():  # the sidebar shows ten pages until asked for the rest
        more.click()
    icons = nav.get_by_test_id("stIconMaterial")
    assert icons.count() == nav.locator("a").count() >= 14
    assert icons.first.inner_text() == "local_fire_department"  # a ligature: drawn by the font, not an emoji
    assert page.evaluate("() => document.fonts.check('24px \"Material Symbols Rounded\"')")
    box = icons.first.bounding_box()
    assert 16 <= box["width"] <= 32, box  # one glyph wide; the ligature's letters would be far wider
    favicon = page.locator("link[rel~='icon']").first.get_attribute("href")
    assert urlparse(urljoin(server, favicon)).hostname == "127.0.0.1", favicon
    with urllib.request.urlopen(urljoin(server, favicon), timeout=10) as answer:
        assert answer.read(8) == b"\x89PNG\r\n\x1a\n"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_test_id("stSidebar").screenshot(path=str(SHOTS / "nav-icons.png"), animations="disabled")


def test_a_non_image_upload_shows_a_message(server, page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("definitely not a JPEG")
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(fake))
    page.get_by_text("not an image we can read").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "explain-bad-upload")


def test_a_slow_method_can_be_cancelled(server, page):
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    _settle(page)
    run = page.get_by_role("button", name="Run Score-CAM")
    for _ in range(4):  # a rerun that lands while the list is open closes it under the click (seen on a clean clone)
        page.get_by_test_id("stSelectbox").filter(has_text="CAM method").click()
        try:
            page.get_by_role("option", name=re.compile(r"^Score-CAM")).click(timeout=20_000)
            run.wait_for(timeout=60_000)
            break
        except PlaywrightTimeout:
            _settle(page)
    run.click()
    page.get_by_role("button", name="Cancel").click(timeout=60_000)
    page.get_by_role("button", name="Run Score-CAM").wait_for(timeout=120_000)  # back to before the run
    _settle(page)
    assert page.get_by_text(re.compile(r"^Score-CAM for")).count() == 0
    assert page.locator("[data-testid='stException']").count() == 0


def test_methods_page_scores_faithfulness_in_the_background_beside_baselines(server, page):
    page.goto(f"{server}/methods")
    page.get_by_role("heading", name="All methods at a glance").first.wait_for(timeout=120_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    page.get_by_text(re.compile(r"^Score faithfulness")).click()
    page.get_by_role("button", name="Stop").wait_for(timeout=60_000)  # in the background, with progress
    page.get_by_text(re.compile(r"^Scoring faithfulness")).first.wait_for(timeout=30_000)  # its queue place or bar
    _screenshot(page, "methods-faithfulness-running")
    page.get_by_text(re.compile(r"^Faithfulness — ")).wait_for(timeout=600_000)
    _settle(page, timeout=60_000)
    assert page.get_by_text("noisy linear imputation", exact=False).first.is_visible()
    assert page.get_by_role("button", name="Stop").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"^At each fraction removed")).click()
    page.wait_for_timeout(500)
    _screenshot(page, "methods-faithfulness")


PAGES = {
    "methods": "All methods at a glance",
    "compare": "Compare backbones",
    "concepts": "Concepts in the image",
    "depth": "Through depth",
    "batch": "Batch predictions",
    "features": "Feature maps",
    "architecture": "Architecture",
}


@pytest.mark.parametrize("path", list(PAGES))
def test_each_page_renders_and_is_screenshotted(server, page, path):
    page.goto(f"{server}/{path}")
    page.get_by_role("heading", name=PAGES[path]).first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    if path in ("methods", "compare", "concepts", "depth", "batch", "features"):
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=240_000)
    if path in ("compare", "architecture"):
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    shot = _screenshot(page, f"page-{path}")
    assert shot.stat().st_size > 10_000


def test_datasets_page_upload_a_zip_and_see_the_map_and_the_confusion_matrix(server, page, tmp_path):
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    archive = tmp_path / "three_colours.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for c, (name, colour) in enumerate({"red": (210, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 210)}.items()):
            for i in range(6):
                rng = np.random.default_rng(c * 10 + i)
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                out.writestr(f"colours/{name}/{name}_{i}.png", buffer.getvalue())
        out.writestr("colours/red/readme.txt", "not an image")
    page.goto(f"{server}/datasets")
    page.get_by_role("heading", name="Datasets").first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    _zip_uploader(page).set_input_files(str(archive))
    page.get_by_text("18 images in 3 classes").wait_for(timeout=120_000)
    page.get_by_text("Confusion matrix and metrics").wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    # t-SNE runs in the background (the PCA map meanwhile); the page's polling swaps the map in when it is done
    page.get_by_text(re.compile(r"t-SNE map\. Trustworthiness")).first.wait_for(timeout=240_000)
    _settle(page, timeout=120_000)
    assert page.get_by_text("Skipped 1 file(s): 1 not an image (.txt)").is_visible()
    assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= 18  # the map (and the cell markers)
    assert page.locator(".js-plotly-plot .heatmaplayer").count() >= 1  # the confusion matrix
    assert page.locator("[data-testid='stException']").count() == 0
    shot = _screenshot(page, "page-datasets")
    # a click on a cell of the matrix opens that cell's images with their heatmaps
    matrix = page.locator(".js-plotly-plot").filter(has=page.locator(".heatmaplayer")).first
    matrix.scroll_into_view_if_needed()
    box = matrix.locator(".scatterlayer .point").first.bounding_box()  # the clickable marker of (blue, blue)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("True blue, predicted blue: 2 image(s)").wait_for(timeout=120_000)
    _settle(page, timeout=120_000)
    assert page.get_by_text(re.compile(r"Grad-CAM for probe class 'blue'")).count() >= 2
    assert shot.stat().st_size > 20_000


def test_datasets_page_refuses_hostile_zips_with_a_message(server, page):
    from tests import zips

    page.goto(f"{server}/datasets")
    page.get_by_role("heading", name="Datasets").first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    uploader = _zip_uploader(page)
    for name, data, message in (
        ("slip.zip", zips.zip_slip(), "unsafe path '../evil.jpg'"),
        ("bomb.zip", zips.high_ratio_bomb(), "possible zip bomb"),
        ("renamed.zip", zips.not_a_zip(), "not a zip archive we can read"),
    ):
        uploader.set_input_files(files=[{"name": name, "mimeType": "application/zip", "buffer": data}])
        page.get_by_text(message).first.wait_for(timeout=60_000)
        _settle(page)
        assert page.locator("[data-testid='stException']").count() == 0, name
    _screenshot(page, "page-datasets-hostile-zip")


def test_benchmarks_page_runs_a_small_benchmark_and_draws_its_charts(server, page):
    assert "app_pages/benchmarks.py" in (ROOT / "dashboard" / "streamlit_app.py").read_text(), \
        "register the page: st.Page('app_pages/benchmarks.py', title='Benchmarks', icon=':material/timer:')"
    page.goto(f"{server}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=120_000)
    _settle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Timed passes").click()  # 3 passes keep it short
    page.get_by_role("option", name="3", exact=True).click()
    _settle(page)
    page.get_by_role("button", name="Run benchmark").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=240_000)
    _settle(page)
    assert page.locator(".js-plotly-plot").count() == 3  # latency bars, accuracy vs latency, throughput lines
    assert page.get_by_text("Throughput vs batch size").first.is_visible()
    assert page.get_by_text("How this was measured").first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    shot = _screenshot(page, "page-benchmarks")
    assert shot.stat().st_size > 10_000


def test_presenter_mode_in_the_browser(server, page, tmp_path):
    """A student's upload on Explain, presented step by step, then 'Exit presenter mode' back to Explain."""
    from PIL import Image

    photo = tmp_path / "student.png"
    Image.open(ROOT / "assets" / "samples" / "coffee.jpg").save(photo)
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(photo))
    page.get_by_text("upload: student.png").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_test_id("stSidebarNav").get_by_text("Presenter mode").click()
    for step in range(1, 7):
        page.get_by_text(re.compile(rf"^{step} / 6 · ")).first.wait_for(timeout=240_000)
        _settle(page, timeout=240_000)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=240_000)
        assert page.locator("[data-testid='stSidebar']").is_hidden()
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_role("button", name="Exit presenter mode").is_visible()
        if step == 1:
            assert page.get_by_text("your photo", exact=True).is_visible()  # the caption: the upload, not a sample
        if step == 2:
            assert page.get_by_text(re.compile(r"^espresso — ")).first.is_visible()
        _screenshot(page, f"present-{step}")
        if step < 6:
            page.get_by_role("button", name="Next ▶").click()
    page.get_by_role("button", name="◀ Back").click()
    page.get_by_text(re.compile(r"^5 / 6 · ")).first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    page.get_by_role("button", name="Exit presenter mode").click()
    page.get_by_role("heading", name="Explain a prediction").wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("Showing the photo from presenter mode (upload: student.png)").wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"^Grad-CAM for “espresso”")).first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stSidebar']").is_visible()
    assert page.url.rstrip("/") == server.rstrip("/")  # the address is Explain's again
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "present-exit-to-explain")


# --- Learn section ---

LEARN_STEPS = {
    "Convolution": "convolution",
    "Padding & stride": "padding-stride",
    "Pooling": "pooling",
    "Receptive field": "receptive-field",
    "Residual connections": "residual",
    "Pretrained features": "pretrained-features",
    "Transfer learning": "transfer-learning",
    "Grad-CAM": "gradcam",
}
def test_learn_every_step_renders_its_maths_and_is_screenshotted(server, page):
    page.goto(f"{server}/learn")
    page.get_by_role("heading", name="Learn", exact=True).first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    steps = page.get_by_test_id("stButtonGroup")
    for step, slug in LEARN_STEPS.items():
        steps.get_by_text(step, exact=True).click()
        page.get_by_role("heading", name=step, exact=True).first.wait_for(timeout=240_000)
        _settle(page, timeout=240_000)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=120_000)
        if step in ("Receptive field", "Residual connections", "Transfer learning", "Grad-CAM"):
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        if step in ("Padding & stride", "Transfer learning"):  # the table draws on a canvas after it appears
            page.locator("[data-testid='stDataFrame'] canvas").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator(".katex").count() >= 1 and page.locator(".katex-error").count() == 0, step
        shot = _screenshot(page, f"learn-{slug}")
        assert shot.stat().st_size > 20_000


def test_training_a_head_on_digits_shows_curves_and_the_confusion_matrix(server, page):
    page.goto(f"{server}/training")
    page.get_by_role("heading", name="Transfer learning", exact=True).first.wait_for(timeout=120_000)
    _settle(page)
    page.get_by_text("Trainable parameters").wait_for(timeout=120_000)
    images = page.get_by_role("spinbutton", name="Images (stratified sample)")
    images.fill("200")
    images.press("Enter")
    _settle(page)
    page.get_by_text("200 images in 10 classes").wait_for(timeout=60_000)
    page.get_by_text("Optimiser and schedule").click()
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("2")
    epochs.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Confusion matrix (test set)").wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Results of this session").is_visible()
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)  # the confusion matrix
    page.wait_for_function(  # the curves: loss and accuracy, train and validation
        "() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 4", timeout=60_000
    )
    assert page.get_by_text(re.compile(r"ImageNet head of EfficientNet-Lite0")).first.is_visible()
    shot = _screenshot(page, "page-training")
    assert shot.stat().st_size > 20_000


def test_live_camera_answers_frames_in_a_closed_loop(server, page):
    """Chromium's fake camera (FLAGS) feeds the live component; Python answers each frame before the next is sent."""
    assert "app_pages/live.py" in (ROOT / "dashboard" / "streamlit_app.py").read_text(), \
        "register the page: st.Page('app_pages/live.py', title='Live camera', icon=':material/videocam:')"
    page.context.grant_permissions(["camera"], origin=server)
    page.goto(f"{server}/live")
    page.get_by_role("heading", name="Live camera").first.wait_for(timeout=120_000)
    _settle(page)
    holder = page.get_by_test_id("stCustomComponentV1")
    holder.wait_for(timeout=60_000)
    camera = holder.element_handle().content_frame()
    camera.get_by_role("button", name="Start camera").click()
    camera.wait_for_function("() => Number(document.body.dataset.answered || 0) >= 10", timeout=180_000)
    answered = int(camera.evaluate("() => document.body.dataset.answered"))
    fps = float(camera.evaluate("() => document.body.dataset.fps"))
    assert fps > 0
    assert re.search(r"Frame \d+ · [\d.]+ frames/s · \d+ ms on the server", camera.locator("#status").inner_text())
    assert camera.locator("#overlay").evaluate("img => img.complete && img.naturalWidth") == 299  # 4:3 at 224 high
    assert camera.locator("#labels b").count() == 3
    assert camera.locator("#message").is_hidden()
    page.get_by_text(re.compile(r"^Server stages: decode")).first.wait_for(timeout=30_000)
    shown = page.get_by_test_id("stMetric").filter(has_text="Frames per second (browser)")
    value = shown.get_by_test_id("stMetricValue").inner_text()
    server_ms = page.get_by_test_id("stMetric").filter(has_text="Server time per frame").get_by_test_id(
        "stMetricValue").inner_text()
    assert re.fullmatch(r"\d+\.\d", value) and float(value) > 0, value
    print(f"\nlive camera end to end: {answered} frames answered, {fps:.2f} frames/s in the browser "
          f"(page shows {value}), server {server_ms} per frame")
    assert page.locator("[data-testid='stException']").count() == 0
    shot = _screenshot(page, "page-live")
    assert shot.stat().st_size > 10_000
    camera.get_by_role("button", name="Stop camera").click()
    assert re.match(r"Stopped after \d+ frames", camera.locator("#status").inner_text())
    page.get_by_text(re.compile(r"^Camera stopped after \d+ frames")).wait_for(timeout=30_000)  # no stale figures
    assert page.get_by_test_id("stMetric").count() == 0


@pytest.fixture
def page_camera_denied(browser):
    """A second Chromium without the fake permission prompt, and no camera permission: getUserMedia is denied."""
    flags = [flag for flag in FLAGS if flag != "--use-fake-ui-for-media-stream"]
    instance = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=flags)
    context = instance.new_context(viewport={"width": 1400, "height": 1000})
    outside: list[str] = []

    def guard(route):
        if (urlparse(route.request.url).hostname or "") in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    yield context.new_page()
    instance.close()
    assert not outside, f"the page tried to reach outside 127.0.0.1: {outside}"


def test_live_camera_denied_shows_a_message_and_the_still_photo_fallback(server, page_camera_denied):
    page = page_camera_denied
    page.goto(f"{server}/live")
    page.get_by_role("heading", name="Live camera").first.wait_for(timeout=120_000)
    _settle(page)
    camera = page.get_by_test_id("stCustomComponentV1").element_handle().content_frame()
    camera.get_by_role("button", name="Start camera").click()
    camera.locator("#message").wait_for(state="visible", timeout=60_000)
    assert "blocked" in camera.locator("#message").inner_text()
    page.get_by_text("Live video is not available").wait_for(timeout=60_000)
    page.get_by_test_id("stCameraInput").wait_for(timeout=60_000)
    _settle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "page-live-denied")


def test_a_phone_photo_is_shown_at_screen_size_and_downloads_at_full_size(server, page, tmp_path):
    from PIL import Image

    from tests.phones import phone_jpeg

    photo = tmp_path / "phone.jpg"
    photo.write_bytes(phone_jpeg(7))
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=120_000)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    started = time.perf_counter()
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(photo))
    page.get_by_text("upload: phone.jpg").wait_for(timeout=120_000)
    _settle(page)
    overlay = page.locator("[data-testid='stImage'] img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle(), timeout=60_000)
    print(f"\n12-MP upload -> heatmap shown: {time.perf_counter() - started:.2f} s (shared machine)")
    assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1440, 1080]
    assert page.get_by_text("4032×3024 px (shown at 1440×1080)").is_visible()
    _screenshot(page, "explain-phone-photo")
    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Download overlay (PNG, 4032×3024)").click()
    saved = tmp_path / "overlay.png"
    download.value.save_as(saved)
    assert Image.open(saved).size == (4032, 3024)
    with page.expect_download(timeout=120_000) as report:
        page.get_by_role("button", name="Download report (HTML)").click()
    document = tmp_path / "report.html"
    report.value.save_as(document)
    text = document.read_text(encoding="utf-8")
    assert "VisionLens report" in text and "1440×1080 px" in text and "data:image/jpeg;base64," in text
