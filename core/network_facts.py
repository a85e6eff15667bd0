"""What a network says about itself when built on the meta device: parameters, multiply-adds, family, head.

The zoo's catalogue (assets/catalogue.json, written by scripts/build_catalogue.py) holds these facts for every
timm pretrained config and every torchvision builder, because reading them needs a built network while the
registry must stay metadata-only. They are read from the network, never from its name:

- family: "cnn" when it has spatial convolutions and never attends, "transformer" when it has no spatial
  convolution (patchify stems, ViT/Swin/Mixer-like token models), "hybrid" when it has both. A spatial
  convolution is an `nn.Conv2d` (or subclass) whose kernel is larger than 1 and is not a patchify kernel
  (kernel == stride). "Attends" means its forward pass computes a softmax over tokens for more than one query:
  a scaled-dot-product or multi-head attention op, or a softmax over one of the last two dimensions of a tensor
  of rank 3+ whose last two dimensions are both > 1 (an attention matrix, or CoaT's factorised keys; squeeze-excite
  and split-attention gates, attention pooling with one query and GCNet's context pooling do not count).
- gmacs: multiply-adds per image at the given input size (torch.utils.flop_counter's FLOPs / 2), None when the
  forward pass cannot run on the meta device.
- prefix_tokens: the network's own `num_prefix_tokens` (timm's class, distillation and register tokens), None
  when it does not say.
- head: the classifier a timm config names when the network has it, else the last Linear (or 1x1 Conv2d) with
  `num_classes` outputs.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class NetworkFacts:
    params: int
    gmacs: float | None
    family: str  # "cnn", "transformer" or "hybrid"
    prefix_tokens: int | None
    head: str  # "" when no layer has num_classes outputs


class _AttentionSpy(TorchDispatchMode):
    """Sees every aten op of a forward pass and notes whether one of them is attention over several queries."""

    def __init__(self):
        super().__init__()
        self.attends = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if not self.attends and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            if "scaled_dot_product" in name or "multi_head_attention" in name:
                self.attends = x.ndim >= 3 and x.shape[-2] > 1
            elif name.endswith("softmax") and "log" not in name and x.ndim >= 3:
                dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim", -1)
                self.attends = dim % x.ndim >= x.ndim - 2 and x.shape[-1] > 1 and x.shape[-2] > 1
        return func(*args, **(kwargs or {}))


def spatial_convolutions(module: nn.Module) -> int:
    """How many Conv2d layers mix neighbouring positions (kernel > 1, and not a patchify kernel == stride)."""
    count = 0
    for layer in module.modules():
        kernel = tuple(layer.kernel_size) if isinstance(layer, nn.Conv2d) else (1,)
        if max(kernel) > 1 and kernel != tuple(layer.stride):
            count += 1
    return count


def head_path(module: nn.Module, num_classes: int) -> str:
    """The last Linear with `num_classes` outputs (or 1x1 Conv2d, SqueezeNet's classifier), "" when none."""
    found = ""
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear) and layer.out_features == num_classes:
            found = name
        elif isinstance(layer, nn.Conv2d) and layer.out_channels == num_classes and max(layer.kernel_size) == 1:
            found = name
    return found


def family(spatial: int, attends: bool) -> str:
    if spatial and attends:
        return "hybrid"
    return "cnn" if spatial else "transformer"


def read(module: nn.Module, input_size: tuple[int, int], num_classes: int) -> NetworkFacts:
    """The facts of `module` (built on the meta device, or anywhere) at `input_size` (height, width)."""
    module.eval()
    params = sum(p.numel() for p in module.parameters())
    spy = _AttentionSpy()
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fast path is invisible to the counter
    try:
        device = next((p.device for p in module.parameters()), torch.device("meta"))
        with torch.inference_mode(), counter, spy:
            module(torch.empty(1, 3, *input_size, device=device))
        gmacs = counter.get_total_flops() / 2 / 1e9
    except Exception:  # an op without a meta kernel, a value read on meta: facts without the pass
        gmacs = None
        spy.attends = any(isinstance(layer, nn.MultiheadAttention) or "Attention" in type(layer).__name__
                          for layer in module.modules())
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    prefix = getattr(module, "num_prefix_tokens", None)
    return NetworkFacts(
        params=params, gmacs=None if gmacs is None else round(gmacs, 4),
        family=family(spatial_convolutions(module), spy.attends),
        prefix_tokens=prefix if isinstance(prefix, int) else None, head=head_path(module, num_classes),
    )


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters are created on the meta device, everything else where it is: for builders that compute
    their widths with tensors (torchvision's RegNets), which the meta device context cannot run."""
    original = nn.Module.register_parameter

    def register(self, name, parameter):
        original(self, name, parameter)
        if parameter is not None:
            self._parameters[name] = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` on the meta device: no memory for weights, no initialisation work."""
    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):  # a value read from a meta tensor while building
        with _parameters_on_meta():
            return build().to("meta")


def timm_facts(name: str) -> NetworkFacts:
    """The facts of timm's pretrained config `name` ("arch.tag"), built on the meta device at its input size."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    module = build_on_meta(lambda: timm.create_model(name, pretrained=False))
    facts = read(module, tuple(cfg.input_size[1:]), cfg.num_classes)
    named = classifier(cfg)
    if named and named in dict(module.named_modules()):
        return replace(facts, head=named)  # the config's own classifier, when the network has it
    return facts


def classifier(cfg) -> str:
    """The first classifier a timm pretrained config names ("" when none): distilled models name two."""
    value = cfg.classifier
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    return value or ""


def torchvision_facts(name: str) -> NetworkFacts:
    """The facts of torchvision's builder `name` with its DEFAULT weights' classes, built on the meta device."""
    import warnings

    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(name).DEFAULT
    crop = weights.transforms().crop_size[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Inception's and GoogLeNet's "default init will change" notices
        module = build_on_meta(lambda: get_model(name, weights=None, num_classes=len(weights.meta["categories"])))
    return read(module, (crop, crop), len(weights.meta["categories"]))
