"""The CAM methods as data: what each needs and how it is built, and which apply to a model.

`core.cams` (the engine) reads these fields and never checks a method's class; the CLI and the pages ask
`applicable(model)` for "all". The records describe pytorch-grad-cam's classes as of the version pinned in
requirements.txt (the engine uses BaseCAM internals).
"""

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("TQDM_DISABLE", "1")  # the library's progress bars: the engine reports through callbacks

import numpy as np  # noqa: E402
from pytorch_grad_cam import (  # noqa: E402
    FEM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    KPCA_CAM,
    LayerCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from core import attention  # noqa: E402
from core.errors import UnknownMethodError, did_you_mean  # noqa: E402
from core.models import LoadedModel  # noqa: E402


@dataclass(frozen=True)
class Method:
    """One CAM method: what it needs and how it is built. The engine reads these fields, never the class."""

    name: str  # key used by the CLI and the UI
    title: str
    cls: type | None  # the pytorch-grad-cam class that builds it (None: computed by `core.attention`)
    cost: str  # what it costs, in words
    shared: bool = False  # computed from the shared forward + short backward pass (else: the library's own call)
    uses_gradients: bool = True  # d(score)/d(activations); False: activations only (class-agnostic or perturbation)
    target_layer: bool = True  # False: the method picks its own layers and ignores the target layer (FullGrad)
    second_derivatives: bool = False  # a Hessian-vector product (Shapley-CAM)
    per_channel: bool = False  # one forward pass per channel of the layer: minutes on a CPU (Score-CAM, Ablation-CAM)
    contrastive: bool = False  # explains the class against its most similar classes, called with `target_idx`
    cnn_only: bool = False  # does not apply to token models (ViT, Swin); `reason` says why
    reason: str = ""
    #: constructor options beyond (model, target_layers, reshape_transform); on the shared path they are set
    #: on the bare instance over the class's own defaults, so both paths compute the same map
    kwargs: dict[str, object] = field(default_factory=dict, hash=False)
    #: (text of the library's RuntimeError, what to tell people instead)
    failures: tuple[tuple[str, str], ...] = ()
    #: the class whose maths the shared pass uses, when not `cls` (EigenCAM's SVD in its economical form)
    shared_cls: type | None = None
    #: read from every block's attention maps by `core.attention` (one forward and one backward pass of their
    #: own, for all of them together); applies to the transformers whose blocks it knows
    attention: bool = False
    class_specific: bool = True  # False: the map does not depend on the class explained (rollout, Eigen-CAM)

    @property
    def slow(self) -> bool:
        """One forward pass per channel: minutes on a CPU for big models."""
        return self.per_channel

    @property
    def one_pass(self) -> bool:
        """Computed from one forward pass and one backward pass from the class score at most (the shared pass, or
        every block's attention read on one pass; LeGrad adds a short backward inside each block): fast enough for
        live video."""
        return (self.shared and not self.slow) or self.attention

    @property
    def needs(self) -> str:
        """What it needs, in words ("gradients, a target layer")."""
        parts = ["gradients" if self.uses_gradients else "activations only"]
        if self.attention:
            return ", ".join([*parts[:1], "every block's attention maps (a transformer)"])
        parts += ["second derivatives"] if self.second_derivatives else []
        parts += ["a target layer" if self.target_layer else "no target layer (picks its own)"]
        parts += ["one forward pass per channel"] if self.per_channel else []
        parts += ["a CNN"] if self.cnn_only else []
        return ", ".join(parts)

    def applies_to(self, model: LoadedModel) -> bool:
        if self.attention:  # from the spec alone when only the spec is known (listing what applies)
            return model.spec.family == "transformer" and (not hasattr(model, "module") or attention.supports(model))
        return not (self.cnn_only and model.spec.family != "cnn")

    def options(self) -> dict[str, object]:
        """The constructor's own defaults for its extra options, overridden by `kwargs`."""
        if self.cls is None:
            return dict(self.kwargs)
        parameters = inspect.signature(self.cls.__init__).parameters
        defaults = {name: p.default for name, p in parameters.items()
                    if name not in _CAM_ARGUMENTS and p.default is not inspect.Parameter.empty}
        return {**defaults, **self.kwargs}

    def bare(self, module: nn.Module, activations: Tensor, grads: Tensor | None) -> BaseCAM:
        """An instance of the method's class with no model and no hooks, holding the shared pass's tensors of
        `module` ((1, C, h, w) maps, already reshaped): only the library's maths is used."""
        cam = object.__new__(self.shared_cls or self.cls)
        cam.target_layers = [module]
        cam.reshape_transform = None  # already applied
        cam.detach = True
        cam.compute_input_gradient = False
        cam.uses_gradients = True
        for option, value in self.options().items():  # what the constructor would have stored (KPCA's kernel, FEM's k)
            setattr(cam, option, value)
        cam.activations_and_grads = Captured([activations], [grads] if grads is not None else [])
        return cam

    def build(self, model: nn.Module, layer: nn.Module, reshape: Callable | None):
        """The library's object for this method, hooked on `model` (use it as a context manager)."""
        layers = [layer] if self.target_layer else []
        return self.cls(model=model, target_layers=layers, reshape_transform=reshape, **self.kwargs)

    def call(self, cam, batch: Tensor, target: int, eigen_smooth: bool, aug_smooth: bool) -> np.ndarray:
        """The (h, w) map of class `target` from a built library object."""
        if self.contrastive:  # picks its own comparison classes around `target_idx`; no aug_smooth
            return cam(input_tensor=batch, targets=None, target_idx=target, eigen_smooth=eigen_smooth)[0]
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(target)], eigen_smooth=eigen_smooth,
                   aug_smooth=aug_smooth)[0]


