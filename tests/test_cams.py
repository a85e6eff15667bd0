"""CAMs: localisation on a real photo, equality with pytorch-grad-cam, thread safety, no leftover hooks."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core import cams, hooks, models, preprocessing
from core.errors import InvalidInputError, LayerNotFoundError, UnknownMethodError
from tests.conftest import sample

EGYPTIAN_CAT = 285


def _cat_on_canvas() -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Chelsea pasted at a known place on a larger neutral textured canvas."""
    rng = np.random.default_rng(0)
    canvas = (rng.normal(128, 12, size=(600, 900, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    cat = sample("chelsea")
    box = (480, 200, 480 + cat.width, 200 + cat.height)
    image.paste(cat, box[:2])
    return image, box


def test_gradcam_heat_is_on_the_cat(lite0):
    image, (x0, y0, x1, y1) = _cat_on_canvas()
    (result,) = cams.compute(lite0, image, methods=["gradcam"], target=EGYPTIAN_CAT)
    heat = result.heatmap
    assert heat.shape == (image.height, image.width) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0.9
    inside = heat[y0:y1, x0:x1].sum() / heat.sum()
    area = (x1 - x0) * (y1 - y0) / heat.size
    assert inside > 0.75, f"only {inside:.2f} of the heat is on the cat (box is {area:.2f} of the image)"
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert y0 <= peak[0] < y1 and x0 <= peak[1] < x1
    assert hooks.count(lite0.module) == 0


def test_default_target_is_top1_and_layer_is_specs(lite0, chelsea):
    (result,) = cams.compute(lite0, chelsea)
    assert result.method == "gradcam" and result.target in range(281, 286)
    assert result.layer == lite0.spec.cam_layer and result.label == lite0.categories[result.target]


def _library_map(model, tensor, method, target, layer):
    module = hooks.find(model.module, layer)
    with cams.METHODS[method].cls(model=model.module, target_layers=[module], reshape_transform=None) as cam:
        return cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]


@pytest.mark.parametrize("layer", ["bn2", "blocks.5"])
def test_shared_pass_equals_library_for_every_method(lite0, chelsea, layer):
    tensor = preprocessing.to_tensor(chelsea, lite0.spec)
    ours = cams.raw_maps(lite0, tensor, methods=list(cams.SHARED), target=EGYPTIAN_CAT, layer=layer)
    for method in cams.SHARED:
        theirs = _library_map(lite0, tensor, method, EGYPTIAN_CAT, layer)
        assert ours[method][0].shape == theirs.shape
        np.testing.assert_allclose(ours[method][0], theirs, atol=2e-5, err_msg=method)
    assert hooks.count(lite0.module) == 0


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_shared_pass_equals_library_on_resnet18(chelsea, layer):
    # Not on "layer3.1.bn2": the block adds the identity to that output in place, and on the CPU the
    # library's saved activation shares storage with it, so it records the post-residual values.
    # Our shared pass hands the network a clone and keeps the layer's true output.
    model = models.load("resnet18", device="cpu", pretrained=False)
    tensor = preprocessing.to_tensor(chelsea, model.spec)
    ours = cams.raw_maps(model, tensor, methods=list(cams.SHARED), target=3, layer=layer)
    for method in cams.SHARED:
        theirs = _library_map(model, tensor, method, 3, layer)
        np.testing.assert_allclose(ours[method][0], theirs, atol=2e-5, err_msg=method)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_transformers_get_maps_through_their_reshape(name, chelsea):
    model = models.load(name, device="cpu", pretrained=False)
    results = cams.compute(model, chelsea, methods=["gradcam", "layercam", "eigencam"], target=1)
    for result in results:
        assert result.heatmap.shape == (chelsea.height, chelsea.width)
        assert np.isfinite(result.heatmap).all() and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    tensor = preprocessing.to_tensor(chelsea, model.spec)
    ours = cams.raw_maps(model, tensor, methods=["gradcam"], target=1, layer=model.spec.cam_layer)
    module = hooks.find(model.module, model.spec.cam_layer)
    with cams.METHODS["gradcam"].cls(model=model.module, target_layers=[module], reshape_transform=model.spec.reshape) as cam:
        theirs = cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(1)])[0]
    np.testing.assert_allclose(ours["gradcam"][0], theirs, atol=2e-5)
    with pytest.raises(UnknownMethodError, match="does not apply"):
        cams.compute(model, chelsea, methods=["ablationcam"])


def test_every_method_on_the_tiny_cnn(tiny, chelsea):
    every = cams.applicable(tiny, include_slow=True)  # all but the attention methods, which need a transformer
    assert every == [m for m in cams.METHODS if not cams.METHODS[m].attention]
    results = cams.compute(tiny, chelsea, methods=every, target=2)
    assert [r.method for r in results] == every
    for result in results:
        assert result.heatmap.shape == (chelsea.height, chelsea.width), result.method
        assert np.isfinite(result.heatmap).all() and result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    assert hooks.count(tiny.module) == 0
    assert all(p.grad is None for p in tiny.module.parameters())


