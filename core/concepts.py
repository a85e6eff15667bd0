"""Deep Feature Factorization: the image split into K concepts, each with its region and top labels.

pytorch-grad-cam's DeepFeatureFactorization factorises the target layer's activations with
non-negative matrix factorisation; the concept embeddings go through the model's own
classifier head to name them (when the head takes the layer's channels as its input).
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization
from pytorch_grad_cam.utils.image import show_factorization_on_image

from core import hooks, layout, preprocessing
from core.errors import InvalidInputError, LayerNotFoundError
from core.models import LoadedModel

PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128]], dtype=np.float64,
) / 255.0


@dataclass(frozen=True)
class Concept:
    index: int
    color: tuple[int, int, int]  # RGB used for this concept in the overlay
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the image's size
    share: float  # fraction of the image where this concept dominates
    labels: tuple[tuple[int, str, float], ...]  # (class index, label, probability), best first; () if unnamed


@dataclass(frozen=True)
class Concepts:
    layer: str
    concepts: list[Concept]
    overlay: np.ndarray  # (H, W, 3) uint8: each pixel coloured by its dominant concept
    named: bool  # whether the head could name the concepts


def factorize(
    model: LoadedModel, image: Image.Image, *, k: int = 5, layer: str | None = None, top_labels: int = 2,
    shown: Image.Image | None = None,
) -> Concepts:
    """Split `image` into `k` concepts at `layer` (default: the spec's CAM layer). The maps and the overlay are
    drawn at the size of `shown` (default: `image`), for example a screen-sized copy of a large photo.

    Raises:
        InvalidInputError: k outside 2..len(PALETTE).
        LayerNotFoundError: the layer does not output spatial feature maps.
    """
    if not 2 <= k <= len(PALETTE):
        raise InvalidInputError(f"The number of concepts must be between 2 and {len(PALETTE)}, got {k}.")
    layer = layer or model.spec.cam_layer
    tensor = preprocessing.to_tensor(image, model.spec).to(model.device)
    head = hooks.find(model.module, model.spec.head)
    with model.lock:
        module = hooks.find(model.module, layer)
        maps, reshape = layout.layer_maps(model, module, tensor)
        if maps.ndim != 4 or maps.shape[2] * maps.shape[3] < 2:
            raise LayerNotFoundError(
                f"Layer output {tuple(maps.shape)} is not a spatial feature map; choose a convolutional layer."
            )
        channels = int(maps.shape[1])
        named = isinstance(head, torch.nn.Linear) and head.in_features == channels
        factorizer = DeepFeatureFactorization(
            model=model.module, target_layer=module, reshape_transform=reshape,
            computation_on_concepts=(lambda c: head(c.to(model.device)).float().softmax(dim=1)) if named else None,
        )
        try:
            with torch.no_grad():
                output = factorizer(tensor, n_components=k)
        finally:
            factorizer.activations_and_grads.release()
    explanations = output[1][0]  # (k, h, w) in [0, 1] at the tensor's size
    probabilities = output[2] if named else None  # (k, classes)
    return _assemble(model, image if shown is None else shown, layer, explanations, probabilities, top_labels)


def _assemble(model, image, layer, explanations, probabilities, top_labels) -> Concepts:
    """`image` is the picture the concepts are drawn on."""
    import cv2

    width, height = image.size
    maps = np.stack([cv2.resize(np.float32(e), (width, height), interpolation=cv2.INTER_LINEAR) for e in explanations])
    maps = np.clip(np.nan_to_num(maps), 0.0, 1.0)
    dominant = maps.argmax(axis=0)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    colors = [np.append(PALETTE[i], 1.0) for i in range(len(maps))]
    overlay = show_factorization_on_image(rgb, maps, colors=colors, image_weight=0.4)
    concepts = []
    for index, heat in enumerate(maps):
        labels: tuple = ()
        if probabilities is not None:
            best = np.argsort(-probabilities[index])[:top_labels]
            labels = tuple((int(c), model.categories[int(c)], float(probabilities[index][c])) for c in best)
        color = tuple(int(round(v * 255)) for v in PALETTE[index])
        concepts.append(Concept(index, color, heat.astype(np.float32), float((dominant == index).mean()), labels))
    return Concepts(layer, concepts, np.uint8(overlay), probabilities is not None)