@dataclass
class Captured:
    """Stands in for the library's ActivationsAndGradients: tensors captured by the engine's shared pass."""

    activations: list[Tensor] = field(default_factory=list)
    gradients: list[Tensor] = field(default_factory=list)

    def release(self) -> None:  # called by BaseCAM.__del__; there are no hooks to remove
        self.activations.clear()
        self.gradients.clear()


def _economical_projection(activation_batch: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's get_2d_projection with `full_matrices=False`: same first component, far cheaper."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped = activations.reshape(activations.shape[0], -1).transpose()
        reshaped = reshaped - reshaped.mean(axis=0)
        _, _, vt = np.linalg.svd(reshaped, full_matrices=False)
        projections.append((reshaped @ vt[0, :]).reshape(activations.shape[1:]))
    return np.float32(projections)


class _EconomicalEigenCAM(EigenCAM):
    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        return _economical_projection(activations)


class _EconomicalEigenGradCAM(EigenGradCAM):
    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        return _economical_projection(grads * activations)


class _ShapleyCAM(ShapleyCAM):
    """ShapleyCAM whose Hessian term is zero, not an error, where the score is linear in the layer's output.

    After global pooling and a linear classifier (EfficientNet's `bn2`, ResNet's `layer4`) the gradient does not
    depend on the activations, and the library's `autograd.grad` raised "does not require grad". The
    second-order term is then exactly zero (the library's own `hvp is None` case), so the weights are the mean
    gradients: the map equals Grad-CAM's, and 'all' runs on the default layer.
    """

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        if grads.requires_grad:
            return super().get_cam_weights(input_tensor, target_layer, target_category, activations, grads)
        return grads.detach().float().mean(dim=(2, 3)).cpu().numpy()


_CAM_ARGUMENTS = frozenset({"self", "model", "target_layers", "reshape_transform"})
_ONE_PASS = "one pass"
_PER_CHANNEL = "one forward per channel (slow on CPU)"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("gradcam", "Grad-CAM", GradCAM, _ONE_PASS, shared=True),
        Method("hirescam", "HiResCAM", HiResCAM, _ONE_PASS, shared=True),
        Method("gradcam_elementwise", "Grad-CAM element-wise", GradCAMElementWise, _ONE_PASS, shared=True),
        Method("gradcam++", "Grad-CAM++", GradCAMPlusPlus, _ONE_PASS, shared=True),
        Method("xgradcam", "XGrad-CAM", XGradCAM, _ONE_PASS, shared=True),
        Method("layercam", "LayerCAM", LayerCAM, _ONE_PASS, shared=True),
        Method("eigengradcam", "EigenGrad-CAM", EigenGradCAM, "one pass + SVD", shared=True,
               shared_cls=_EconomicalEigenGradCAM),
        Method("eigencam", "Eigen-CAM", EigenCAM, "one forward + SVD (class-agnostic)", shared=True,
               uses_gradients=False, shared_cls=_EconomicalEigenCAM, class_specific=False),
        Method("kpcacam", "KPCA-CAM", KPCA_CAM, "one forward + kernel PCA (class-agnostic)", shared=True,
               uses_gradients=False, class_specific=False),
        Method("fem", "FEM", FEM, "one forward (class-agnostic)", shared=True, uses_gradients=False,
               class_specific=False),
        Method(
            "fullgrad", "FullGrad", FullGrad, "forward + full backward (every bias layer; ignores the target layer)",
            target_layer=False, cnn_only=True,
            reason="it sums the gradients of convolution and batch-norm biases, which transformers lack",
        ),
        Method(
            "finercam", "Finer-CAM", FinerCAM,
            "forward + full backward; contrasts the class with its 3 most similar classes", contrastive=True,
        ),
        Method(
            "shapleycam", "Shapley-CAM", _ShapleyCAM,
            "forward + full backward + a Hessian-vector product (equals Grad-CAM where the path to the score "
            "is linear)",
            second_derivatives=True, cnn_only=True,
            reason="it needs second derivatives, which PyTorch's fused attention kernels do not provide",
        ),
        Method("scorecam", "Score-CAM", ScoreCAM, _PER_CHANNEL, uses_gradients=False, per_channel=True),
        Method(
            "ablationcam", "Ablation-CAM", AblationCAM, _PER_CHANNEL, uses_gradients=False, per_channel=True,
            cnn_only=True, reason="needs an ablation layer for token layouts, not wired for transformers",
        ),
        *(
            Method(a.name, a.title, None, "one forward + one backward through every block (attention maps)",
                   uses_gradients=a.uses_gradients, target_layer=False, attention=True,
                   class_specific=a.class_specific,
                   reason="it reads a transformer's attention maps (torchvision ViT and Swin)")
            for a in attention.METHODS.values()
        ),
    )
}
SHARED = tuple(name for name, m in METHODS.items() if m.shared)
ATTENTION = tuple(name for name, m in METHODS.items() if m.attention)
DEFAULT_METHOD = "gradcam"


def applicable(model: LoadedModel, *, include_slow: bool = False) -> list[str]:
    """The methods that apply to `model`, in METHODS order: 'all' for the CLI and the pages.

    Every method except the one-forward-per-channel ones (Score-CAM, Ablation-CAM), which `include_slow` adds.
    """
    return [m.name for m in METHODS.values() if m.applies_to(model) and (include_slow or not m.per_channel)]


def one_pass(model: LoadedModel) -> list[str]:
    """The one-pass methods that apply to `model`, in METHODS order (on a transformer the attention methods too):
    what the Live camera, Batch and the dataset audit offer."""
    return [m.name for m in METHODS.values() if m.one_pass and m.applies_to(model)]


def check_method(name: str, model: LoadedModel | None = None) -> Method:
    """The method called `name`, refused with the reason when it does not apply to `model`."""
    try:
        method = METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"Unknown CAM method '{name}'.{did_you_mean(name, METHODS)} Available: {', '.join(METHODS)}."
        ) from None
    if model is not None and not method.applies_to(model):
        raise UnknownMethodError(f"{method.title} does not apply to {model.spec.title}: {method.reason}.")
    return method
