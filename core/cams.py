"""Class activation maps for registered backbones, computed with pytorch-grad-cam's own code.

Three paths, one result:
- *Shared pass* (gradient methods, EigenCAM, KPCA-CAM): one forward pass captures the target
  layer's activations; `torch.autograd.grad` backpropagates only from the class score down to
  that layer (not through the trunk). Each method's own `get_cam_image` / `get_cam_weights` and
  BaseCAM's scaling then turn the same tensors into every map. No CAM maths of our own, except
  EigenCAM's SVD in its economical form (same first component, no (HW x HW) matrix).
- *Library path* (every method whose record is not `shared`, and any method with `aug_smooth`): the library's class,
  used as a context manager so its hooks are always removed.
- *Attention path* (rollout, gradient-weighted rollout, LeGrad on transformers): `core.attention` reads every
  block's attention maps from one forward and one backward pass for all of them together; asked with shared-pass
  methods, that is the shared pass itself (`_mixed_pass`): the cost of five methods is about the cost of one.
All hold the model's lock for every forward pass, so a shared model is used by one thread at a time.
"""

import copy
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

os.environ.setdefault("TQDM_DISABLE", "1")  # the library's progress bars: we report through callbacks

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GuidedBackpropReLUModel
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUasModule
from pytorch_grad_cam.utils.find_layers import replace_all_layer_type_recursive
from pytorch_grad_cam.utils.image import deprocess_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from core import attention, benchmarks, cam_methods, hooks, images, layout, preprocessing
from core.cam_methods import (  # noqa: F401
    ATTENTION, DEFAULT_METHOD, METHODS, SHARED, Method, applicable, check_method, one_pass)
from core.errors import InvalidInputError, LayerNotFoundError, UnknownMethodError
from core.models import LoadedModel
from core.predictions import probabilities

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)
PERTURBATION_BATCH = 32


@dataclass(frozen=True)
class CamResult:
    method: str
    target: int  # class index explained
    label: str
    layer: str
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], at the explained image's own size, or at `compute`'s `size`
    seconds: float  # time spent on this method (the shared pass is split evenly between its methods)
    # the map at the model input's size, as pytorch-grad-cam returns it: `resized` makes any size from it
    raw: np.ndarray | None = field(default=None, repr=False, compare=False)

    def overlay(self, image: Image.Image, *, opacity: float = 0.5, colormap: str = "jet") -> np.ndarray:
        """(H, W, 3) uint8 RGB: the heatmap blended over `image` (the explained image, at the heatmap's size)."""
        return images.overlay(image, self.heatmap, opacity=opacity, colormap=colormap)

    def resized(self, width: int, height: int) -> "CamResult":
        """The same result with its heatmap at (width, height): from `raw`, exactly as `compute` would make it
        for an image of that size (the full-resolution map of a result computed for the screen)."""
        if (width, height) == (self.heatmap.shape[1], self.heatmap.shape[0]):
            return self
        source = self.raw if self.raw is not None else self.heatmap
        return replace(self, heatmap=_resize(source, width, height))


def check_target(model: LoadedModel, target: int) -> int:
    """`target` if it is a valid class index (validated here: grad-cam's __exit__ swallows IndexError)."""
    last = len(model.categories) - 1
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not 0 <= int(target) <= last:
        raise InvalidInputError(f"Class index must be an integer between 0 and {last}, got {target!r}.")
    return int(target)


