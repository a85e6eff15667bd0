"""Independent references for core.attention, used by its tests and by bench/attention.py.

torchvision's ViT forward written out with every attention map explicit, and the published recurrences on
full (tokens x tokens) matrices: nothing here shares code with core.attention.
"""

import torch
import torch.nn.functional as F


def explicit_vit_forward(module, x):
    """(logits, [A_l (1, heads, tokens, tokens)]) of a torchvision VisionTransformer, maps grad-connected when
    gradients are enabled."""
    tokens = module._process_input(x)
    tokens = torch.cat([module.class_token.expand(1, -1, -1), tokens], dim=1) + module.encoder.pos_embedding
    tokens = tokens.detach().requires_grad_(torch.is_grad_enabled())
    maps = []
    for block in module.encoder.layers:
        y = block.ln_1(tokens)
        mha = block.self_attention
        n, dim, heads = y.shape[1], y.shape[2], mha.num_heads
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).view(1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        maps.append(a)
        tokens = tokens + mha.out_proj((a @ v).transpose(1, 2).reshape(1, n, dim))
        tokens = tokens + block.mlp(block.ln_2(tokens))
    return module.heads(module.encoder.ln(tokens)[:, 0]), maps


def rollout(maps, fusion="mean", discard_ratio=0.0):
    """vit-explain's recurrence (jacobgil), with the row sums taken per row: the class token's row over patches."""
    result = torch.eye(maps[0].shape[-1], device=maps[0].device)
    for a in maps:
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[fusion][0].detach().clone()
        flat = fused.view(-1)
        _, indices = flat.topk(int(flat.numel() * discard_ratio), largest=False)
        flat[indices[indices != 0]] = 0
        a = (fused + torch.eye(fused.shape[0], device=fused.device)) / 2
        result = (a / a.sum(dim=-1, keepdim=True)) @ result
    return result[0, 1:]


def grad_rollout(logits, maps, target):
    """Chefer et al. 2021, eq. 5-6: R = I; R += mean_h (grad * A)^+ @ R, layer by layer; the class token's row.

    Line for line the authors' notebook (hila-chefer/Transformer-MM-Explainability @ 58eaea85,
    Transformer_MM_explainability_ViT.ipynb): `avg_heads` = (grad * cam).clamp(min=0).mean over heads,
    `R += torch.matmul(cam, R)` from the first block to the last, `R[0, 1:]`, the gradient of the logit y_c."""
    grads = torch.autograd.grad(logits[0, target], maps)
    result = torch.eye(maps[0].shape[-1], device=maps[0].device)
    for a, g in zip(maps, grads, strict=True):
        result = result + (g * a).clamp(min=0).mean(1)[0].detach() @ result
    return result[0, 1:]
