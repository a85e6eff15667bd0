"""Real browser: the transformer methods on the project's trained Shapes ViT. Explain shows attention rollout and
LeGrad overlays on a photo and on a shapes image, and Compare puts the Shapes CNN's Grad-CAM beside the Shapes
ViT's LeGrad, each with its faithfulness."""

import re

import pytest

from tests.test_browser import _screenshot, _settle, browser, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def _pick(page, box: str, option) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=box).first.click(timeout=120_000)
    page.get_by_role("option", name=option).first.click(timeout=120_000)
    _settle(page, timeout=240_000)


def _overlay_shown(page, caption) -> None:
    page.get_by_text(caption).first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stImage'] img").first.evaluate("img => img.complete && img.naturalWidth > 0")


def test_explain_shows_rollout_and_legrad_on_the_shapes_vit(server, page, tmp_path):
    from core import datasets

    page.goto(server)
    page.get_by_text("Top-5 predictions").wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    _pick(page, "Backbone", re.compile(r"^Shapes ViT"))
    page.get_by_text(re.compile(r"^Grad-CAM for “(circle|square|triangle|star)”")).first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    assert page.get_by_text("has random weights").count() == 0  # the trained weights ship in assets/

    _pick(page, "CAM method", re.compile(r"^Attention rollout"))  # on the sample photo (a cat: out of its classes)
    _overlay_shown(page, re.compile(r"^Attention rollout for .* from every block's attention"))
    assert page.get_by_text("does not depend on the class", exact=False).first.is_visible()
    _screenshot(page, "explain-shapes-vit-rollout-photo")
    _pick(page, "CAM method", re.compile(r"^LeGrad"))
    _overlay_shown(page, re.compile(r"^LeGrad for .* from every block's attention"))
    _screenshot(page, "explain-shapes-vit-legrad-photo")

    shape = datasets.shapes(0, 4)
    star = next(i for i, label in enumerate(shape.labels) if shape.classes[label] == "star")
    path = tmp_path / "star.png"
    shape.images[star].save(path)
    page.get_by_text("Upload", exact=True).click()
    _settle(page)
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(path))
    page.get_by_text("upload: star.png").wait_for(timeout=120_000)
    _settle(page)
    _screenshot(page, "explain-shapes-vit-star-uploaded")
    _overlay_shown(page, re.compile(r"^LeGrad for “star” .* from every block's attention"))
    _screenshot(page, "explain-shapes-vit-legrad-star")
    _pick(page, "CAM method", re.compile(r"^Attention rollout"))
    _overlay_shown(page, re.compile(r"^Attention rollout for “star”"))
    _screenshot(page, "explain-shapes-vit-rollout-star")


def test_compare_puts_the_shapes_cnn_beside_the_shapes_vit(server, page):
    page.goto(f"{server}/compare")
    page.get_by_role("heading", name="Compare backbones").first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    chooser = page.get_by_test_id("stMultiSelect").filter(has_text="Backbones")
    chooser.get_by_role("button", name="Clear all").click()
    _settle(page, timeout=120_000)
    for title in ("Shapes CNN", "Shapes ViT"):
        chooser.click()
        page.keyboard.type(title)  # the list is long and virtual: filter it
        page.get_by_role("option", name=re.compile(f"^{title}")).first.click(timeout=60_000)
        _settle(page, timeout=240_000)
    page.keyboard.press("Escape")
    page.get_by_text("Score each heatmap's faithfulness").click()
    _settle(page, timeout=240_000)
    _pick(page, "On the transformers", re.compile(r"^LeGrad"))
    page.get_by_text(re.compile(r"^LeGrad, own top-1")).first.wait_for(timeout=240_000)
    _settle(page, timeout=240_000)
    assert page.get_by_text(re.compile(r"^Grad-CAM, own top-1")).count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Faithfulness of Grad-CAM").count() == 1  # the CNN's
    assert page.get_by_text("Faithfulness of LeGrad").count() == 1  # the ViT's
    assert page.get_by_text(re.compile(r"^random map [+-]0\.\d{3}")).count() == 2
    _screenshot(page, "compare-shapes-cnn-vit")
