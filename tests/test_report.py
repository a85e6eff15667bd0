"""The HTML report: self-contained, every image embedded, opens in Chromium; and from the CLI."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import faithfulness, models, report
from tests.conftest import TINY, sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def document(lite0) -> str:
    tiny = models.load(TINY, device="cpu")
    image = sample("chelsea")
    sections = [
        report.analyse(lite0, image, methods=["gradcam", "eigencam"], score=False),
        report.analyse(tiny, image, methods=["gradcam", "eigencam"], target=3, score=False),
    ]
    return report.render(image, sections, source="chelsea.jpg <sample>", settings={"note": "<b>escaped</b>"})


def test_every_image_is_embedded_and_text_is_escaped(document):
    sources = re.findall(r"<img[^>]*src='([^']+)'", document)
    assert len(sources) == 1 + 2 * 2  # the input, then methods x models
    assert all(s.startswith("data:image/") for s in sources)
    assert "http://" not in document and "https://" not in document  # nothing to fetch
    assert "&lt;b&gt;escaped&lt;/b&gt;" in document and "<b>escaped" not in document
    assert "Egyptian cat" in document and "Grad-CAM" in document and "Eigen-CAM" in document
    assert "torch" in document and "grad-cam" in document  # versions


def test_report_opens_in_chromium_with_every_image(document, tmp_path):
    if not Path("/usr/bin/chromium").exists():
        if os.environ.get("CI"):
            raise RuntimeError("Chromium is missing on CI")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(document, encoding="utf-8")
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1300, "height": 900})

        def guard(route):
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        shots = ROOT / "artifacts" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        browser.close()
    assert len(sizes) == 5 and all(done and width > 0 for done, width in sizes), sizes
    assert not outside, outside


def test_a_method_below_the_random_map_is_marked(lite0):
    image = sample("chelsea")
    section = report.analyse(lite0, image, methods=["gradcam", "eigencam"], score=False)
    def score(value):
        return faithfulness.Faithfulness((0.5,), (-value,), (value,), 0.0)

    card = faithfulness.Scorecard(
        section.results[0].target, {"gradcam": score(0.2), "eigencam": score(-0.1)},
        {"random": score(0.0), "inverted": score(-0.2), "edges": score(0.05)}, "gradcam", 1.0,
    )
    document = report.render(image, [dataclasses.replace(section, scores=card)])
    assert document.count("no better than a random map here") == 1
    assert "faithfulness +0.200" in document and "1 − Grad-CAM · faithfulness -0.200" in document
    assert "Sobel edges (baseline)" in document and "faithfulness +0.050" in document


def test_cli_report(tmp_path):
    out = tmp_path / "r.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "core", "report", str(ROOT / "assets/samples/coffee.jpg"), "--models",
         "efficientnet_lite0", "--methods", "gradcam,layercam", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.count("<img") == 3 and "espresso" in text and "ROAD" in text
    assert "faithfulness +" in text and "noisy linear imputation" in text
    for baseline in ("Random map (baseline)", "Inverted best map (baseline)", "Sobel edges (baseline)"):
        assert baseline in text
    bad = subprocess.run(
        [sys.executable, "-m", "core", "report", str(ROOT / "assets/samples/coffee.jpg"), "--methods", "nope",
         "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: Unknown CAM method 'nope'")
