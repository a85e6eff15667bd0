"""core.cam_methods: method facts are fields of the record, the engine reads them, 'all' is computed once."""

import dataclasses
import inspect
import types
from pathlib import Path

import numpy as np
import pytest
from pytorch_grad_cam import FEM, KPCA_CAM, GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core import cam_methods, cams, hooks, preprocessing, registry

ROOT = Path(__file__).resolve().parents[1]
ONE_PASS = ["gradcam", "hirescam", "gradcam_elementwise", "gradcam++", "xgradcam", "layercam", "eigengradcam",
            "eigencam", "kpcacam", "fem"]


def _model_of(name: str):
    """applicable() reads only the spec: no weights needed to know which methods apply."""
    return types.SimpleNamespace(spec=registry.get(name))


def test_all_on_a_cnn_is_every_method_but_the_per_channel_ones():
    cnn = _model_of(registry.DEFAULT)
    assert cams.applicable(cnn) == [*ONE_PASS, "fullgrad", "finercam", "shapleycam"]  # 13
    assert cams.applicable(cnn, include_slow=True) == [*ONE_PASS, "fullgrad", "finercam", "shapleycam",
                                                       "scorecam", "ablationcam"]  # 15
    assert cams.applicable(cnn, include_slow=True) == [m for m in cams.METHODS if not cams.METHODS[m].attention]


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_all_on_a_token_model_leaves_out_the_cnn_only_methods(name):
    model = _model_of(name)
    assert cams.applicable(model) == [*ONE_PASS, "finercam", "rollout", "grad_rollout", "legrad"]
    assert cams.applicable(model, include_slow=True) == [*ONE_PASS, "finercam", "scorecam", "rollout", "grad_rollout",
                                                         "legrad"]
    for method in ("fullgrad", "shapleycam", "ablationcam"):
        assert not cams.METHODS[method].applies_to(model) and cams.METHODS[method].reason


def test_method_facts_are_fields():
    m = cams.METHODS
    assert [n for n, info in m.items() if info.per_channel] == ["scorecam", "ablationcam"]
    assert all(info.slow == info.per_channel for info in m.values())
    assert [n for n, info in m.items() if not info.target_layer] == ["fullgrad", *cams.ATTENTION]
    assert cams.ATTENTION == ("rollout", "grad_rollout", "legrad")
    assert [n for n, info in m.items() if info.second_derivatives] == ["shapleycam"]
    assert [n for n, info in m.items() if info.contrastive] == ["finercam"]
    assert [n for n, info in m.items() if info.shared] == ONE_PASS == list(cams.SHARED)
    assert m["shapleycam"].needs == "gradients, second derivatives, a target layer, a CNN"
    # the shared path's options come from the library's own constructor defaults, not retyped
    assert m["kpcacam"].options() == {"kernel": "sigmoid", "gamma": None}
    assert m["fem"].options() == {"k": 2}


def test_the_engine_does_not_check_method_classes():
    source = (ROOT / "core" / "cams.py").read_text()
    for pattern in ("cls is ", "cls in (", "isinstance(cam, KPCA_CAM)", "isinstance(cam, FEM)", "is ShapleyCAM",
                    "is FinerCAM", "is FullGrad"):
        assert pattern not in source, pattern


def _library(model, tensor, cls, target, layer, **kwargs):
    module = hooks.find(model.module, layer)
    with cls(model=model.module, target_layers=[module], reshape_transform=None, **kwargs) as cam:
        return cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]


@pytest.mark.parametrize(("name", "cls", "kwargs"), [("kpcacam", KPCA_CAM, {"kernel": "cosine"}), ("fem", FEM, {"k": 1})])
def test_a_records_kwargs_reach_the_shared_pass(monkeypatch, tiny, chelsea, name, cls, kwargs):
    tensor = preprocessing.to_tensor(chelsea, tiny.spec)
    layer = tiny.spec.cam_layer
    default = cams.raw_maps(tiny, tensor, methods=[name], target=2, layer=layer)[name][0]
    monkeypatch.setitem(cams.METHODS, name, dataclasses.replace(cams.METHODS[name], kwargs=kwargs))
    ours = cams.raw_maps(tiny, tensor, methods=[name], target=2, layer=layer)[name][0]
    np.testing.assert_allclose(ours, _library(tiny, tensor, cls, 2, layer, **kwargs), atol=2e-5)
    assert not np.allclose(ours, default, atol=1e-3)  # the option changed the map: it was read, not ignored


def test_the_engine_dispatches_on_fields(monkeypatch, tiny, chelsea):
    # Grad-CAM as a library-path record: the same map as from the shared pass, through the library's own call
    monkeypatch.setitem(cams.METHODS, "gradcam_library",
                        dataclasses.replace(cams.METHODS["gradcam"], name="gradcam_library", shared=False))
    tensor = preprocessing.to_tensor(chelsea, tiny.spec)
    maps = cams.raw_maps(tiny, tensor, methods=["gradcam", "gradcam_library"], target=2, layer=tiny.spec.cam_layer)
    np.testing.assert_allclose(maps["gradcam_library"][0], maps["gradcam"][0], atol=2e-5)
    # per_channel is what makes the progress expect one pass per channel batch
    monkeypatch.setitem(cams.METHODS, "gradcam_library",
                        dataclasses.replace(cams.METHODS["gradcam_library"], per_channel=True))
    seen = []
    cams.raw_maps(tiny, tensor, methods=["gradcam_library"], target=2, layer=tiny.spec.cam_layer,
                  on_progress=lambda fraction, message: seen.append(message))
    assert any("forward pass 1 of " in m and not m.endswith("of 1") for m in seen), seen
    assert hooks.count(tiny.module) == 0


def test_a_records_failures_are_its_messages(monkeypatch):
    method = dataclasses.replace(cams.METHODS["gradcam"], failures=(("boom", "A message for people."),))
    with pytest.raises(cams.LayerNotFoundError, match="A message for people"):
        with cams._explained_failures(method, None):
            raise RuntimeError("it went boom")
    with pytest.raises(RuntimeError, match="other"):
        with cams._explained_failures(method, None):
            raise RuntimeError("other")


def test_build_passes_the_records_kwargs(tiny):
    module = hooks.find(tiny.module, tiny.spec.cam_layer)
    method = dataclasses.replace(cams.METHODS["kpcacam"], kwargs={"kernel": "rbf", "gamma": 0.5})
    with method.build(tiny.module, module, None) as cam:
        assert (cam.kernel, cam.gamma) == ("rbf", 0.5) and cam.target_layers == [module]
    with cams.METHODS["fullgrad"].build(tiny.module, tiny.module, None) as cam:  # the whole net as "layer"
        assert tiny.module not in cam.target_layers and len(cam.target_layers) > 1  # picks its own bias layers
    assert hooks.count(tiny.module) == 0


def test_pages_and_cli_ask_core_for_the_method_list():
    for path in ("core/cli/images.py", "dashboard/app_pages/explain.py", "dashboard/app_pages/methods.py"):
        source = (ROOT / path).read_text()
        assert "cams.applicable(model" in source, path
        assert "cnn_only" not in source and 'family != "cnn"' not in source, path


def test_method_records_describe_the_pinned_library():
    # the fields mirror pytorch-grad-cam's constructors: a library upgrade that changes them fails here
    assert set(inspect.signature(GradCAM.__init__).parameters) == {"self", "model", "target_layers",
                                                                   "reshape_transform"}
    assert cam_methods.METHODS is cams.METHODS
    requirements = (ROOT / "requirements.txt").read_text()
    assert "grad-cam==" in requirements
