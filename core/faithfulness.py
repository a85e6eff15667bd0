"""How faithful is a heatmap to the model? Scores from pytorch-grad-cam's own perturbation metrics.

All scores are changes in the target class's softmax probability (in [-1, 1]) when the image is
perturbed according to the map:
- `confidence_change`: the image multiplied by the map (keep what the map highlights). Higher is better.
- `road_most_first`: ROAD, the most relevant 20% of pixels removed by noisy linear imputation.
  The more the confidence drops, the more faithful: lower is better.
- `road_least_first`: ROAD, the least relevant 20% removed. Should barely hurt: higher is better.
- `road_combined`: (least_first - most_first) / 2, one number where higher is better.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from core.errors import InvalidInputError
from core.models import LoadedModel

REMOVED_PERCENT = 20


@dataclass(frozen=True)
class Faithfulness:
    confidence_change: float
    road_most_first: float
    road_least_first: float

    @property
    def road_combined(self) -> float:
        return (self.road_least_first - self.road_most_first) / 2


def score(model: LoadedModel, tensor: torch.Tensor, maps: Sequence[np.ndarray], target: int) -> list[Faithfulness]:
    """One Faithfulness per map.

    Args:
        tensor: one preprocessed image, (1, 3, h, w), as given to the CAM.
        maps: (h, w) float maps in [0, 1] at the tensor's size (cams.raw_maps gives these).
    """
    if not maps:
        return []
    height, width = tensor.shape[-2:]
    for cam in maps:
        if cam.shape != (height, width):
            raise InvalidInputError(f"Maps must be at the tensor's size {(height, width)}, got {cam.shape}.")
    cams = np.stack([np.asarray(m, dtype=np.float32) for m in maps])
    batch = tensor.to(model.device).repeat(len(maps), 1, 1, 1)
    targets = [ClassifierOutputSoftmaxTarget(target)] * len(maps)
    metrics = (
        CamMultImageConfidenceChange(),
        ROADMostRelevantFirst(percentile=100 - REMOVED_PERCENT),
        ROADLeastRelevantFirst(percentile=REMOVED_PERCENT),
    )
    with model.lock:
        columns = [np.asarray(metric(batch, cams, targets, model.module)).reshape(-1) for metric in metrics]
    return [Faithfulness(float(c), float(m), float(l)) for c, m, l in zip(*columns, strict=True)]


def score_heatmaps(
    model: LoadedModel, image, heatmaps: dict[str, np.ndarray], target: int
) -> dict[str, Faithfulness]:
    """Faithfulness of heatmaps given at the image's own size (as CamResult.heatmap), keyed like `heatmaps`."""
    import cv2

    from core import preprocessing

    tensor = preprocessing.to_tensor(image, model.spec)
    height, width = tensor.shape[-2:]
    names = list(heatmaps)
    maps = [cv2.resize(np.asarray(heatmaps[n], np.float32), (width, height), interpolation=cv2.INTER_AREA) for n in names]
    return dict(zip(names, score(model, tensor, maps, target), strict=True))


def rank_correlation(a: np.ndarray, b: np.ndarray, *, size: int = 56) -> float:
    """Spearman rank correlation of two heatmaps after resizing both to size x size (1: same ranking)."""
    import cv2
    from scipy.stats import spearmanr

    small = [cv2.resize(np.asarray(m, np.float32), (size, size), interpolation=cv2.INTER_AREA).ravel() for m in (a, b)]
    if small[0].std() == 0 or small[1].std() == 0:
        return 0.0
    return float(spearmanr(small[0], small[1]).statistic)
