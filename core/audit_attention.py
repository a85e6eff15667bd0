"""The dataset audit's attention maps on a transformer: rollout, gradient-weighted rollout and LeGrad for a batch.

`core.audit.explain_batch` calls `batch_pass` for an attention method (`Method.attention`) where it calls the
shared CAM pass for the Grad-CAM family. One forward pass of the B images records every block's attention
(`attention.recording`) and, through a hook on the head's input, the penultimate features; the logits of that
same pass give the predictions. Gradient-weighted rollout adds one backward pass from sum_i y[i, target_i] to
every block's attention (the images are independent in eval mode, so each image's gradient is its own), LeGrad
its block-local backward passes for the whole batch at once (`attention.batch_grids`), and rollout none. Each
image's token-grid map is then normalised and resized as `cams.compute` does for one image
(`attention.normalised_maps`) and shrunk to the audit's 28 x 28 float16 map, so a map does not depend on the
batch it was computed in (tested against `cams.compute`).

Holds the model's lock for the pass (`attention.recording`); nothing stays patched or hooked afterwards, also
when the pass raises.
"""

from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor

from core import attention, hooks
from core.map_statistics import shrink
from core.models import LoadedModel

LAYER = "every block"  # what the audit records as the layer of an attention method (as cams.compute does)


def batch_pass(model: LoadedModel, method: str, batch: Tensor, truth: Tensor | None, dtype: torch.dtype | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One normalised (B, 3, S, S) batch on the model's device -> (features (B, D), logits (B, classes), the
    explained classes (B,), (B, side, side) float16 maps). `truth`: the classes to explain (None: the predicted
    ones); `dtype`: the forward pass's autocast dtype (None: fp32)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("The attention audit needs gradients; call it outside torch.inference_mode().")
    gradients = attention.METHODS[method].uses_gradients
    autocast = torch.autocast(batch.device.type, dtype=dtype) if dtype is not None else nullcontext()
    head = model.spec.head
    with attention.recording(model, outputs=method == "legrad") as records, torch.set_grad_enabled(gradients):
        with hooks.capture(model.module, [head], inputs=True) as captured, autocast:
            logits = model.module(batch)
        # read now: LeGrad's layer scores run the head again
        features = captured[head].float().flatten(1).cpu().numpy()
        explained = logits.detach().argmax(dim=1) if truth is None else truth.to(logits.device)
        targets = explained.cpu().numpy().astype(np.int64)
        grads = None
        if method == "grad_rollout":
            score = logits.gather(1, explained.view(-1, 1)).sum()
            grads = torch.autograd.grad(score, [r.weights for r in records])
        with autocast if method == "legrad" else nullcontext():  # its layer scores run the head as the pass did
            grids = attention.batch_grids(model, records, method, targets.tolist(), grads)
    height, width = batch.shape[-2:]
    raw = np.stack([attention.normalised_maps({method: (grid, 0.0)}, height, width)[method][0] for grid in grids])
    return features, logits.detach().float().cpu().numpy(), targets, shrink(raw)
