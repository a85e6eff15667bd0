"""Top-k classes for images."""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from PIL import Image

from core import preprocessing
from core.errors import DeviceError, InvalidInputError
from core.models import LoadedModel
from core.runtime import autocast_dtype


@dataclass(frozen=True)
class Prediction:
    index: int  # class index in the model's categories
    label: str
    prob: float  # softmax probability in [0, 1]


def predict(model: LoadedModel, image: Image.Image, *, top_k: int = 5) -> list[Prediction]:
    """The `top_k` most probable classes for one image, most probable first."""
    return predict_tensor(model, preprocessing.to_tensor(image, model.spec), top_k=top_k)[0]


def predict_tensor(model: LoadedModel, batch: torch.Tensor, *, top_k: int = 5) -> list[list[Prediction]]:
    """Top-k for each image of a preprocessed (B, 3, H, W) batch."""
    classes = len(model.categories)
    if not 1 <= top_k <= classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes}, got {top_k}.")
    return top(model, probabilities(model, batch), top_k=top_k)


def top(model: LoadedModel, probs: torch.Tensor, *, top_k: int = 5) -> list[list[Prediction]]:
    """Top-k for each row of (B, classes) probabilities (from `probabilities`, or cams.compute_top1)."""
    classes = len(model.categories)
    if not 1 <= top_k <= classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes}, got {top_k}.")
    values, indices = probs.topk(top_k, dim=1)
    return [
        [Prediction(int(i), model.categories[int(i)], float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(values, indices, strict=True)
    ]


def probabilities(model: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """(B, classes) float32 softmax probabilities on the CPU. Holds the model's lock."""
    dtype = autocast_dtype(model.device)
    autocast = torch.autocast(model.device.type, dtype=dtype) if dtype is not None else nullcontext()
    batch = batch.to(model.device)
    if model.device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    try:
        with model.lock, torch.inference_mode(), autocast:
            logits = model.module(batch)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise DeviceError("The GPU ran out of memory for this input. Try a smaller batch or the CPU.") from None
    return logits.float().softmax(dim=1).cpu()
