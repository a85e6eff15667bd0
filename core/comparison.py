"""Several backbones on one image: predictions, heatmaps, latency, size, and how much their maps agree."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core import benchmarks, cams, faithfulness, model_costs, predictions, preprocessing
from core.errors import InvalidInputError
from core.models import LoadedModel


@dataclass(frozen=True)
class BackboneReport:
    name: str
    title: str
    pretrained: bool
    predictions: list[predictions.Prediction]
    own: cams.CamResult  # heatmap for this backbone's own top-1 class
    common: cams.CamResult  # heatmap for the class shared by all backbones
    latency_ms: float  # median forward pass for this image's tensor
    params: int
    gmacs: float  # multiply-adds per image at the backbone's reference input size, billions
    method: str = cams.DEFAULT_METHOD  # the method of its heatmaps
    #: the own top-1 map's faithfulness beside the baselines (`faithfulness.scorecard`), when asked for
    scorecard: faithfulness.Scorecard | None = None


@dataclass(frozen=True)
class Comparison:
    reports: list[BackboneReport]
    common_target: int
    agreement: np.ndarray  # (n, n) Spearman rank correlation of the common-class heatmaps


def compare(
    loaded: Sequence[LoadedModel],
    image: Image.Image,
    *,
    method: str = cams.DEFAULT_METHOD,
    common_target: int | None = None,
    repeats: int = 5,
    size: tuple[int, int] | None = None,
    transformer_method: str | None = None,
    faithful: bool = False,
) -> Comparison:
    """Compare 1 to 4 backbones on one image. `common_target` defaults to the first backbone's top-1.
    Heatmaps at the image's size, or at `size` (width, height) as `cams.compute` makes them: by `method`, or on
    a transformer by `transformer_method` where it applies (a CNN's Grad-CAM beside a ViT's LeGrad).
    `faithful` also scores each backbone's own top-1 map as the All methods page does (ROAD beside a random, an
    inverted and an edge map: `faithfulness.scorecard`), so the maps of two architectures can be weighed.

    Raises:
        InvalidInputError: no backbones, more than 4, or backbones with different class lists.
    """
    if not 1 <= len(loaded) <= 4:
        raise InvalidInputError(f"Compare 1 to 4 backbones, got {len(loaded)}.")
    if len({len(m.categories) for m in loaded}) > 1:
        raise InvalidInputError("These backbones predict different class lists; a common class cannot be chosen.")
    tops = [predictions.predict(m, image, top_k=min(5, len(m.categories))) for m in loaded]
    common = tops[0][0].index if common_target is None else cams.check_target(loaded[0], common_target)
    reports = []
    for model, top in zip(loaded, tops, strict=True):
        chosen = method
        if transformer_method is not None and model.spec.family == "transformer":
            if cams.check_method(transformer_method).applies_to(model):
                chosen = transformer_method
        own = cams.compute(model, image, methods=[chosen], target=top[0].index, size=size)[0]
        shared = (own if top[0].index == common
                  else cams.compute(model, image, methods=[chosen], target=common, size=size)[0])
        tensor = preprocessing.to_tensor(image, model.spec)
        card = (faithfulness.scorecard(model, image, {chosen: own.heatmap}, top[0].index) if faithful else None)
        reports.append(
            BackboneReport(
                name=model.name, title=model.spec.title, pretrained=model.pretrained, predictions=top, own=own,
                common=shared, latency_ms=benchmarks.latency_ms(model, tensor, repeats=repeats),
                params=model.params, gmacs=model_costs.gmacs(model), method=chosen, scorecard=card,
            )
        )
    n = len(reports)
    agreement = np.eye(n, dtype=np.float32)
    for i in range(n):
        for j in range(i + 1, n):
            agreement[i, j] = agreement[j, i] = faithfulness.rank_correlation(reports[i].common.heatmap, reports[j].common.heatmap)
    return Comparison(reports, common, agreement)
