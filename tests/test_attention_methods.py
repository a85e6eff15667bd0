"""The attention methods (core.attention) as CAM methods: records, 'all', the engine's third path, the CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core import attention, cams, models, preprocessing
from core.__main__ import main
from core.errors import UnknownMethodError
from tests.conftest import TINY_VIT, sample


@pytest.fixture(scope="module")
def vit():
    model = models.load(TINY_VIT, device="cpu")
    with torch.no_grad():  # torchvision zero-initialises the head: every gradient map would be blank
        model.module.heads.head.weight.copy_(torch.randn(model.module.heads.head.weight.shape,
                                                         generator=torch.Generator().manual_seed(1)) * 0.5)
    return model


def test_records_say_what_the_methods_need():
    for name in cams.ATTENTION:
        method = cams.METHODS[name]
        assert method.attention and not method.shared and not method.target_layer and method.cls is None
        assert "attention maps" in method.needs and method.title == attention.METHODS[name].title
    assert not cams.METHODS["rollout"].class_specific and cams.METHODS["legrad"].class_specific
    assert not cams.METHODS["eigencam"].class_specific and cams.METHODS["gradcam"].class_specific


def test_only_transformers_get_them(lite0, vit):
    assert not set(cams.ATTENTION) & set(cams.applicable(lite0, include_slow=True))
    assert cams.applicable(vit)[-3:] == ["rollout", "grad_rollout", "legrad"]
    with pytest.raises(UnknownMethodError, match="does not apply.*attention maps"):
        cams.compute(lite0, sample("chelsea"), methods=["rollout"])


def test_the_engine_computes_them_beside_the_cam_family(vit):
    image = sample("chelsea")
    results = cams.compute(vit, image, methods=["gradcam", "rollout", "legrad", "grad_rollout"], target=2)
    assert [r.method for r in results] == ["gradcam", "rollout", "legrad", "grad_rollout"]
    tensor = preprocessing.to_tensor(image, vit.spec)
    direct = attention.raw_maps(vit, tensor, methods=["rollout", "legrad", "grad_rollout"], target=2)
    for result in results[1:]:
        assert result.heatmap.shape == (image.height, image.width) and result.target == 2
        np.testing.assert_allclose(result.raw, direct[result.method][0], atol=1e-6)
    # rollout does not depend on the class; the gradient-weighted methods do
    other = {r.method: r.raw for r in cams.compute(vit, image, methods=["rollout", "grad_rollout"], target=7)}
    np.testing.assert_allclose(other["rollout"], results[1].raw, atol=1e-6)
    assert not np.allclose(other["grad_rollout"], results[3].raw, atol=1e-3)


def test_cli_method_all_includes_them(tmp_path, vit, capsys):
    out = tmp_path / "rollout.png"
    assert main(["explain", "assets/samples/chelsea.jpg", "--model", TINY_VIT, "--method", "rollout",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert main(["explain", "assets/samples/chelsea.jpg", "--model", TINY_VIT, "--method", "all",
                 "--out", str(tmp_path / "all")]) == 0
    names = " ".join(str(p.relative_to(tmp_path)) for p in (tmp_path / "all").rglob("*.png"))
    for method in cams.ATTENTION:
        assert method in names, (method, names)


def test_rollout_through_depth_is_one_map_per_block(vit):
    image = sample("chelsea")
    results = cams.rollout_depth(vit, image, target=3, size=(120, 80))
    blocks = len(vit.module.encoder.layers)
    assert [r.layer for r in results] == [f"block {k}" for k in range(1, blocks + 1)]
    assert all(r.heatmap.shape == (80, 120) and r.method == "rollout" and r.target == 3 for r in results)
    last = cams.compute(vit, image, methods=["rollout"], target=3)[0]
    np.testing.assert_allclose(results[-1].raw, last.raw, atol=1e-5)  # up to the last block: rollout itself
    with pytest.raises(UnknownMethodError):
        cams.rollout_depth(models.load("tiny_cnn_for_tests", device="cpu"), image, target=0)


def test_the_depth_page_offers_rollout_by_block_on_a_transformer():
    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "depth.py"
    at = AppTest.from_file(str(page), default_timeout=300)
    at.session_state["model_name"] = TINY_VIT
    at.run()
    assert not at.exception, at.exception
    assert "Attention rollout" in at.selectbox(key="depth_method").options
    at.selectbox(key="depth_method").set_value("rollout").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert "block 1" in captions and "block 2" in captions
    assert any("does not depend on the class" in c.value for c in at.caption)


def test_the_compare_page_puts_a_transformer_method_beside_the_cnns_gradcam():
    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "compare.py"
    at = AppTest.from_file(str(page), default_timeout=300)
    at.session_state["compare_names"] = ["tiny_cnn_for_tests", TINY_VIT]
    at.session_state["compare_weights"] = "random"
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="compare_transformer_method").set_value("legrad").run()
    assert not at.exception, at.exception
    captions = [c for img in at.get("image") for c in img.captions]
    assert any(c.startswith("Grad-CAM, own top-1") for c in captions)
    assert any(c.startswith("LeGrad, own top-1") for c in captions)
    assert not [m for m in at.metric if m.label.startswith("Faithfulness")]  # only when asked: dozens of passes
    at.toggle(key="compare_faithful").set_value(True).run()
    assert not at.exception, at.exception
    scores = {m.label: float(m.value) for m in at.metric if m.label.startswith("Faithfulness of")}
    assert set(scores) == {"Faithfulness of Grad-CAM", "Faithfulness of LeGrad"}, scores
    assert all(-1 <= v <= 1 for v in scores.values())
    assert sum(c.value.startswith("random map ") for c in at.caption) == 2


def test_attention_results_name_every_block_not_the_target_layer(vit):
    (result,) = cams.compute(vit, sample("chelsea"), methods=["rollout"], target=1)
    assert result.layer == "every block"
