"""Real browser: any classifier from the sidebar's finder (a timm model, random weights here), and the user's own
weights with a labels file, whose class names then fill the top-5."""

import json

import pytest
import torch

from tests.test_browser import _screenshot, _settle, browser, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

LABELS = ["tabby", "tulip", "tractor", "teapot", "tiger"]


def _sidebar(page):
    return page.get_by_test_id("stSidebar")


def _choose(page, label: str, option: str) -> None:
    """Pick `option` in the sidebar selectbox called `label` (Streamlit's selectbox is a combobox)."""
    box = _sidebar(page).get_by_role("combobox", name=label)
    box.click()
    box.fill(option)
    page.get_by_role("option").filter(has_text=option).first.wait_for(timeout=60_000)
    page.keyboard.press("Enter")  # the first option the typed text leaves
    _settle(page)


def test_find_a_timm_model_in_the_sidebar_and_see_its_heatmap(server, page):
    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=180_000)
    _settle(page, timeout=180_000)
    _sidebar(page).get_by_text("Find any classifier").click()
    search = _sidebar(page).get_by_role("textbox", name="Name contains")
    search.fill("resnet18 a1")
    search.press("Enter")
    _settle(page)
    card = _sidebar(page).get_by_text("11.7M parameters", exact=False)  # the model card of the find
    for _ in range(3):  # a rerun that redraws the list while it is open closes it: pick again
        try:
            _choose(page, "Matches", "timm/resnet18.a1_in1k")
        except Exception:  # noqa: BLE001  (the list closed under the click; the next try opens it again)
            _settle(page)
        if card.count():
            break
    _sidebar(page).get_by_text("Architecture only (random weights)").click()
    _settle(page, timeout=180_000)
    page.get_by_text("has random weights").first.wait_for(timeout=180_000)
    page.get_by_text("Grad-CAM for").first.wait_for(timeout=180_000)
    _sidebar(page).get_by_text("11.7M parameters", exact=False).first.wait_for(timeout=60_000)  # the model card
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "zoo-timm-resnet18")


def test_own_weights_and_labels_fill_the_top5_with_their_names(server, page, tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    weights = tmp_path / "five_classes.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet18(num_classes=5).state_dict().items()}}, weights)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))

    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=180_000)
    _settle(page, timeout=180_000)
    _choose(page, "Backbone", "ResNet-18")
    _sidebar(page).get_by_text("Your own weights").click()
    uploaders = _sidebar(page).get_by_test_id("stFileUploader")
    uploaders.nth(1).locator("input[type=file]").set_input_files(str(labels))
    _settle(page)
    uploaders.nth(0).locator("input[type=file]").set_input_files(str(weights))
    _settle(page, timeout=180_000)
    page.get_by_text("Loaded as").first.wait_for(timeout=180_000)  # checked, registered and picked
    _settle(page, timeout=180_000)
    page.get_by_text("tabby", exact=False).first.wait_for(timeout=180_000)
    _settle(page, timeout=180_000)
    _sidebar(page).screenshot(path=str(_screenshot(page, "zoo-own-weights").with_name("zoo-own-sidebar.png")))
    main = page.get_by_test_id("stMain")
    shown = sum(main.get_by_text(name, exact=False).count() > 0 for name in LABELS)
    assert shown >= 3, main.inner_text()[:1500]
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "zoo-own-weights")
