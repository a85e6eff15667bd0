"""The architectures `core.layers.find` is held to (issue 13's quality bar), and the check run on each: used by
tests/test_layers_zoo.py (a sample by default, all behind `-m zoo`) and bench/zoo_layers.py (the table).

Each architecture is built with random weights (a zero-initialised head gets random ones), `find` names its CAM
layer and layout from one pass, and Grad-CAM from our one-pass engine (`cams.raw_maps`) is compared with
pytorch-grad-cam's GradCAM on the same layer, class and reshape.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SMALL = 96  # input side for networks that take any size

#: timm names (smallest variants) and the options they are built with; the family spread of issue 13
TIMM: dict[str, dict] = {
    "resnet18": {}, "resnet18d": {}, "resnet10t": {}, "regnetx_002": {}, "regnety_002": {}, "efficientnet_b0": {},
    "tf_efficientnet_lite0": {}, "mobilenetv3_small_050": {}, "mobilenetv4_conv_small": {},
    "mobilenetv4_hybrid_medium": {}, "convnext_atto": {}, "convnextv2_atto": {},
    "vit_tiny_patch16_224": {}, "vit_tiny_patch16_224@gap": {"class_token": False, "global_pool": "avg"},
    "vit_small_patch14_reg4_dinov2": {"img_size": 224}, "deit_tiny_distilled_patch16_224": {},
    "beit_base_patch16_224": {}, "eva02_tiny_patch14_224": {}, "swin_tiny_patch4_window7_224": {},
    "swinv2_cr_tiny_ns_224": {}, "swinv2_tiny_window8_256": {}, "maxvit_rmlp_pico_rw_256": {},
    "coat_lite_tiny": {}, "coatnet_nano_rw_224": {}, "mobilevit_xxs": {}, "mobilevitv2_050": {},
    "efficientformer_l1": {}, "efficientformerv2_s0": {}, "fastvit_t8": {}, "levit_128s": {}, "poolformer_s12": {},
    "poolformerv2_s12": {}, "repvgg_a0": {}, "densenet121": {}, "inception_v3": {}, "xception41": {},
    "inception_next_atto": {}, "ghostnet_100": {}, "cait_xxs24_224": {}, "pit_ti_224": {}, "tiny_vit_5m_224": {},
    "edgenext_xx_small": {}, "hrnet_w18_small": {},
}

#: the default run's sample: one of each layout and kind of trouble, cheap on a CPU
SAMPLE = (
    "torchvision/resnet18", "torchvision/densenet121", "torchvision/mobilenet_v3_small", "torchvision/squeezenet1_0",
    "torchvision/vit_b_16", "torchvision/swin_t", "timm/vit_tiny_patch16_224", "timm/deit_tiny_distilled_patch16_224",
    "timm/vit_small_patch14_reg4_dinov2", "timm/swin_tiny_patch4_window7_224", "timm/efficientformer_l1",
    "timm/convnext_atto", "timm/mobilevit_xxs",
)


def torchvision_names() -> list[str]:
    import torchvision

    return [f"torchvision/{n}" for n in torchvision.models.list_models(module=torchvision.models)]


def all_names() -> list[str]:
    return torchvision_names() + [f"timm/{n}" for n in TIMM]


@dataclass(frozen=True)
class Row:
    arch: str
    layer: str
    layout: str
    shape: tuple[int, ...]
    input_size: tuple[int, int]
    r: float  # Pearson r of our Grad-CAM and pytorch-grad-cam's (nan when no layer)
    spread: float  # standard deviation of our map (0: constant)
    seconds: float
    reason: str


def build(arch: str) -> tuple[nn.Module, str, tuple[int, int], int | None]:
    """(network in eval mode, frozen, random weights; head path; input size; prefix tokens from metadata)."""
    source, _, name = arch.partition("/")
    torch.manual_seed(0)
    if source == "torchvision":
        from torchvision.models import get_model, get_model_weights

        extra = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
        module = get_model(name, weights=None, **extra)
        meta = get_model_weights(name).DEFAULT.meta
        low = meta.get("min_size", (1, 1))
        side = 224 if low[0] >= 224 else max(SMALL, 2 * low[0])  # Inception: 150, its last mixed block 3x3
        linears = [path for path, m in module.named_modules() if isinstance(m, nn.Linear)]
        convs = [path for path, m in module.named_modules() if isinstance(m, nn.Conv2d)]
        head = linears[-1] if linears else convs[-1]
        prefix = None
    else:
        import timm

        base, _, _ = name.partition("@")
        module = timm.create_model(base, pretrained=False, **TIMM[name])
        cfg = module.pretrained_cfg
        fixed = cfg.get("fixed_input_size", False)
        half = -(-cfg["input_size"][1] // 64) * 32  # half the reference side, rounded up to 32 (HRNet needs it)
        side = TIMM[name].get("img_size", cfg["input_size"][1]) if fixed else max(SMALL, half)
        classifier = cfg.get("classifier", "")
        head = classifier[0] if isinstance(classifier, tuple | list) else classifier
        prefix = getattr(module, "num_prefix_tokens", None)
        for m in module.modules():  # PyTorch's own init, not timm's std 0.02: at 0.02 LeViT's attention is uniform,
            if isinstance(m, nn.Linear):  # its downsampled tokens all alike and every map constant
                m.reset_parameters()
    module.eval().requires_grad_(False)
    for m in module.modules():  # zero-initialised weights (torchvision ViT's head, LeViT's residual batch norms,
        weight = getattr(m, "weight", None)  # last norms of residual blocks): random, or nothing varies
        if isinstance(weight, torch.Tensor) and weight.is_floating_point() and not weight.any():
            weight.normal_(0, 0.02)
    return module, head, (side, side), prefix


def registered(arch: str):
    """The registry's spec for `arch` (torchvision builders by name, timm pretrained names as `timm/NAME`), or None
    for a variant built with options here."""
    from core import registry
    from core.errors import UnknownModelError

    source, _, name = arch.partition("/")
    if "@" in name or TIMM.get(name):
        return None
    try:
        return registry.get(name if source == "torchvision" else arch)
    except UnknownModelError:
        return None


def check(arch: str) -> Row:
    """Find the layer and compare our Grad-CAM with pytorch-grad-cam's there."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from core import cams, layers
    from core.models import LoadedModel
    from core.registry import BackboneSpec

    started = time.perf_counter()
    module, head, size, prefix = build(arch)
    spec = registered(arch)
    if spec is not None:  # the registry's spec, from metadata alone, names the same head and prefix
        assert spec.head == head, (spec.head, head)
        assert spec.prefix_tokens in (None, prefix), (spec.prefix_tokens, prefix)
        assert spec.cam_layer == "" and spec.stages == ()  # left for core.layers, at load
    found = layers.find(module, input_size=size, head=head, prefix_tokens=prefix)
    if not found.cam_layer:
        return Row(arch, "", "", (), size, float("nan"), 0.0, time.perf_counter() - started, found.reason)
    generator = torch.Generator().manual_seed(1)
    tensor = torch.randn(1, 3, *size, generator=generator)
    with torch.inference_mode():
        logits = module(tensor)
    classes = logits.shape[1]
    target = int(logits[0].argmax())
    spec = BackboneSpec(
        name=arch, title=arch, source="test", build=lambda pretrained: module, cam_layer=found.cam_layer, head=head,
        categories=tuple(str(i) for i in range(classes)), weights_file=None, input_size=size,
        reshape=found.reshape, family="cnn" if found.layout == "nchw" else "transformer", stages=found.stages,
    )
    model = LoadedModel(spec=spec, module=module, device=torch.device("cpu"), pretrained=False,
                        params=sum(p.numel() for p in module.parameters()))
    ours = cams.raw_maps(model, tensor, methods=["gradcam"], target=target, layer=found.cam_layer)["gradcam"][0]
    layer = module.get_submodule(found.cam_layer)
    with GradCAM(model=module, target_layers=[layer], reshape_transform=found.reshape) as cam:
        theirs = cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]
    module.zero_grad(set_to_none=True)
    spread = float(np.std(ours))
    r = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]) if spread > 0 and np.std(theirs) > 0 else float("nan")
    return Row(arch, found.cam_layer, found.layout, found.shapes[found.cam_layer], size, r, spread,
               time.perf_counter() - started, found.reason)
