"""Real browser: the Datasets page's "Where the model looks" tab on the shapes set, with the offline Lite0 and a
second backbone (Lite1): the job runs in the background, the class grid and the review gallery come from the
stored maps, and two backbones are compared on the same images."""

import re

import pytest

from tests.test_browser import _screenshot, _settle, browser, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_the_audit_tab_explains_the_shapes_set_and_compares_two_backbones(server, page):
    page.goto(f"{server}/datasets")
    page.get_by_role("heading", name="Datasets").first.wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    page.get_by_text("Shapes with masks (built-in)", exact=True).click()
    _settle(page, timeout=240_000)
    limit = page.get_by_role("spinbutton", name="Images (stratified sample)")
    limit.fill("24")
    limit.press("Enter")
    page.get_by_text("shapes: 24 images in 4 classes").wait_for(timeout=120_000)
    _settle(page, timeout=240_000)
    page.get_by_role("tab", name="Where the model looks").click()
    page.get_by_role("button", name="Explain every image").click()
    page.get_by_text("Where it looks, class by class").wait_for(timeout=240_000)
    _settle(page, timeout=120_000)
    _screenshot(page, "page-datasets-audit")
    assert page.get_by_text("24 maps from Grad-CAM").count() == 1
    assert page.get_by_text(re.compile(r"heat in mask 0\.\d\d")).count() == 12  # the review gallery's tiles
    assert page.locator("[data-testid='stException']").count() == 0
    # the gallery's tiles and the class grid are images the server made from the stored maps
    tab = page.get_by_role("tabpanel").filter(has_text="Where it looks")
    assert tab.locator("img").count() >= 4 + 12

    page.get_by_role("button", name="Explain every image with EfficientNet-Lite1 too").click()
    page.get_by_text("Where they disagree most").wait_for(timeout=240_000)
    _settle(page, timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("agreement", exact=False).count() >= 4
    _screenshot(page, "page-datasets-audit-compare")

    # the features tab says which precision ran ('auto': fp32 on a CPU, also with native bf16) and why
    page.get_by_role("tab", name="Features, predictions and metrics").click()
    page.get_by_text(re.compile(r"-d features of 24 images .* fp32 \(auto\)")).wait_for(timeout=60_000)
    _screenshot(page, "page-datasets-features-precision")