def compute(
    model: LoadedModel,
    image: Image.Image,
    *,
    methods: Sequence[str] = (DEFAULT_METHOD,),
    target: int | None = None,
    layer: str | None = None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    on_progress: Progress | None = None,
    size: tuple[int, int] | None = None,
) -> list[CamResult]:
    """One CAM per method for class `target` (default: the predicted class), in the order given.

    The heatmaps cover the whole image at its own size, or at `size` (width, height), for example the size
    a screen shows it at (`images.display_size`): the model still sees the whole image as it is, so the maps
    are the full-size ones resized, and `CamResult.resized` gives the full size back. Thread-safe: holds the
    model's lock around every forward pass; leaves no hooks and no gradients on the model.

    Raises:
        UnknownMethodError, LayerNotFoundError, InvalidInputError.
    """
    if torch.is_inference_mode_enabled():  # enable_grad() cannot escape inference mode
        raise RuntimeError("cams.compute needs gradients; call it outside torch.inference_mode().")
    if not methods:
        raise InvalidInputError("Choose at least one CAM method.")
    chosen = [check_method(name, model) for name in methods]
    width, height = _check_size(size) if size is not None else image.size
    layer = layer or model.spec.cam_layer
    hooks.find(model.module, layer)  # unknown layer: fail before any work
    tensor = preprocessing.to_tensor(image, model.spec)
    if target is None:
        target = int(probabilities(model, tensor).argmax(dim=1)[0])
    target = check_target(model, target)
    maps = raw_maps(
        model, tensor, methods=[m.name for m in chosen], target=target, layer=layer,
        eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, on_progress=on_progress,
    )
    return [  # the attention methods read every block, not the target layer
        CamResult(name, target, model.categories[target], "every block" if METHODS[name].attention else layer,
                  _resize(raw, width, height), seconds, raw)
        for name, (raw, seconds) in maps.items()
    ]


def rollout_depth(model: LoadedModel, image: Image.Image, *, target: int, size: tuple[int, int] | None = None,
                  ) -> list[CamResult]:
    """Attention rollout up to block k for k = 1..L, the transformer's "CAM through depth", from one forward pass
    (`attention.depth`); `layer` names the block ("block k"). Rollout does not depend on the class: `target`
    only labels the results.

    Raises:
        UnknownMethodError: the model is not a transformer whose attention `core.attention` reads.
    """
    check_method("rollout", model)
    target = check_target(model, target)
    width, height = _check_size(size) if size is not None else image.size
    started = time.perf_counter()
    maps = attention.depth(model, preprocessing.to_tensor(image, model.spec))
    seconds = (time.perf_counter() - started) / len(maps)
    return [CamResult("rollout", target, model.categories[target], f"block {k}", _resize(raw, width, height), seconds,
                      raw) for k, raw in enumerate(maps, start=1)]


def _check_size(size) -> tuple[int, int]:
    if not isinstance(size, tuple | list) or len(size) != 2 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and 1 <= v <= 65_535 for v in size):
        raise InvalidInputError(f"A heatmap size is (width, height) in pixels, got {size!r}.")
    return int(size[0]), int(size[1])


def raw_maps(
    model: LoadedModel,
    tensor: Tensor,
    *,
    methods: Sequence[str],
    target: int,
    layer: str,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, tuple[np.ndarray, float]]:
    """{method: ((h, w) float32 map at the tensor's size, as pytorch-grad-cam returns it, seconds)}.

    `tensor` is one preprocessed image, (1, 3, h, w).
    """
    # The whole call holds the lock: AblationCAM swaps the target layer for an ablation layer while
    # it runs, so even resolving a layer name must wait for other threads' CAMs to finish.
    with model.lock:
        return _raw_maps(model, tensor, methods, check_target(model, target), layer, eigen_smooth, aug_smooth,
                         on_progress or (lambda fraction, message: None))


def _raw_maps(model, tensor, methods, target, layer, eigen_smooth, aug_smooth, report):
    module = hooks.find(model.module, layer)
    shared = [m for m in methods if METHODS[m].shared and not aug_smooth]
    read = [m for m in methods if METHODS[m].attention]
    others = [m for m in methods if m not in shared and m not in read]
    results: dict[str, tuple[np.ndarray, float]] = {}
    if read and not shared:
        report(0.0, f"One pass through every attention block for {len(read)} method(s)")
        results.update(attention.raw_maps(model, tensor, methods=read, target=target))
    if shared:
        report(0.0, f"One forward and backward pass for {len(shared) + len(read)} method(s)")
        started = time.perf_counter()
        needs_grads = any(METHODS[m].uses_gradients for m in shared)
        if read:  # the attention methods read every block on the same pass: one forward, one backward for all
            activations, grads, grids = _mixed_pass(model, tensor, module, layer, target, needs_grads, read, len(shared))
            pass_seconds = (time.perf_counter() - started) * len(shared) / (len(shared) + len(read))
            results.update(attention.normalised_maps(grids, *tensor.shape[-2:]))
        else:
            activations, grads = shared_pass(model, tensor, module, layer, target, needs_grads)
            pass_seconds = time.perf_counter() - started
        for name in shared:
            began = time.perf_counter()
            raw = _weigh(name, module, tensor, activations, grads, target, eigen_smooth)
            results[name] = (raw, pass_seconds / len(shared) + time.perf_counter() - began)
    for index, name in enumerate(others):
        began = time.perf_counter()
        base = len(shared) + len(read) + index

        def step(fraction: float, message: str, base=base) -> None:
            report((base + fraction) / len(methods), message)

        raw = _library_cam(model, tensor, module, METHODS[name], target, eigen_smooth, aug_smooth, step)
        results[name] = (raw, time.perf_counter() - began)
    report(1.0, "Done")
    return {name: results[name] for name in methods}


