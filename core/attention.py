"""Explanations read from a transformer's attention: rollout, gradient-weighted rollout and LeGrad, from one pass.

One forward pass records every block's attention probabilities A_l (1 x heads x queries x keys per window) and,
for LeGrad, every block's output; one backward pass from the class logit y_c gives dy_c/dA_l for all layers
together, and LeGrad adds, per layer, a backward pass that stays inside that block (from the block's own class
score to its attention: no pass through the trunk). Every method is then a few vector-matrix products.

Capture. torchvision's ViT calls `nn.MultiheadAttention` with `need_weights=False` (SDPA, which never materialises
the weights); Swin's `shifted_window_attention` computes them but keeps them local. For the length of a call we
give each attention module an instance-level `forward` that computes the same attention explicitly (softmax(q k^T
/ sqrt(d)) v, the windows, the cyclic shift, the -100 mask and the relative position bias of torchvision's own
code) and records the probabilities it multiplies with v. The logits are the same to float rounding (tested).
The shadowing `forward` is deleted in a `finally`, the block-output hooks are removed by `hooks.attached`, and the
whole call holds `model.lock`, so no other thread sees the patched modules.

What each method computes (r is a row vector over tokens; products run from the last layer to the first):
- `rollout` (Abnar & Zuidema 2020): fuse heads (mean, max or min), zero the `discard_ratio` smallest weights
  (never the class token's own column), add the identity for the residual path and renormalise the rows:
  Â_l = rownorm(fuse(A_l) + I). r = e_cls Â_L ... Â_1, the map is r over the patch tokens. This is the class
  token's row of the published matrix product (jacobgil/vit-explain's recurrence, with the row sums taken per
  row: that repository divides by `sum(dim=-1)` without `keepdim`, which scales columns instead).
- `grad_rollout` (Chefer, Gur & Wolf, ICCV 2021, "generic attention-model explainability", eq. 5-6):
  Ā_l = mean over heads of (dy_c/dA_l * A_l)^+, R = prod_l (I + Ā_l), the map is the class token's row of R.
- `legrad` (Bousselham et al.), as TorchCAM 0.5 computes it: for block l, s_l = head(norm(pool(x_{l+1})))[c]
  (ViT: the mean over all tokens, then the final LayerNorm and `heads`; Swin: the model's own norm, average pool
  and head); the map is the positive part of ds_l/dA_l averaged over heads and queries, the class token's key
  removed, averaged over the blocks whose output fits the head (ViT: all; Swin: the last stage).

Windowed models (Swin). Inside block l, token i only attends to the tokens of its (shifted) window, so the
token-to-token matrix A_l is block-diagonal after the cyclic shift: entry (p, q) for image positions p, q is the
window's weight when p and q share a window, and 0 otherwise. We never build it: r A_l is computed window by
window (gather r at the window's positions, multiply by the window's matrix, scatter back). Positions are those
of torchvision's code: pad to whole windows, roll by -shift, partition; the padding tokens are not tokens of the
grid: their columns are dropped (rollout renormalises each row over the image tokens; for the gradient methods,
relevance that flows to padding leaves the image). The shift's -100 mask is already inside the recorded probabilities.
Between stages, patch merging makes the token (i, j) from exactly the four tokens (2i + a, 2j + b); it has no
weights to read, so each child receives a quarter of its parent's relevance (the uniform mixing matrix, rows
summing to 1 like the attention rows; odd sizes pad, and relevance on padding is dropped). The model pools the
last stage by a mean, so r starts uniform there, as the class token's row starts the ViT product. Each step is a
product with a row-stochastic (rollout) or non-negative (gradient) matrix on image positions, so the windowed
rollout is exactly the dense rollout over the whole token grid with the merges as mixing matrices: the test
builds those dense matrices and checks both, and checks the window-to-position mapping against the attention
module's own output. `rollout` and `grad_rollout` take this form on Swin; `legrad` on Swin scatters each
window's key relevance to its positions.

Maps are returned like `core.cams.raw_maps`: (h, w) float32 in [0, 1] at the model input's size.
"""

import math
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import hooks
from core.errors import InvalidInputError, UnknownMethodError
from core.models import LoadedModel

FUSIONS = ("mean", "max", "min")


