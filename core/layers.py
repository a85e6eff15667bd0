"""Where to explain a network, read from the network itself: its CAM layer, token layout, stages and layer shapes.

`find` runs ONE forward and backward pass at a small input with a forward hook on every module (`hooks.everywhere`)
and reads, in execution order, each module's output shape and whether the class score reaches its spatial
positions. Nothing is read from names: layouts come from shapes against the input's grid, stages from timm's
`feature_info` or from where the resolution drops, the CAM layer from the gradient.

The CAM layer is the deepest layer whose output still has a spatial layout (NCHW maps, NHWC maps, or tokens
(B, prefix + h*w, C)) and whose spatial positions receive a non-zero gradient from the class score: a class-token
ViT's final norm and last MLP only pass gradient to the class token, so the rule arrives at the last block's first
norm (pytorch-grad-cam's advice for ViT). Among modules that output the same tensor the outermost one that is not
a whole multi-resolution trunk is named (ResNet `layer4`, not `layer4.1.relu` nor the network), an in-place
activation module over the layer it rewrites (VGG's ReLU, not the convolution before it), and pooling layers never.
Inside a block only layers as wide as the block count (a ViT block's norm, not its 3x-wide qkv projection).

`complete` fills a registry spec's empty fields (`cam_layer == ""`, `stages == ()`) from `find`.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import torch
from torch import Tensor, nn

from core import hooks, layout
from core.registry import BackboneSpec

MAX_PREFIX = 16  # the most leading tokens inferred when the model does not say (class + distillation + registers)
_POOLING = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


@dataclass(frozen=True, eq=False)
class Found:
    """What `find` read from one pass through a network."""

    cam_layer: str  # "" when no layer can be explained (then `reason` says why)
    reshape: layout.Reshape | None  # the CAM layer's layout -> (B, C, H, W): layout.Tokens / ChannelsLast, or None
    prefix_tokens: int | None  # tokens before the grid at the CAM layer (None: not a token layout)
    grid: tuple[int, int]  # (h, w) of the CAM layer at the input `find` ran at
    layout: str  # "nchw", "nhwc", "tokens", or "" with no CAM layer
    stages: tuple[str, ...]  # the layers that end each stage, shallow to deep, ending at the CAM layer
    shapes: Mapping[str, tuple[int, ...]]  # layer path -> output shape (first call), in execution order
    reason: str = ""  # why the network cannot be explained or fine-tuned here ("" when it can)


@dataclass
class _Event:
    index: int
    path: str
    module: nn.Module
    output: Tensor
    version: int
    input: Tensor | None
    kind: tuple | None = None  # (layout, (h, w), prefix) or None
    pooled: bool = False  # this tensor is a pooling layer's output (whichever layer also returns it)


def find(module: nn.Module, *, input_size: tuple[int, int], head: str = "", prefix_tokens: int | None = None,
         channels_last: bool | None = None) -> Found:
    """The CAM layer, its layout and the stages of `module`, from one forward and backward pass at `input_size`
    (height, width) with random input. `head`: the classifier layer (its input's score is the class score; a
    zero-initialised head does not matter). `prefix_tokens` (timm's `num_prefix_tokens`) and `channels_last` are
    used when given, inferred from shapes otherwise. The module is left as it was (mode, hooks, gradients).
    """
    height, width = int(input_size[0]), int(input_size[1])
    events: list[_Event] = []
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    store: dict[str, Tensor] = {}

    def record(path, mod, args, output):
        calls[path] = calls.get(path, 0) + 1
        if path == head and args and isinstance(args[0], Tensor):
            store["head"] = args[0]
        if isinstance(output, Tensor):
            shapes.setdefault(path, tuple(output.shape))
            if output.is_floating_point():
                given = args[0] if args and isinstance(args[0], Tensor) else None
                events.append(_Event(len(events), path, mod, output, output._version, given))

    generator = torch.Generator().manual_seed(0)
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    image = torch.randn(1, 3, height, width, generator=generator).to(device, dtype).requires_grad_(True)
    training = module.training
    module.eval()
    try:
        with hooks.everywhere(module, record), torch.enable_grad():
            logits = module(image)
        source = store.get("head")
        if source is None:
            source = logits if isinstance(logits, Tensor) else None
        head_module = _submodule(module, head)
        reason = _head_reason(head, head_module)
        events = [e for e in events if e.path]  # the root's output is the logits
        grids = _grids(height, width, events)
        for event in events:
            event.kind = _classify(event.output.shape, height, width, grids, prefix_tokens, channels_last)
        _mark_pooled(events)
        candidates = _candidates(events, calls)
        touched = _touched(source, candidates, generator) if source is not None else set()
    finally:
        module.train(training)
    chosen = _choose(module, events, calls, candidates, touched)
    if chosen is None:
        return Found("", None, None, (0, 0), "", (), MappingProxyType(shapes), reason or (
            "no layer keeps a spatial layout (maps or tokens) that the class score depends on: there is nothing "
            "for a CAM to show"))
    kind, grid, prefix = chosen.kind
    reshape = layout.ChannelsLast() if kind == "nhwc" else layout.Tokens(prefix, grid) if kind == "tokens" else None
    stages = _stages(module, events, calls, chosen)
    return Found(chosen.path, reshape, prefix if kind == "tokens" else None, grid, kind, stages,
                 MappingProxyType(shapes), reason)


def complete(spec: BackboneSpec, module: nn.Module) -> BackboneSpec:
    """`spec` with the fields the registry left empty filled from `find` on the built `module`: the CAM layer
    (`cam_layer == ""`, and then its token reshape and prefix), the stages (`stages == ()`). A spec that names
    them is returned as it is, without a pass."""
    if spec.cam_layer and spec.stages:
        return spec
    size = spec.input_size if spec.fixed_size else _small(spec.input_size)
    found = find(module, input_size=size, head=spec.head, prefix_tokens=getattr(spec, "prefix_tokens", None),
                 channels_last=getattr(spec, "channels_last", None))
    changes: dict[str, object] = {}
    if not spec.cam_layer and found.cam_layer:
        changes["cam_layer"] = found.cam_layer
        if spec.reshape is None and found.reshape is not None:
            changes["reshape"] = found.reshape
        if hasattr(spec, "prefix_tokens") and spec.prefix_tokens is None and found.prefix_tokens is not None:
            changes["prefix_tokens"] = found.prefix_tokens
    if not spec.stages and found.stages:
        layer = changes.get("cam_layer", spec.cam_layer)
        changes["stages"] = found.stages if layer == found.cam_layer else found.stages[:-1] + (layer,)
    return replace(spec, **changes) if changes else spec


def _small(size: tuple[int, int], side: int = 128) -> tuple[int, int]:
    """A smaller input of the same aspect for a network that takes any size (the pass only reads shapes)."""
    scale = min(1.0, side / min(size))
    return max(32, round(size[0] * scale)), max(32, round(size[1] * scale))


def _submodule(module: nn.Module, path: str) -> nn.Module | None:
    if not path:
        return None
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _head_reason(head: str, module: nn.Module | None) -> str:
    if not head:
        return ""
    if module is None:
        return f"there is no head layer '{head}' to replace for transfer learning"
    if not isinstance(module, nn.Linear):
        return (f"its head '{head}' is a {type(module).__name__}, not a Linear layer: transfer learning replaces a "
                "Linear head")
    return ""


# ---------------------------------------------------------------------------------------------
# layouts from shapes


def _grids(height: int, width: int, events: list[_Event]) -> set[tuple[int, int]]:
    """Grids a stride makes of the input (floor and ceil of H/s, W/s), and those convolutions output."""
    grids = set()
    for stride in range(1, max(height, width) + 1):
        grids.add((height // stride, width // stride))
        grids.add((-(-height // stride), -(-width // stride)))
    for event in events:
        if isinstance(event.module, nn.Conv2d) and event.output.ndim == 4:
            grids.add(tuple(event.output.shape[2:]))
    return {g for g in grids if g[0] >= 1 and g[1] >= 1}


def _loose(h: int, w: int, height: int, width: int) -> bool:
    """Whether (h, w) is the input's grid at some stride, within the pixels that unpadded convolutions lose."""
    if not (1 <= h <= height and 1 <= w <= width):
        return False
    low = max(height / (h + 1.5), width / (w + 1.5))
    high = min(height / max(h - 1.5, 0.5), width / max(w - 1.5, 0.5))
    return low <= high


def _classify(shape, height, width, grids, prefix_tokens, channels_last) -> tuple | None:
    """(layout, (h, w), prefix) of a batch-of-one output, or None when it is not spatial."""
    if len(shape) < 3 or shape[0] != 1:
        return None
    if len(shape) == 4:
        a, b, c = shape[1:]
        first = _loose(b, c, height, width)  # channels-first is plausible
        last = (a, b) in grids  # channels-last is plausible
        if channels_last is True:
            kind = ("nhwc", (a, b), 0) if last else ("nchw", (b, c), 0) if first else None
        elif channels_last is False:
            kind = ("nchw", (b, c), 0) if first else None
        else:
            kind = ("nhwc", (a, b), 0) if last and not first else ("nchw", (b, c), 0) if first else None
        if kind is None:
            return None
        return kind if kind[1][0] * kind[1][1] >= 2 else None
    if len(shape) == 3:
        count = shape[1]
        prefixes = [prefix_tokens, 0] if prefix_tokens is not None else range(MAX_PREFIX + 1)
        for prefix in dict.fromkeys(prefixes):
            patches = count - prefix
            matches = [g for g in grids if g[0] * g[1] == patches]
            if patches >= 2 and matches:
                # the grid whose aspect is closest to the input's
                grid = min(matches, key=lambda g: (abs(math.log(g[0] * width / (g[1] * height))), g))
                return ("tokens", grid, prefix)
    return None


# ---------------------------------------------------------------------------------------------
# which outputs can be explained


def _pooling(event: _Event) -> bool:
    """A pooling layer, or any layer without parameters that changes the grid of its maps, keeping their channels."""
    if isinstance(event.module, _POOLING):
        return True
    if any(True for _ in event.module.parameters()) or event.input is None or event.kind is None:
        return False
    if event.input.ndim != 4 or event.kind[0] != "nchw" or event.input.shape[1] != event.output.shape[1]:
        return False  # pooling keeps the channels (MaxViT's window departition does not: a reshape)
    return tuple(event.input.shape[2:]) != event.kind[1]


def _mark_pooled(events: list[_Event]) -> None:
    groups: dict[int, list[_Event]] = {}
    for event in events:
        groups.setdefault(id(event.output), []).append(event)
    for group in groups.values():
        pooled = any(_pooling(e) for e in group)
        for event in group:
            event.pooled = pooled


def _transparent(event: _Event) -> bool:
    """A view of its input (a permute, reshape, flatten) from a layer without parameters: not a layer of its own."""
    if event.input is None or event.output is event.input or any(True for _ in event.module.parameters()):
        return False
    try:
        return event.output.untyped_storage().data_ptr() == event.input.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return False


def _candidates(events: list[_Event], calls: dict[str, int]) -> dict[int, list[_Event]]:
    """Spatial outputs, grouped by tensor (id -> the events that output it), without pooled or view tensors."""
    groups: dict[int, list[_Event]] = {}
    for event in events:
        groups.setdefault(id(event.output), []).append(event)
    keep = {}
    for key, group in groups.items():
        if group[0].kind is None or group[0].pooled or all(_transparent(e) for e in group):
            continue
        if not group[0].output.requires_grad:
            continue
        keep[key] = group
    return keep


def _touched(source: Tensor, candidates: dict[int, list[_Event]], generator: torch.Generator) -> set[int]:
    """The candidate tensors whose spatial positions (at least two) get a non-zero gradient from the score: a random
    direction of the head's input, so a zero-initialised head still gives gradients."""
    keys = list(candidates)
    tensors = [candidates[k][0].output for k in keys]
    direction = torch.randn(source.shape, generator=generator).to(source.device, source.dtype)
    score = (source * direction).sum()
    if not tensors or not score.requires_grad:
        return set()
    grads = torch.autograd.grad(score, tensors, allow_unused=True)
    touched = set()
    for key, grad in zip(keys, grads, strict=True):
        if grad is None:
            continue
        kind, (h, w), prefix = candidates[key][0].kind
        g = grad[0].detach().abs().float()
        if kind == "nchw":
            positions = g.sum(dim=0).flatten()
        elif kind == "nhwc":
            positions = g.sum(dim=-1).flatten()
        else:
            positions = g[prefix:].sum(dim=-1)
        if int((positions > 0).sum()) >= 2:
            touched.add(key)
    return touched


def _children(module: nn.Module, path: str) -> list[str]:
    prefix = f"{path}." if path else ""
    return [prefix + name for name, _ in module.named_children()]


def _expanded(root: nn.Module, path: str, first: dict[str, _Event]) -> bool:
    """A trunk: the network itself, or a container whose layers step down through grids (torchvision's `features`,
    MaxViT's `blocks`); not a block that only downsamples at its last layer (ConvNeXt's downsample) nor parallel
    branches at two grids (Inception's Mixed_6a)."""
    if not path:
        return True
    grids = [first[c].kind[1] for c in _children(root.get_submodule(path), path)
             if c in first and first[c].kind is not None and not first[c].pooled]
    if len(set(grids)) < 2 or (len(set(grids[:-1])) < 2 and grids.count(grids[-1]) < 2):
        return False
    return all(b[0] * b[1] <= a[0] * a[1] for a, b in zip(grids, grids[1:]))


def _choose(root, events, calls, candidates, touched) -> _Event | None:
    """The deepest explainable tensor, named by its best layer."""
    first: dict[str, _Event] = {}
    for event in events:
        first.setdefault(event.path, event)
    labelled = []
    for key, group in candidates.items():
        if key not in touched:
            continue
        label = _label(root, group, calls, first)
        if label is not None and _in_stream(root, label, first):
            labelled.append(label)
    if not labelled:
        return None
    return max(labelled, key=lambda e: e.index)


def _label(root, group: list[_Event], calls, first) -> _Event | None:
    """The outermost layer outputting this tensor, called once, not a trunk and not a pass-through (timm's Identity
    `norm_pre`); of equals, the one that last wrote it (an in-place ReLU over the convolution it rewrites)."""
    named = [e for e in group if calls[e.path] == 1 and not _expanded(root, e.path, first)]
    if not named:
        return None
    versions = {e.version for e in group if e.output is not e.input}
    return min(named, key=lambda e: (_passes(e, versions), e.path.count("."), -e.version, e.index))


def _passes(event: _Event, versions: set[int]) -> bool:
    """An Identity or eval-mode Dropout: returns its input as it got it (an in-place ReLU rewrites it first)."""
    return event.output is event.input and event.version in versions


def _in_stream(root, event: _Event, first) -> bool:
    """Whether each enclosing block up to a trunk outputs this layer's shape (a block's norm, not its qkv)."""
    path = event.path
    while "." in path:
        path = path.rpartition(".")[0]
        if _expanded(root, path, first):
            return True
        parent = first.get(path)
        if parent is None:  # a ModuleList, never called itself
            continue
        if tuple(parent.output.shape) != tuple(event.output.shape):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# stages


def _stages(root: nn.Module, events: list[_Event], calls, chosen: _Event) -> tuple[str, ...]:
    """timm's `feature_info` modules before the CAM layer when the network has them, else the last layer at each
    resolution of its trunk, else (one resolution: a ViT) the ends of the first three quarters of its blocks;
    always ending at the CAM layer."""
    order = {}
    for event in events:
        order.setdefault(event.path, event.index)
    info = getattr(root, "feature_info", None)
    names = []
    if isinstance(info, list | tuple):
        names = [entry.get("module") for entry in info if isinstance(entry, dict)]
    elif info is not None and hasattr(info, "module_name"):
        try:
            names = list(info.module_name())
        except Exception:  # noqa: BLE001 -- a feature_info of another shape: fall back to resolutions
            names = []
    ends = [n for n in dict.fromkeys(names) if isinstance(n, str) and n in order and order[n] < chosen.index
            and not _inside(chosen.path, n)]
    if not ends:
        ends = _drops(root, events, chosen)
    if not ends:
        ends = _quarters(root, events, chosen)
    return tuple(ends) + (chosen.path,)


def _inside(path: str, container: str) -> bool:
    return path.startswith(container + ".")


def _drops(root: nn.Module, events: list[_Event], chosen: _Event) -> list[str]:
    first: dict[str, _Event] = {}
    for event in events:
        first.setdefault(event.path, event)
    spine: list[_Event] = []

    def walk(path: str) -> None:
        for child in _children(root.get_submodule(path) if path else root, path):
            if child not in first or _expanded(root, child, first):  # a ModuleList is never called itself
                walk(child)
            else:
                spine.append(first[child])

    walk("")
    spine.sort(key=lambda e: e.index)
    before = [e for e in spine if e.index < chosen.index and not _inside(chosen.path, e.path)
              and e.kind is not None and not e.pooled and not _transparent(e)]
    ends = []
    for here, after in zip(before, before[1:] + [chosen]):
        if after.kind[1][0] * after.kind[1][1] < here.kind[1][0] * here.kind[1][1]:
            ends.append(here.path)
    return ends


def _quarters(root: nn.Module, events: list[_Event], chosen: _Event) -> list[str]:
    """The longest run of same-type blocks outputting one shape (a ViT's encoder layers): ends of its quarters."""
    first: dict[str, _Event] = {}
    for event in events:
        first.setdefault(event.path, event)
    best: list[str] = []
    for path, module in root.named_modules():
        run = [c for c in _children(module, path) if c in first]
        if len(run) < 4 or len({type(root.get_submodule(c)) for c in run}) != 1:
            continue
        if len({tuple(first[c].output.shape) for c in run}) != 1:
            continue
        if len(run) > len(best):
            best = run
    blocks = [c for c in best if first[c].index < chosen.index and not _inside(chosen.path, c)]
    if len(best) < 4:
        return []
    picks = [best[round(len(best) * k / 4) - 1] for k in (1, 2, 3)]
    return [p for p in dict.fromkeys(picks) if p in blocks]