def compute_top1(
    model: LoadedModel, image: Image.Image, *, method: str = DEFAULT_METHOD, layer: str | None = None
) -> tuple[Tensor, CamResult]:
    """The class probabilities and the `method` map of the most probable class, from ONE forward pass.

    `compute(target=None)` runs an inference pass to find the class, then the shared pass; here the shared
    pass's own logits give both (half the work, for live video). One-pass methods only (`Method.one_pass`: the
    shared pass, or the attention methods on a transformer, read on that one pass). Returns
    ((1, classes) float32 softmax probabilities on the CPU, from this fp32 pass, the CamResult).

    Raises:
        UnknownMethodError (also for a method that is not computed from the shared pass), LayerNotFoundError.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("cams.compute_top1 needs gradients; call it outside torch.inference_mode().")
    info = check_method(method, model)
    if not info.one_pass:
        raise UnknownMethodError(f"{info.title} is not computed from one shared pass ({info.cost}).")
    layer = layer or model.spec.cam_layer
    tensor = preprocessing.to_tensor(image, model.spec)
    started = time.perf_counter()
    if info.attention:  # every block's attention, read on the same one pass that gives the classes
        logits, grids = attention.explained(model, tensor, methods=[method], target=None)
        target = int(logits[0].argmax())
        raw = attention.normalised_maps(grids, *tensor.shape[-2:])[method][0]
        cam = CamResult(method, target, model.categories[target], "every block", _resize(raw, *image.size),
                        time.perf_counter() - started, raw)
        return logits.softmax(dim=1), cam
    with model.lock:
        module = hooks.find(model.module, layer)
        activations, grads, logits = _forward_backward(model, tensor, module, layer, None, info.uses_gradients)
    target = int(logits[0].argmax())
    raw = _weigh(method, module, tensor, activations, grads, target, False)
    width, height = image.size
    cam = CamResult(method, target, model.categories[target], layer, _resize(raw, width, height),
                    time.perf_counter() - started, raw)
    return logits.softmax(dim=1), cam


def _weigh(name, module, tensor, activations, grads, target, eigen_smooth) -> np.ndarray:
    """One shared-pass method's (h, w) map from the captured tensors, by pytorch-grad-cam's own code."""
    return weigh(name, module, tensor, activations, grads, [target], eigen_smooth=eigen_smooth)[0]


def weigh(name: str, module: nn.Module, tensor: Tensor, activations: Tensor, grads: Tensor | None,
          targets: Sequence[int], *, eigen_smooth: bool = False) -> np.ndarray:
    """(B, h, w) float32 maps of a shared-pass method from a captured batch, by pytorch-grad-cam's own code.

    `activations` and `grads` are the target layer's (B, C, H, W) output and d(score of targets[i])/d(output)
    on the CPU; `tensor` is the (B, 3, h, w) input (only its size is read: the maps come at it).
    """
    cam = METHODS[name].bare(module, activations, grads)
    per_layer = cam.compute_cam_per_layer(tensor, [ClassifierOutputTarget(int(t)) for t in targets], eigen_smooth)
    return cam.aggregate_multi_layers(per_layer)


# ---------------------------------------------------------------------------------------------


def shared_pass(
    model: LoadedModel, tensor: Tensor, module: nn.Module, layer: str, target: int, needs_grads: bool
) -> tuple[Tensor, Tensor | None]:
    """The target layer's activations and d(score)/d(activations), each (1, C, h, w) on the CPU."""
    activations, grads, _ = _forward_backward(model, tensor, module, layer, target, needs_grads)
    return activations, grads