@dataclass(frozen=True)
class AttentionMethod:
    name: str
    title: str
    class_specific: bool  # False: the map does not depend on the class (the UI should say so)
    uses_gradients: bool


METHODS: dict[str, AttentionMethod] = {
    m.name: m
    for m in (
        AttentionMethod("rollout", "Attention rollout", class_specific=False, uses_gradients=False),
        AttentionMethod("grad_rollout", "Gradient-weighted attention rollout", class_specific=True, uses_gradients=True),
        AttentionMethod("legrad", "LeGrad", class_specific=True, uses_gradients=True),
    )
}


@dataclass(frozen=True)
class _Window:
    """Where one block's windows lie on its stage's token grid (torchvision's shifted_window_attention)."""

    height: int
    width: int
    size: tuple[int, int]
    shift: tuple[int, int]

    def positions(self) -> Tensor:
        """(windows, window tokens): flat index into the padded (pad_h x pad_w) grid of each window slot."""
        (wh, ww), (sh, sw) = self.size, self.shift
        pad_h, pad_w = math.ceil(self.height / wh) * wh, math.ceil(self.width / ww) * ww
        rows = (torch.arange(pad_h) + sh) % pad_h  # rolled row -> original row
        cols = (torch.arange(pad_w) + sw) % pad_w
        flat = rows[:, None] * pad_w + cols[None, :]
        return flat.view(pad_h // wh, wh, pad_w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)

    def valid(self) -> Tensor:
        """(windows, window tokens): whether each slot is an image token (False: padding)."""
        pad_w = math.ceil(self.width / self.size[1]) * self.size[1]
        index = self.positions()
        return (index // pad_w < self.height) & (index % pad_w < self.width)

    def propagate(self, r: Tensor, matrices: Tensor) -> Tensor:
        """r (k, H*W) times the block-diagonal token matrix whose windows are `matrices` (windows, n, n)."""
        (wh, ww) = self.size
        pad_h, pad_w = math.ceil(self.height / wh) * wh, math.ceil(self.width / ww) * ww
        padded = F.pad(r.view(-1, self.height, self.width), (0, pad_w - self.width, 0, pad_h - self.height))
        index = self.positions()
        windows = padded.flatten(1)[:, index]  # (k, windows, n)
        mixed = torch.einsum("kwi,wij->kwj", windows, matrices)
        out = torch.zeros_like(padded.flatten(1))
        out[:, index.flatten()] = mixed.flatten(1)
        return out.view(-1, pad_h, pad_w)[:, : self.height, : self.width].flatten(1)

    def scatter(self, values: Tensor) -> Tensor:
        """(windows, n) values per window slot -> (H, W) map on the stage grid, padding dropped."""
        (wh, ww) = self.size
        pad_h, pad_w = math.ceil(self.height / wh) * wh, math.ceil(self.width / ww) * ww
        out = values.new_zeros(pad_h * pad_w)
        out[self.positions().flatten()] = values.flatten()
        return out.view(pad_h, pad_w)[: self.height, : self.width]


@dataclass
class _Record:
    """One block's attention during the call: probabilities (grad-connected), layout, stage, output."""

    weights: Tensor  # (windows or 1, heads, n, n)
    window: _Window | None  # None: one global sequence (ViT)
    stage: int
    output: Tensor | None = None  # the block's output, for LeGrad's layer score


@dataclass(frozen=True)
class _Layout:
    blocks: tuple[nn.Module, ...]
    attentions: tuple[nn.Module, ...]
    stages: tuple[int, ...]
    windowed: bool
    prefix: int  # non-spatial tokens ahead of the patches (ViT: the class token)
    score: Callable[[Tensor], Tensor]  # block output -> class logits (LeGrad's layer score)
    head_dim: int  # the width the head accepts: LeGrad explains the blocks whose output has it


def supports(model: LoadedModel) -> bool:
    """Whether the attention methods know this network's blocks (torchvision ViT and Swin)."""
    try:
        _layout(model.module)
    except InvalidInputError:
        return False
    return True


def _layout(module: nn.Module) -> _Layout:
    from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer, SwinTransformerBlock
    from torchvision.models.vision_transformer import VisionTransformer

    if isinstance(module, VisionTransformer):
        blocks = tuple(module.encoder.layers)
        return _Layout(blocks, tuple(b.self_attention for b in blocks), (0,) * len(blocks), False, 1,
                       lambda x: module.heads(module.encoder.ln(x.mean(dim=1))), module.hidden_dim)
    if isinstance(module, SwinTransformer):
        blocks, stages = [], []
        for part in module.features:
            inside = [b for b in part.children() if isinstance(b, SwinTransformerBlock)]
            if inside:
                blocks += inside
                stages += [len(set(stages))] * len(inside)
        if any(type(b.attn) is not ShiftedWindowAttention for b in blocks):  # v2's cosine attention: not written
            raise InvalidInputError("Attention methods support Swin v1 blocks (shifted window attention) only.")
        return _Layout(tuple(blocks), tuple(b.attn for b in blocks), tuple(stages), True, 0,
                       lambda x: module.head(module.flatten(module.avgpool(module.permute(module.norm(x))))),
                       module.norm.normalized_shape[0])
    raise InvalidInputError(
        f"Attention rollout, gradient-weighted rollout and LeGrad need a transformer with attention blocks "
        f"(torchvision ViT or Swin); {type(module).__name__} has none. Use a Grad-CAM method instead."
    )


# ---------------------------------------------------------------------------------------------
# Capture: explicit attention, recorded, for the length of a `with` block


def _first_grad(weights: Tensor) -> Tensor:
    # The input does not require gradients, so the first block's attention would not either: make it a leaf
    # (nothing upstream of it needs a gradient, so every dy/dA_l is unchanged).
    return weights.detach().requires_grad_() if torch.is_grad_enabled() and not weights.requires_grad else weights


def _mha_forward(record, module, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                 average_attn_weights=True, is_causal=False):
    if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None or is_causal:
        raise InvalidInputError("Attention capture supports unmasked self-attention only.")
    batch, tokens, dim = query.shape
    heads = module.num_heads
    qkv = F.linear(query, module.in_proj_weight, module.in_proj_bias).view(batch, tokens, 3, heads, dim // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    weights = _first_grad(torch.softmax((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1))
    record(weights, None)
    out = module.out_proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))
    return out, ((weights.mean(dim=1) if average_attn_weights else weights) if need_weights else None)


def _swin_forward(record, module, x):
    """torchvision's shifted_window_attention (v1, eval: no dropout), with the probabilities recorded."""
    batch, height, width, dim = x.shape
    (wh, ww), heads = module.window_size, module.num_heads
    pad_h, pad_w = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    shift = (0 if wh >= pad_h else module.shift_size[0], 0 if ww >= pad_w else module.shift_size[1])
    x = F.pad(x, (0, 0, 0, pad_w - width, 0, pad_h - height))
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    count = (pad_h // wh) * (pad_w // ww)
    x = x.view(batch, pad_h // wh, wh, pad_w // ww, ww, dim).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch * count, wh * ww, dim)
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(x.size(0), x.size(1), 3, heads, dim // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    logits = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1) + module.get_relative_position_bias()
    if sum(shift) > 0:
        regions = x.new_zeros((pad_h, pad_w))
        h_slices = ((0, -wh), (-wh, -shift[0]), (-shift[0], None))
        w_slices = ((0, -ww), (-ww, -shift[1]), (-shift[1], None))
        for n, (h, w) in enumerate((h, w) for h in h_slices for w in w_slices):
            regions[h[0]:h[1], w[0]:w[1]] = n
        regions = regions.view(pad_h // wh, wh, pad_w // ww, ww).permute(0, 2, 1, 3).reshape(count, wh * ww)
        mask = (regions.unsqueeze(1) - regions.unsqueeze(2)) != 0
        n = wh * ww
        logits = (logits.view(batch, count, heads, n, n) + mask.unsqueeze(1) * -100.0).view(-1, heads, n, n)
    weights = _first_grad(torch.softmax(logits, dim=-1))
    record(weights, _Window(height, width, (wh, ww), shift))
    x = module.proj((weights @ v).transpose(1, 2).reshape(x.size(0), x.size(1), dim))
    x = x.view(batch, pad_h // wh, pad_w // ww, wh, ww, dim).permute(0, 1, 3, 2, 4, 5).reshape(batch, pad_h, pad_w, dim)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width, :].contiguous()


@contextmanager
def _shadowed(module: nn.Module, forward: Callable) -> Iterator[None]:
    """Give `module` an instance-level forward for the block; the class's own is back afterwards."""
    if "forward" in module.__dict__:
        raise RuntimeError(f"{type(module).__name__} already has a patched forward: is another capture running?")
    module.forward = types.MethodType(forward, module)
    try:
        yield
    finally:
        del module.forward


def _patched_forward(forward, record, module, *args, **kwargs):
    return forward(record, module, *args, **kwargs)


def _keep_output(records: list[_Record], index: int, _module, _args, output) -> None:
    records[index].output = output


@contextmanager
def recording(model: LoadedModel, *, outputs: bool = False) -> Iterator[list[_Record]]:
    """Record every block's attention probabilities (and, with `outputs`, its output) during forward passes
    run inside the block. Holds the model's lock; nothing stays patched or hooked afterwards."""
    with model.lock, ExitStack() as stack:
        layout = _layout(model.module)
        records: list[_Record] = []
        for index, (block, attention) in enumerate(zip(layout.blocks, layout.attentions, strict=True)):
            def record(weights, window, stage=layout.stages[index]):
                records.append(_Record(weights, window, stage))

            forward = _swin_forward if layout.windowed else _mha_forward
            patched = partial(_patched_forward, forward, record)
            stack.enter_context(_shadowed(attention, patched))
            if outputs:
                stack.enter_context(hooks.attached(block, partial(_keep_output, records, index)))
        yield records


# ---------------------------------------------------------------------------------------------
# The methods, on the recorded tensors


def _fuse(weights: Tensor, fusion: str) -> Tensor:
    if fusion == "mean":
        return weights.mean(dim=1)
    return weights.amax(dim=1) if fusion == "max" else weights.amin(dim=1)


def _discard(fused: Tensor, ratio: float, keep_first: bool) -> Tensor:
    if ratio <= 0:
        return fused
    flat = fused.flatten(1).clone()
    lowest = flat.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    if keep_first:
        drop[:, 0] = False  # the class token's attention to itself (vit-explain keeps it)
    return flat.masked_fill(drop, 0.0).view_as(fused)


def _rollout_matrices(records: list[_Record], fusion: str, discard_ratio: float) -> list[Tensor]:
    out = []
    for rec in records:
        fused = _discard(_fuse(rec.weights.detach().float(), fusion), discard_ratio, keep_first=rec.window is None)
        if rec.window is not None:  # rows renormalised over image tokens: padding is not a token of the grid
            valid = rec.window.valid()  # (windows, n), tiled over a batch's images (image-major, as recorded)
            fused = fused * valid.repeat(len(fused) // len(valid), 1)[:, None, :].to(fused.device)
        mixed = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        out.append(mixed / mixed.sum(dim=-1, keepdim=True))
    return out


def _gradient_matrices(records: list[_Record], grads: Sequence[Tensor]) -> list[Tensor]:
    return [
        (grad.float() * rec.weights.detach().float()).clamp(min=0).mean(dim=1)
        + torch.eye(rec.weights.shape[-1], device=grad.device)
        for rec, grad in zip(records, grads, strict=True)
    ]


def _roll(records: list[_Record], matrices: list[Tensor], prefix: int) -> Tensor:
    """The pooled token's row of prod_l M_l, over the first stage's patch grid (ViT: the class token's row)."""
    if records[0].window is None:
        r = torch.zeros(1, matrices[0].shape[-1], device=matrices[0].device)
        r[0, 0] = 1.0
        for m in reversed(matrices):
            r = r @ m[0]
        return r[0, prefix:]
    last = records[-1].window
    r = torch.full((1, last.height * last.width), 1.0 / (last.height * last.width), device=matrices[0].device)
    for i in reversed(range(len(records))):
        window = records[i].window
        if r.shape[1] != window.height * window.width:  # crossed a patch merging: a quarter to each child
            previous = records[i + 1].window
            grid = r.view(1, previous.height, previous.width).repeat_interleave(2, 1).repeat_interleave(2, 2) / 4
            r = grid[:, : window.height, : window.width].reshape(1, -1)
        r = window.propagate(r, matrices[i])
    return r[0]


def _legrad(records: list[_Record], layout: _Layout, targets: Sequence[int]) -> Tensor:
    """(B, tokens): each image's LeGrad map, image i explaining targets[i]. One block-local backward per block for
    the whole batch, from sum_i s_l[i, targets[i]]: the images are independent (eval mode), so each image's
    gradient is its own."""
    maps = []
    chosen = [rec for rec in records if rec.output is not None and rec.output.shape[-1] == layout.head_dim]
    for n, rec in enumerate(chosen):
        logits = layout.score(rec.output)
        score = logits.gather(1, torch.as_tensor(list(targets), device=logits.device).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, rec.weights, retain_graph=n < len(chosen) - 1)
        relevance = grad.float().clamp(min=0).mean(dim=(1, 2)).view(len(logits), -1, grad.shape[-1])  # B, windows, keys
        maps.append(torch.stack([rec.window.scatter(r).flatten() for r in relevance]) if rec.window is not None
                    else relevance[:, 0, layout.prefix:])
    return torch.stack(maps).mean(dim=0)


def _grid(records: list[_Record], layout: _Layout, vector: Tensor, legrad: bool) -> Tensor:
    if layout.windowed:
        window = [r for r in records if r.output is not None and r.output.shape[-1] == layout.head_dim][-1].window if legrad else records[0].window
        return vector.view(window.height, window.width)
    side = math.isqrt(vector.numel())
    return vector.view(side, side)


def _normalised(grid: Tensor, height: int, width: int) -> np.ndarray:
    """Scaled to [0, 1] on the token grid, then resized: pytorch-grad-cam's order, so maps compare with the CAMs'."""
    import cv2

    grid = grid.detach().float()
    grid = ((grid - grid.min()) / (grid.max() - grid.min() + 1e-7)).numpy()
    resized = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(resized, nan=0.0), 0.0, 1.0).astype(np.float32)


def check_methods(methods: Sequence[str]) -> list[str]:
    if not methods:
        raise InvalidInputError("Choose at least one attention method.")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UnknownMethodError(f"Unknown attention method '{unknown[0]}'. Available: {', '.join(METHODS)}.")
    return list(methods)


def check_options(head_fusion: str, discard_ratio: float) -> None:
    if head_fusion not in FUSIONS:
        raise InvalidInputError(f"Head fusion is one of {', '.join(FUSIONS)}, got {head_fusion!r}.")
    if not 0.0 <= discard_ratio < 1.0:
        raise InvalidInputError(f"The discard ratio is a fraction in [0, 1), got {discard_ratio!r}.")


def grids(model: LoadedModel, tensor: Tensor, *, methods: Sequence[str], target: int, head_fusion: str = "mean",
          discard_ratio: float = 0.0) -> dict[str, tuple[Tensor, float]]:
    """{method: (token-grid map, unnormalised, seconds)} from one shared pass; see `raw_maps`."""
    return explained(model, tensor, methods=methods, target=target, head_fusion=head_fusion,
                     discard_ratio=discard_ratio)[1]


def explained(model: LoadedModel, tensor: Tensor, *, methods: Sequence[str], target: int | None,
              head_fusion: str = "mean", discard_ratio: float = 0.0) -> tuple[Tensor, dict[str, tuple[Tensor, float]]]:
    """`grids`, with the pass's (1, classes) float32 logits on the CPU; target None: the most probable class of
    this same pass (one forward for the classes and the maps: live video)."""
    methods = check_methods(methods)
    check_options(head_fusion, discard_ratio)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attention.raw_maps needs gradients; call it outside torch.inference_mode().")
    gradients = any(METHODS[m].uses_gradients for m in methods)
    with recording(model, outputs="legrad" in methods) as records, torch.set_grad_enabled(gradients):
        start = time.perf_counter()
        logits = model.module(tensor.to(model.device))
        target = int(logits[0].argmax()) if target is None else target
        check_class(logits, target)
        grads = (torch.autograd.grad(logits[0, target], [r.weights for r in records], retain_graph="legrad" in methods)
                 if "grad_rollout" in methods else None)
        return logits.detach().float().cpu(), from_records(model, records, methods, target, grads,
                                                           time.perf_counter() - start, head_fusion=head_fusion,
                                                           discard_ratio=discard_ratio)


def check_class(logits: Tensor, target: int) -> None:
    if not 0 <= target < logits.shape[1]:
        raise InvalidInputError(f"Class index must be between 0 and {logits.shape[1] - 1}, got {target}.")


def from_records(model: LoadedModel, records: list[_Record], methods: Sequence[str], target: int,
                 grads: Sequence[Tensor] | None, pass_seconds: float, *, head_fusion: str = "mean",
                 discard_ratio: float = 0.0) -> dict[str, tuple[Tensor, float]]:
    """{method: (token-grid map, seconds)} from the records of a forward pass under `recording` (run inside it:
    LeGrad's block-local backward passes need the graph) and `grads`, the class score's dy_c/dA_l for every
    record from the pass's one backward (needed for grad_rollout). `pass_seconds` is split between the methods."""
    layout = _layout(model.module)
    vectors: dict[str, tuple[Tensor, float]] = {}
    for name in methods:
        start = time.perf_counter()
        if name == "rollout":
            vector = _roll(records, _rollout_matrices(records, head_fusion, discard_ratio), layout.prefix)
        elif name == "grad_rollout":
            vector = _roll(records, _gradient_matrices(records, grads), layout.prefix)
        else:
            vector = _legrad(records, layout, [target])[0]
        vectors[name] = (_grid(records, layout, vector.detach().cpu(), name == "legrad"),
                         pass_seconds / len(methods) + time.perf_counter() - start)
    return vectors


def batch_grids(model: LoadedModel, records: list[_Record], method: str, targets: Sequence[int],
                grads: Sequence[Tensor] | None, *, head_fusion: str = "mean", discard_ratio: float = 0.0) -> list[Tensor]:
    """`from_records` for a batch of B images recorded in one forward pass: B token-grid maps of `method`, image i
    explaining targets[i]; `grads`: d(sum_i y[i, targets[i]])/dA_l (grad_rollout). Each map is the one image's own."""
    layout, count = _layout(model.module), len(targets)
    if method == "legrad":
        return [_grid(records, layout, v.detach().cpu(), True) for v in _legrad(records, layout, targets)]
    matrices = (_rollout_matrices(records, head_fusion, discard_ratio) if method == "rollout"
                else _gradient_matrices(records, grads))
    return [_grid(records, layout, _roll(records, [m.view(count, -1, *m.shape[1:])[i] for m in matrices],
                                         layout.prefix).detach().cpu(), False) for i in range(count)]


def normalised_maps(grids: dict[str, tuple[Tensor, float]], height: int, width: int
                    ) -> dict[str, tuple[np.ndarray, float]]:
    """`grids`' token-grid maps as (height, width) float32 maps in [0, 1] (pytorch-grad-cam's order)."""
    return {name: (_normalised(grid, height, width), seconds) for name, (grid, seconds) in grids.items()}


def raw_maps(model: LoadedModel, tensor: Tensor, *, methods: Sequence[str], target: int, head_fusion: str = "mean",
             discard_ratio: float = 0.0) -> dict[str, tuple[np.ndarray, float]]:
    """{method: ((h, w) float32 map in [0, 1] at the tensor's size, seconds)}, all from one shared pass.

    `tensor` is one preprocessed image, (1, 3, h, w); `head_fusion` and `discard_ratio` are rollout's options.
    Thread-safe (holds the model's lock); leaves no patch, hook or gradient on the model, also when it raises.

    Raises:
        UnknownMethodError, InvalidInputError (not a supported transformer, bad class or options).
    """
    height, width = tensor.shape[-2:]
    maps = grids(model, tensor, methods=methods, target=target, head_fusion=head_fusion, discard_ratio=discard_ratio)
    return normalised_maps(maps, height, width)


def depth(model: LoadedModel, tensor: Tensor, *, head_fusion: str = "mean", discard_ratio: float = 0.0) -> list[np.ndarray]:
    """Rollout up to block k for k = 1..L, the transformer's "CAM through depth", from one forward pass.

    Each map is (h, w) float32 in [0, 1] at the tensor's size. On Swin, block k's rollout starts uniform on its
    own stage's grid (the mean pool the head would apply there) and is carried down to the first stage.
    """
    check_options(head_fusion, discard_ratio)
    with recording(model) as records, torch.no_grad():
        model.module(tensor.to(model.device))
        layout = _layout(model.module)
    matrices = _rollout_matrices(records, head_fusion, discard_ratio)
    height, width = tensor.shape[-2:]
    return [
        _normalised(_grid(records, layout, _roll(records[:k], matrices[:k], layout.prefix).cpu(), False), height, width)
        for k in range(1, len(records) + 1)
    ]
