"""Real browser: the "Where the model looks" tab with target "both" on the Shapes CNN (its classes are the shapes
set's): a wrong prediction's gallery tile shows its two stored maps side by side, "looked for" what it said and
the true class."""

import re

import pytest

from tests.test_browser import _screenshot, _settle, browser, page, server  # noqa: F401  (fixtures)
from tests.test_browser_attention import _pick

pytestmark = pytest.mark.browser


def _choose(page, label: str, typed: str, option) -> None:
    """Pick in the selectbox `label` by typing (a click on an option is lost when a rerun redraws the list)."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.first.locator("input").click(timeout=60_000)
    page.keyboard.type(typed)  # the list filtered to the one option
    page.get_by_text(option).first.wait_for(timeout=60_000)
    page.keyboard.press("Enter")
    _settle(page, timeout=240_000)


def test_both_puts_a_wrong_predictions_two_maps_side_by_side(server, page):
    page.goto(f"{server}/datasets")
    page.get_by_role("heading", name="Datasets").first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    _pick(page, "Backbone", re.compile(r"^Shapes CNN"))
    page.get_by_text("Shapes with masks (built-in)", exact=True).click()
    _settle(page, timeout=240_000)
    limit = page.get_by_role("spinbutton", name="Images (stratified sample)")
    limit.fill("48")
    limit.press("Enter")
    page.get_by_text("shapes: 48 images in 4 classes").wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    # the features tab's extraction first: its progress reruns the page (an open list would close)
    page.get_by_text(re.compile(r"-d features of 48 images")).wait_for(state="attached", timeout=240_000)
    _settle(page, timeout=240_000)
    page.get_by_role("tab", name="Where the model looks").click()
    _choose(page, "Explain", "both", re.compile(r"^both \(a wrong"))
    page.get_by_role("button", name="Explain every image").click()
    page.get_by_text("Where it looks, class by class").wait_for(timeout=240_000)
    _settle(page, timeout=120_000)
    _choose(page, "Show", "Wrong, with", re.compile(r"^Wrong, with the most concentrated heat"))
    said = page.get_by_text(re.compile(r"^looked for \w+ · \w+ → \w+ · heat half area"))
    truth = page.get_by_text(re.compile(r"^looked for \w+ · heat half area \d\.\d\d$"))
    said.first.wait_for(timeout=120_000)
    _settle(page, timeout=120_000)
    assert said.count() >= 1 and said.count() == truth.count()
    # side by side: the true class's map to the right of the prediction's, on the same row
    left, right = said.first.bounding_box(), truth.first.bounding_box()
    assert right["x"] > left["x"] + left["width"] / 2 and abs(right["y"] - left["y"]) < 40
    assert page.locator("[data-testid='stException']").count() == 0
    _screenshot(page, "page-datasets-audit-both")
