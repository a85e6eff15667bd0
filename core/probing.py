"""A linear probe as a network: the backbone with the probe as its head, so CAMs explain the probe's classes.

A linear probe (core.evaluation.linear_probe) scores folder classes from the input of the backbone's
final Linear. `probe_model` puts the probe, standardisation folded in, in that Linear's place on a
private copy of the backbone: its logits are the probe's scores, and `cams.compute(..., target=c)`
explains folder class c, not the ImageNet class that happens to have index c. The shared model is
never touched.
"""

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from core import hooks
from core.errors import InvalidInputError
from core.evaluation import Evaluation, Probe
from core.heads import install
from core.models import LoadedModel


def linear(probe: Probe) -> nn.Linear:
    """An nn.Linear computing `probe.logits`: (D,) raw features -> (C,) class scores, float32, frozen."""
    classes, width = probe.weight.shape
    layer = nn.Linear(width, classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(probe.weight))
        layer.bias.copy_(torch.from_numpy(probe.bias))
    return layer.requires_grad_(False)


def probe_model(
    model: LoadedModel, probe: Probe | Evaluation, classes: tuple[str, ...] | None = None, *, size: int | None = None
) -> LoadedModel:
    """A copy of `model` whose head (`spec.head`) is the probe, with its own lock; `model` is untouched.

    `classes` names the probe's classes (taken from an Evaluation when one is given). `size` is the side of
    the square the features were extracted at (embeddings.Embeddings.image_size; default: the spec's
    input size): the copy resizes every image whole to that square, as extraction did, so its logits on
    an image are the probe's scores of that image's features.

    Raises:
        InvalidInputError: a zero-shot evaluation (no probe), or a probe that does not fit the head.
    """
    if isinstance(probe, Evaluation):
        if probe.probe is None:
            raise InvalidInputError(f"A {probe.method} evaluation has no probe: its classes are the backbone's own.")
        classes = classes or probe.classes
        probe = probe.probe
    head = linear(probe)
    if classes is None:
        classes = tuple(f"class {i}" for i in range(head.out_features))
    if len(classes) != head.out_features:
        raise InvalidInputError(f"The probe scores {head.out_features} classes, but {len(classes)} names were given.")
    old = hooks.find(model.module, model.spec.head)
    if not isinstance(old, nn.Linear):
        raise InvalidInputError(
            f"{model.spec.title}'s head '{model.spec.head}' is a {type(old).__name__}, not a Linear."
        )
    if old.in_features != head.in_features:
        raise InvalidInputError(f"The probe takes {head.in_features} features, but {model.spec.title}'s head takes "
                                f"{old.in_features}.")
    with model.lock:  # no other thread's CAM hooks may be copied along
        module = copy.deepcopy(model.module)
    install(module, model.spec.head, head.to(device=old.weight.device))
    module.eval()
    module.requires_grad_(False)
    side = int(size or model.spec.input_size[0])
    spec = replace(
        model.spec, title=f"{model.spec.title} + linear probe", source="linear probe", categories=tuple(classes),
        input_size=(side, side), resize_size=side, fixed_size=True, params=None, gmacs=None, top1=None,
    )
    return LoadedModel(spec=spec, module=module, device=model.device, pretrained=model.pretrained,
                       params=sum(p.numel() for p in module.parameters()), lock=type(model.lock)())


@dataclass(frozen=True, eq=False)
class DatasetHead:
    """The head a dataset's heatmaps explain: an evaluation's (its linear probe, or zero-shot's mapped classes).

    `key` identifies the evaluation (the dashboard's cache key of it, which keys the probe model and the maps);
    `size` is the side of the square the features were extracted at (Embeddings.image_size), which the probe
    model resizes images to.
    """

    key: tuple
    evaluation: Evaluation
    size: int

    @property
    def probe(self) -> bool:
        return self.evaluation.probe is not None

    def backbone_targets(self, targets: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Folder classes as the backbone's own head's classes they map to (zero-shot); None stays None."""
        mapped = self.evaluation.mapping.targets
        return tuple(t if mapped is None or t is None else mapped[t] for t in targets)

    def describe(self, cam) -> str:
        """Which head and class a heatmap explains: "probe class 'circle'" or "ImageNet 'tabby'"."""
        return f"probe class '{cam.label}'" if self.probe else f"ImageNet '{cam.label}'"
