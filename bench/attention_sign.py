"""What does the positive part in gradient-weighted rollout drop? Measured on the Shapes ViT, offline.

    .venv/bin/python bench/attention_sign.py [--images 300] [--pairs 150] [--seed 0] [--threads 1]

Chefer et al.'s recurrence (their notebook's `avg_heads`: `(grad * cam).clamp(min=0).mean(heads)`, then
R += Ā R) keeps only the positive part of dy_c/dA * A. On the recorded attention of `core.attention.recording`
this bench rebuilds the product R = prod_l (I + Ā_l) with four per-layer weightings Ā_l (mean over heads):
  positive   (grad * A)^+           Chefer et al.; checked equal to core.attention's grad_rollout on every image
  absolute   |grad * A|             the same magnitude, whatever the sign
  signed     grad * A               no clipping (the row can go negative)
  pre-softmax (dy_c/dS)^+ = (A * (grad - sum_k A grad))^+, the gradient w.r.t. the attention scores S before the
             softmax: dy_c/dA is only defined up to a constant per row (the rows sum to 1), this removes it
  attention  A                      the attention alone, no gradient (rollout without renormalising rows)
and scores the class token's row like `core.localisation`: on held-out single shapes (seed `--seed`) the heat in
the mask and the pointing game for the top-1 class; on two-shape pictures (`localisation.pair_pictures`) the
split asked / (asked + other) and the pointing on the asked shape, each picture explained for both shapes.
LeGrad is scored the same way in three forms: each block's score read through the head from the mean of the tokens
(TorchCAM's, checked equal to core.attention's legrad), from the class token (what this ViT's head reads), and
the mean-of-tokens form with the gradient multiplied by the attention it is taken at, (ds_l/dA_l * A_l)^+, as
grad_rollout weighs it (LeGrad itself reads the gradient alone).
It also prints, per block, the share of the class token's attention on object tokens (tokens more than half
inside the mask) that the positive part drops (grad * A < 0 there), summed over heads, on the single shapes.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import attention, datasets, localisation, models, preprocessing  # noqa: E402

WEIGHTINGS = {
    "positive": lambda g, a: (g * a).clamp(min=0),
    "absolute": lambda g, a: (g * a).abs(),
    "signed": lambda g, a: g * a,
    "pre-softmax": lambda g, a: (a * (g - (a * g).sum(dim=-1, keepdim=True))).clamp(min=0),
    "attention": lambda g, a: a,
}


def explain(model, image, target: int | None):
    """({weighting: (h, w) map in [0, 1]}, target, [per block (token attention, grad)]) from one pass."""
    tensor = preprocessing.to_tensor(image, model.spec)
    vit = model.module
    with attention.recording(model, outputs=True) as records, torch.enable_grad():
        logits = vit(tensor)
        target = int(logits[0].argmax()) if target is None else target
        weights = [r.weights for r in records]
        grads = torch.autograd.grad(logits[0, target], weights, retain_graph=True)
        legrad = {}
        for name, pool, times_a in (("legrad, mean of tokens", lambda x: x.mean(dim=1), False),
                                    ("legrad, class token", lambda x: x[:, 0], False),
                                    ("legrad x A, mean of tokens", lambda x: x.mean(dim=1), True)):
            per_block = []
            for r in records:  # the block's own score through the final norm and the head, down to its attention
                (g,) = torch.autograd.grad(vit.heads(vit.encoder.ln(pool(r.output)))[0, target], r.weights,
                                           retain_graph=True)
                g = g.detach()[0] * (r.weights.detach()[0] if times_a else 1.0)
                per_block.append(g.clamp(min=0).mean(dim=(0, 1))[1:])
            legrad[name] = torch.stack(per_block).mean(dim=0)
    weights = [w.detach()[0] for w in weights]  # (heads, n, n)
    grads = [g.detach()[0] for g in grads]
    maps, rows = {}, {}
    for name, weigh in WEIGHTINGS.items():
        r = torch.zeros(weights[0].shape[-1])
        r[0] = 1.0
        for a, g in zip(reversed(weights), reversed(grads), strict=True):
            r = r + r @ weigh(g, a).mean(dim=0)  # r (I + Ā)
        rows[name] = r[1:]
        maps[name] = _unit(r[1:], image.size, tuple(tensor.shape[-1:-3:-1]))
    ours = attention.grids(model, tensor, methods=["grad_rollout", "legrad"], target=target)
    if not torch.allclose(ours["grad_rollout"][0].flatten(), rows["positive"], rtol=1e-4, atol=1e-6):
        raise AssertionError("the positive weighting is not core.attention's grad_rollout")
    if not torch.allclose(ours["legrad"][0].flatten(), legrad["legrad, mean of tokens"], rtol=1e-4, atol=1e-7):
        raise AssertionError("the mean-of-tokens LeGrad is not core.attention's legrad")
    maps.update({name: _unit(vector, image.size, tuple(tensor.shape[-1:-3:-1])) for name, vector in legrad.items()})
    return maps, target, list(zip(weights, grads, strict=True))


def _unit(vector: torch.Tensor, size, model_size=(64, 64)) -> np.ndarray:
    """Scaled on the token grid, resized to the model's input, then to the image: core.cams.compute's order."""
    side = int(round(vector.numel() ** 0.5))
    grid = vector.view(side, side).numpy().astype(np.float32)
    grid = (grid - grid.min()) / (grid.max() - grid.min() + 1e-7)
    grid = np.clip(cv2.resize(grid, model_size, interpolation=cv2.INTER_LINEAR), 0, 1)
    return np.clip(cv2.resize(grid, size, interpolation=cv2.INTER_LINEAR), 0, 1)


def object_tokens(mask: np.ndarray, side: int) -> np.ndarray:
    """(side * side,) bool: the tokens more than half inside the mask."""
    h, w = mask.shape
    return (mask.reshape(side, h // side, side, w // side).mean(axis=(1, 3)) > 0.5).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    model = models.load("shapes_vit", device="cpu")
    data = datasets.shapes(args.seed, args.images)
    names = [*WEIGHTINGS, "legrad, mean of tokens", "legrad, class token", "legrad x A, mean of tokens"]
    single = {n: ([], []) for n in names}
    dropped, kept_total = None, None
    for image, mask in zip(data.images, data.masks, strict=True):
        maps, _, layers = explain(model, image, None)
        for name, heat in maps.items():
            single[name][0].append(localisation.heat_share(heat, mask))
            single[name][1].append(localisation.pointing_hit(heat, mask))
        on_object = torch.from_numpy(object_tokens(mask, int(round((layers[0][0].shape[-1] - 1) ** 0.5))))
        lost = torch.tensor([float((a[:, 0, 1:][:, on_object] * ((g * a)[:, 0, 1:][:, on_object] < 0)).sum())
                             for a, g in layers])
        total = torch.tensor([float(a[:, 0, 1:][:, on_object].sum()) for a, _ in layers])
        dropped = lost if dropped is None else dropped + lost
        kept_total = total if kept_total is None else kept_total + total
    print(f"### Shapes ViT, {len(data)} single shapes (seed {args.seed}), top-1 class\n")
    print("| weighting (grad_rollout) / LeGrad | heat in mask | pointing |\n|---|---|---|")
    for name, (shares, hits) in single.items():
        print(f"| {name} | {np.mean(shares):.3f} | {np.mean(hits):.3f} |")
    print(f"| uniform map | {np.mean([m.mean() for m in data.masks]):.3f} | |\n")
    print("Class token's attention on object tokens that (grad * A)^+ drops (grad * A < 0), summed over heads and "
          "images: " + ", ".join(f"block {i + 1}: {float(d / t):.1%}" for i, (d, t) in
                                 enumerate(zip(dropped, kept_total, strict=True))) + "\n", flush=True)
    if args.pairs:
        pictures = localisation.pair_pictures(args.seed, args.pairs)
        paired = {n: ([], [], []) for n in names}
        for picture in pictures:
            for asked in (0, 1):
                maps, _, _ = explain(model, picture.image, picture.labels[asked])
                mine, theirs = picture.masks[asked], picture.masks[1 - asked]
                for name, heat in maps.items():
                    a, b = localisation.heat_share(heat, mine), localisation.heat_share(heat, theirs)
                    paired[name][0].append(a / (a + b) if a + b > 0 else 0.5)
                    paired[name][1].append(localisation.pointing_hit(heat, mine))
                    paired[name][2].append(localisation.pointing_hit(heat, theirs))
        print(f"### Shapes ViT, {len(pictures)} two-shape pictures x 2 targets (seed {args.seed})\n")
        print("| weighting (grad_rollout) / LeGrad | split (asked / both) | pointing asked | pointing other |\n"
              "|---|---|---|---|")
        for name, (splits, hits, misses) in paired.items():
            print(f"| {name} | {np.mean(splits):.3f} | {np.mean(hits):.3f} | {np.mean(misses):.3f} |")
        print()
    print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
