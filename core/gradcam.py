"""Grad-CAM, piece by piece, for the Learn page: the channel weights, the activation maps and the map.

One forward and one backward pass through `cams`' shared pass, and pytorch-grad-cam's own GradCAM
maths on its result, so the heatmap is the one the Explain page shows.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core import cams, hooks, images, preprocessing
from core.errors import InvalidInputError
from core.models import LoadedModel
from core.predictions import probabilities

@dataclass(frozen=True, eq=False)
class Parts:
    """Grad-CAM's ingredients for one image and class: alpha_k, the maps A^k, and their weighted sum."""

    target: int  # class index c explained
    label: str
    layer: str
    weights: np.ndarray  # (K,) float32 alpha_k^c: each channel's gradient averaged over its h x w positions
    means: np.ndarray  # (K,) float32 mean activation of each channel over its h x w positions
    largest: tuple[int, ...]  # the `top` channels with the largest alpha_k, largest first
    channels: tuple[int, ...]  # the `top` channels adding most to the map (largest alpha_k * mean A^k), most first
    maps: np.ndarray  # (top, h, w) float32 activations A^k of `channels`, each scaled to [0, 1] by its own range
    peaks: np.ndarray  # (top,) float32 largest raw activation of each of `channels`
    coarse: np.ndarray  # (h, w) float32 ReLU(sum_k alpha_k A^k) at the layer's resolution, scaled to [0, 1]
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the network's input size: equals cams.raw_maps' "gradcam"
    overlay: np.ndarray  # (H, W, 3) uint8 the heatmap over the picture the network saw

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the layer: Z = h * w positions are averaged into each alpha_k."""
        return tuple(self.coarse.shape)

    @property
    def contributions(self) -> np.ndarray:
        """(K,) alpha_k * mean A^k: what each channel adds to the map's mean before the ReLU."""
        return self.weights * self.means


def parts(
    model: LoadedModel, image: Image.Image, *, target: int | None = None, layer: str | None = None, top: int = 8
) -> Parts:
    """Grad-CAM for `target` (default: the predicted class), with the pieces the formula combines.

    One forward and one backward pass through `cams`' shared pass, and pytorch-grad-cam's own
    GradCAM maths on its result: the heatmap is the one the Explain page shows.

    Raises:
        LayerNotFoundError, InvalidInputError.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradcam.parts needs gradients; call it outside torch.inference_mode().")
    if int(top) != top or top < 1:
        raise InvalidInputError(f"Show at least one channel, got top={top}.")
    layer = layer or model.spec.cam_layer
    module = hooks.find(model.module, layer)
    tensor = preprocessing.to_tensor(image, model.spec)
    if target is None:
        target = int(probabilities(model, tensor).argmax(dim=1)[0])
    target = cams.check_target(model, target)
    activations, grads = cams.shared_pass(model, tensor, module, layer, target, True)
    cam = cams.METHODS["gradcam"].bare(module, activations, grads)
    per_layer = cam.compute_cam_per_layer(tensor, [ClassifierOutputTarget(target)], False)
    heatmap = cam.aggregate_multi_layers(per_layer)[0].astype(np.float32)

    acts = activations[0].numpy()  # (K, h, w)
    weights = cam.get_cam_weights(tensor, module, None, activations.numpy(), grads.numpy())[0].astype(np.float32)
    means = acts.mean(axis=(1, 2)).astype(np.float32)
    count = min(int(top), len(weights))
    largest = np.argsort(-weights, kind="stable")[:count]
    order = np.argsort(-(weights * means), kind="stable")[:count]  # a large alpha on a silent channel adds nothing
    chosen = acts[order]
    low = chosen.min(axis=(1, 2), keepdims=True)
    span = chosen.max(axis=(1, 2), keepdims=True) - low
    maps = np.where(span > 0, (chosen - low) / np.maximum(span, 1e-12), 0.0).astype(np.float32)
    coarse = np.maximum((weights[:, None, None] * acts).sum(axis=0), 0.0)
    coarse = (coarse / coarse.max() if coarse.max() > 0 else coarse).astype(np.float32)
    seen = preprocessing.resize(image, model.spec)
    return Parts(
        target=target, label=model.categories[target], layer=layer, weights=weights, means=means,
        largest=tuple(int(k) for k in largest), channels=tuple(int(k) for k in order), maps=maps,
        peaks=chosen.max(axis=(1, 2)).astype(np.float32),
        coarse=coarse, heatmap=heatmap, overlay=images.overlay(seen, heatmap),
    )