def test_every_applicable_method_on_a_tiny_vit(tiny_vit, chelsea):
    usable = [m for m, info in cams.METHODS.items() if not info.cnn_only]
    results = cams.compute(tiny_vit, chelsea, methods=usable, target=4)
    for result in results:
        assert result.heatmap.shape == (chelsea.height, chelsea.width), result.method
        assert np.isfinite(result.heatmap).all() and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    for method in [m for m, info in cams.METHODS.items() if info.cnn_only]:
        with pytest.raises(UnknownMethodError, match="does not apply"):
            cams.compute(tiny_vit, chelsea, methods=[method])
    assert hooks.count(tiny_vit.module) == 0


def test_progress_is_reported_for_perturbation_methods(tiny, chelsea):
    seen = []
    cams.compute(tiny, chelsea, methods=["scorecam"], target=0, on_progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) >= 3


def test_bad_arguments_fail_before_touching_the_model(lite0, chelsea):
    with pytest.raises(UnknownMethodError, match="Did you mean 'gradcam'"):
        cams.compute(lite0, chelsea, methods=["gradcan"])
    with pytest.raises(LayerNotFoundError, match="No layer 'blocks.99'"):
        cams.compute(lite0, chelsea, layer="blocks.99")
    for bad in (1000, -1, 3.5, True):
        with pytest.raises(InvalidInputError, match="between 0 and 999"):
            cams.compute(lite0, chelsea, target=bad)
    with pytest.raises(LayerNotFoundError, match="feature maps"):
        cams.compute(lite0, chelsea, layer="classifier")
    assert hooks.count(lite0.module) == 0


def test_hooks_are_removed_when_the_forward_pass_fails(tiny, chelsea):
    boom = tiny.module[7].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    try:
        before = hooks.count(tiny.module)
        with pytest.raises(RuntimeError, match="boom"):
            cams.compute(tiny, chelsea, methods=["gradcam", "scorecam"], target=0)
        assert hooks.count(tiny.module) == before
    finally:
        boom.remove()
    assert hooks.count(tiny.module) == 0


def test_refuses_inference_mode(tiny, chelsea):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cams.compute(tiny, chelsea)


def _concurrent_equals_sequential(model, jobs):
    from core import predictions

    def run(job):
        image, method, target = job
        if method == "predict":
            return [(p.index, p.prob) for p in predictions.predict(model, image)]
        return cams.compute(model, image, methods=[method], target=target)[0].heatmap

    expected = [run(job) for job in jobs]
    got: list = [None] * len(jobs)
    errors: list = []
    barrier = threading.Barrier(8)

    def worker(indices):
        barrier.wait()
        try:
            for i in indices:
                got[i] = run(jobs[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(range(w, len(jobs), 8),)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for job, want, have in zip(jobs, expected, got, strict=True):
        if job[1] == "predict":
            assert want == have
        elif job[1] == "kpcacam":  # scikit-learn's KernelPCA (ARPACK, random start) varies by ~1e-7 run to run
            np.testing.assert_allclose(want, have, atol=1e-5, err_msg=str(job[1:]))
        else:
            np.testing.assert_array_equal(want, have, err_msg=str(job[1:]))
    assert hooks.count(model.module) == 0


def test_eight_threads_on_a_shared_model_get_sequential_results(lite0):
    images = [sample(n) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    methods = [*cams.SHARED, "predict"]
    jobs = [(images[i % 4], methods[i % len(methods)], (285, 967, 1, 500)[i % 4]) for i in range(24)]
    _concurrent_equals_sequential(lite0, jobs)


def test_eight_threads_every_method_including_perturbation(tiny):
    images = [sample(n) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    methods = [*cams.applicable(tiny, include_slow=True), "predict"]
    jobs = [(images[i % 4], methods[i % len(methods)], i % 10) for i in range(2 * len(methods))]
    _concurrent_equals_sequential(tiny, jobs)


def test_shared_pass_equals_library_on_a_tiny_vit(tiny_vit, chelsea):
    tensor = preprocessing.to_tensor(chelsea, tiny_vit.spec)
    layer = tiny_vit.spec.cam_layer
    ours = cams.raw_maps(tiny_vit, tensor, methods=list(cams.SHARED), target=4, layer=layer)
    module = hooks.find(tiny_vit.module, layer)
    for method in cams.SHARED:
        with cams.METHODS[method].cls(model=tiny_vit.module, target_layers=[module],
                                      reshape_transform=tiny_vit.spec.reshape) as cam:
            theirs = cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(4)])[0]
        np.testing.assert_allclose(ours[method][0], theirs, atol=2e-5, err_msg=method)


def test_time_estimate_scales_with_channels(lite0, chelsea):
    fast = cams.estimate_seconds(lite0, chelsea, "gradcam")
    slow = cams.estimate_seconds(lite0, chelsea, "scorecam")
    assert 0 < fast < slow and slow / fast > 100  # 1280 channels, one masked forward each


def test_shapley_cam_on_a_linear_path_is_grad_cam(lite0, chelsea):
    # bn2 -> pool -> linear: the Hessian term is exactly zero (the library raised), so Shapley-CAM is Grad-CAM
    shapley, grad = cams.compute(lite0, chelsea, methods=["shapleycam", "gradcam"], target=285)
    np.testing.assert_allclose(shapley.heatmap, grad.heatmap, atol=1e-4)
    (result,) = cams.compute(lite0, chelsea, methods=["shapleycam"], layer="blocks.5", target=285)
    assert np.isfinite(result.heatmap).all() and result.heatmap.max() > 0.9
    assert hooks.count(lite0.module) == 0