def _forward_backward(
    model: LoadedModel, tensor: Tensor, module: nn.Module, layer: str, target: int | None, needs_grads: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """`shared_pass`, plus the (1, classes) float32 logits on the CPU; target None: the most probable class.

    The hook swaps the layer's output for a fresh leaf tensor, so autograd stops there: the
    backward pass runs from the class score down to the layer and no further.
    """
    batch = tensor.to(model.device)
    with model.lock, hooks.leaf(module, requires_grad=needs_grads, name=layer) as store, torch.enable_grad():
        logits = model.module(batch)
        grads = None
        if needs_grads:
            target = int(logits[0].argmax()) if target is None else target
            score = ClassifierOutputTarget(target)(logits[0])
            (grads,) = torch.autograd.grad(score, store["leaf"])
    activations, grads = as_maps(model, layer, hooks.consumed(store), grads)
    return (activations.float().cpu(), (grads.float().cpu() if grads is not None else None),
            logits.detach().float().cpu())


def _mixed_pass(model: LoadedModel, tensor: Tensor, module: nn.Module, layer: str, target: int, needs_grads: bool,
                read: Sequence[str], others: int) -> tuple[Tensor, Tensor | None, dict[str, tuple[Tensor, float]]]:
    """`shared_pass` and `attention.grids` of the attention methods `read`, from ONE forward pass (every block's
    attention recorded, the target layer's output kept without cutting the graph) and ONE backward pass from the
    class score to the target layer and every block's attention together (LeGrad then adds its block-local passes).
    `others` (the shared methods' count) sets the attention methods' share of the pass's seconds.
    Holds the lock; the attention modules' forward is restored and every hook removed, also when it raises."""
    started = time.perf_counter()
    with model.lock, attention.recording(model, outputs="legrad" in read) as records, torch.enable_grad():
        # the layer's hook for the forward only: LeGrad's layer scores run the final norm again afterwards
        with hooks.leaf(module, requires_grad=needs_grads, name=layer, cut=False) as store:
            logits = model.module(tensor.to(model.device))
        attention.check_class(logits, target)
        weights = [r.weights for r in records] if "grad_rollout" in read else []
        inputs = ([store["leaf"]] if needs_grads else []) + weights
        grads = list(torch.autograd.grad(ClassifierOutputTarget(target)(logits[0]), inputs,
                                         retain_graph="legrad" in read)) if inputs else []
        layer_grads = grads.pop(0) if needs_grads else None
        grids = attention.from_records(model, records, read, target, grads or None,
                                       (time.perf_counter() - started) * len(read) / (len(read) + others))
    activations, layer_grads = as_maps(model, layer, hooks.consumed(store), layer_grads)
    return activations.float().cpu(), (layer_grads.float().cpu() if layer_grads is not None else None), grids


def as_maps(model: LoadedModel, layer: str, activations: Tensor, grads: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A layer's captured output and its gradient as (B, C, H, W) maps (token layouts reshaped by `layout`).

    Raises:
        LayerNotFoundError: the layer's output is not a map even so (a head, a pooled vector).
    """
    reshape = layout.reshape_for(model.spec, activations)
    if reshape is not None:
        activations = reshape(activations)
        grads = reshape(grads) if grads is not None else None
    if activations.ndim != 4:
        raise LayerNotFoundError(
            f"Layer '{layer}' outputs shape {tuple(activations.shape)}; CAMs need feature maps (B, C, H, W). "
            "Choose a convolutional layer or block."
        )
    return activations, grads


class _Reporting(nn.Module):
    """Wraps the shared network to count the library's forward passes and report progress."""

    def __init__(self, inner: nn.Module, expected: int, report: Progress, title: str) -> None:
        super().__init__()
        self.inner = inner
        self.expected = max(1, expected)
        self.report = report
        self.title = title
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.report(min(self.calls / self.expected, 1.0), f"{self.title}: forward pass {self.calls} of {self.expected}")
        return self.inner(x)


def _library_cam(
    model: LoadedModel,
    tensor: Tensor,
    module: nn.Module,
    method: Method,
    target: int,
    eigen_smooth: bool,
    aug_smooth: bool,
    report: Progress,
) -> np.ndarray:
    channels, reshape = _channels_and_reshape(model, module, tensor)
    passes = 1 + (-(-channels // PERTURBATION_BATCH) if method.per_channel else 0)
    passes *= 6 if aug_smooth else 1  # ttach: horizontal flip x 3 brightness factors
    wrapper = _Reporting(model.module, passes, report, method.title)
    batch = tensor.to(model.device)
    if method.uses_gradients:
        batch = batch.clone().requires_grad_(True)  # keeps gradients flowing through frozen weights
    heatmap = None
    with model.lock, _explained_failures(method, module):
        try:
            with torch.enable_grad(), method.build(wrapper, module, reshape) as cam:
                cam.batch_size = PERTURBATION_BATCH
                heatmap = method.call(cam, batch, target, eigen_smooth, aug_smooth)
        finally:
            model.module.zero_grad(set_to_none=True)
    if heatmap is None:  # grad-cam's __exit__ swallowed an IndexError
        raise InvalidInputError(f"{method.title} failed for class {target} on layer {module}.")
    return heatmap


@contextmanager
def _explained_failures(method: Method, module: nn.Module):
    """Turn the library's known failure modes into messages for people."""
    try:
        yield
    except RuntimeError as error:
        for text, message in method.failures:
            if text in str(error):
                raise LayerNotFoundError(message) from None
        raise


def _channels_and_reshape(model: LoadedModel, module: nn.Module, tensor: Tensor) -> tuple[int, Callable | None]:
    maps, reshape = layout.layer_maps(model, module, tensor)
    return int(maps.shape[1]), reshape


def _resize(raw: np.ndarray, width: int, height: int) -> np.ndarray:
    heatmap = cv2.resize(raw.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(heatmap, nan=0.0), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class GuidedResult:
    target: int
    label: str
    guided_backprop: np.ndarray  # (H, W, 3) uint8: the guided input gradient, contrast-normalised
    guided_gradcam: np.ndarray  # (H, W, 3) uint8: the same, weighted by the Grad-CAM map
    seconds: float


def guided(
    model: LoadedModel, image: Image.Image, *, target: int | None = None, layer: str | None = None,
    size: tuple[int, int] | None = None,
) -> GuidedResult:
    """Guided Backpropagation and Guided Grad-CAM (Springenberg et al. 2015; Selvaraju et al. 2017), at the
    image's size or at `size` (width, height), as `compute`.

    pytorch-grad-cam's GuidedBackpropReLUModel swaps the network's ReLU modules, so it runs on a
    private copy: the shared model is never modified. ReLU6 (EfficientNet-Lite, MobileNet) is
    swapped as well and treated as a ReLU for the guided pass.
    """
    started = time.perf_counter()
    (cam,) = compute(model, image, methods=["gradcam"], target=target, layer=layer, size=size)
    tensor = preprocessing.to_tensor(image, model.spec).to(model.device)
    with model.lock:
        private = copy.deepcopy(model.module)
    replace_all_layer_type_recursive(private, nn.ReLU6, GuidedBackpropReLUasModule())
    with torch.enable_grad():
        gradient = GuidedBackpropReLUModel(model=private, device=model.device)(tensor, target_category=cam.target)
    del private
    height, width = cam.heatmap.shape
    gradient = cv2.resize(np.float32(gradient), (width, height), interpolation=cv2.INTER_LINEAR)
    return GuidedResult(
        cam.target, cam.label, deprocess_image(gradient), deprocess_image(gradient * cam.heatmap[..., None]),
        time.perf_counter() - started,
    )


def estimate_seconds(model: LoadedModel, image: Image.Image, method: str, *, layer: str | None = None) -> float:
    """A rough wall-time estimate for `method` on this image: one timed forward pass times the passes it needs."""
    info = check_method(method, model)
    tensor = preprocessing.to_tensor(image, model.spec)
    forward_s = benchmarks.latency_ms(model, tensor, repeats=1, warmup=0) / 1e3
    if not info.slow:
        return 3 * forward_s
    with model.lock:
        module = hooks.find(model.module, layer or model.spec.cam_layer)
        channels, _ = _channels_and_reshape(model, module, tensor)
    return forward_s * (1 + channels)  # one masked image per channel, batched but compute-bound on a CPU

