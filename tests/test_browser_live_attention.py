"""Real browser: the Live camera on the trained Shapes ViT offers attention rollout, and Chromium's fake camera gets
rollout overlays back, frame after frame, from the one-pass engine."""

import re

import pytest

from tests.test_browser import _screenshot, _settle, browser, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def _pick(page, box: str, option) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=box).first.click(timeout=120_000)
    page.get_by_role("option", name=option).first.click(timeout=120_000)
    _settle(page, timeout=240_000)


def test_live_camera_shows_rollout_overlays_on_the_shapes_vit(server, page):
    page.context.grant_permissions(["camera"], origin=server)
    page.goto(f"{server}/live")
    page.get_by_role("heading", name="Live camera").first.wait_for(timeout=120_000)
    _settle(page)
    methods = page.get_by_test_id("stSelectbox").filter(has_text="CAM method")
    methods.click()
    assert page.get_by_role("option", name=re.compile(r"^Attention rollout")).count() == 0  # a CNN: not offered
    page.keyboard.press("Escape")
    _pick(page, "Backbone", re.compile(r"^Shapes ViT"))
    _pick(page, "CAM method", re.compile(r"^Attention rollout"))
    page.get_by_text("class-agnostic: the map is the same whatever the top class").first.wait_for(timeout=60_000)

    holder = page.get_by_test_id("stCustomComponentV1")
    holder.wait_for(timeout=60_000)
    camera = holder.element_handle().content_frame()
    camera.get_by_role("button", name="Start camera").click()
    camera.wait_for_function("() => Number(document.body.dataset.answered || 0) >= 3", timeout=180_000)
    assert camera.locator("#message").is_hidden()
    caption = camera.locator("#caption").inner_text()
    assert re.match(r"Attention rollout \(class-agnostic\); top class “(circle|square|triangle|star)”", caption), caption
    assert camera.locator("#overlay").evaluate("img => img.complete && img.naturalWidth") > 0
    labels = camera.locator("#labels b")
    assert labels.count() == 3 and labels.first.inner_text() in {"circle", "square", "triangle", "star"}
    page.get_by_text(re.compile(r"^Server stages: decode .* Attention rollout")).first.wait_for(timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
    shot = _screenshot(page, "page-live-shapes-vit-rollout")
    assert shot.stat().st_size > 10_000
    camera.get_by_role("button", name="Stop camera").click()
