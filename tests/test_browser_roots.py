"""Real browser, a server given one data root: the Datasets page offers the datasets under it and nothing
else (no typed path), and a dataset whose class is called `<img src=x onerror=alert(1)>` renders on the
Datasets and Transfer learning pages without any script running (no dialog opens)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import _screenshot, _settle, browser, page, serve  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=alert(1)>"


def _dataset(folder: Path, classes: tuple[str, ...], per_class: int = 8) -> None:
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(c * 100 + i)
            colour = np.array([(210, 40, 40), (40, 60, 210), (40, 180, 60)][c % 3])
            pixels = np.clip(colour + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roots")
    root = tmp / "classroom"
    _dataset(root / "colours", ("red", "blue", "green"))
    _dataset(root / "tricky", (HOSTILE, "plain"))
    _dataset(tmp / "private" / "secret", ("a", "b"))  # beside the root: never offered
    yield from serve({"VISIONLENS_DATA_ROOTS": str(root)}, "browser-server-roots.log")


def _pick_server_source(page, url: str, path: str, heading: str) -> None:
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    page.get_by_text("Dataset on this server", exact=True).first.click()
    _settle(page, timeout=240_000)


def _options(page) -> list[str]:
    box = page.get_by_test_id("stSelectbox").filter(has_text="Which dataset")
    box.click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_the_datasets_page_offers_the_configured_datasets_and_nothing_else(server, page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _pick_server_source(page, server, "datasets", "Datasets")
    typed = page.locator("[data-testid='stTextInput']").filter(has_not_text="Name contains")  # the model finder's
    assert typed.count() == 0  # no free path to type
    assert _options(page) == ["classroom/colours · 24 images, 3 classes", "classroom/tricky · 16 images, 2 classes"]
    page.get_by_text("colours: 24 images in 3 classes").wait_for(timeout=120_000)
    _screenshot(page, "page-datasets-server-roots")

    box = page.get_by_test_id("stSelectbox").filter(has_text="Which dataset")
    box.click()
    page.get_by_role("option", name="classroom/tricky · 16 images, 2 classes").click()
    page.get_by_text("tricky: 16 images in 2 classes").wait_for(timeout=120_000)
    page.get_by_text("Confusion matrix and metrics").wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    page.wait_for_timeout(1000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text(HOSTILE).count() >= 1  # the name shows as text
    assert page.locator("img[src='x']").count() == 0 and not dialogs, dialogs
    _screenshot(page, "page-datasets-hostile-class")


def test_the_transfer_learning_page_shows_a_hostile_class_as_text(server, page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _pick_server_source(page, server, "training", "Transfer learning")
    box = page.get_by_test_id("stSelectbox").filter(has_text="Which dataset")
    box.click()
    page.get_by_role("option", name="classroom/tricky · 16 images, 2 classes").click()
    _settle(page, timeout=240_000)
    page.get_by_text(HOSTILE).first.wait_for(timeout=120_000)
    page.wait_for_timeout(1000)
    assert page.locator("img[src='x']").count() == 0 and not dialogs, dialogs
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "page-training-hostile-class")
