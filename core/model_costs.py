"""What a backbone costs, whatever its speed: multiply-adds per image and the size of its weights.

Compute is counted with `torch.utils.flop_counter` on the meta device, so no kernel runs and nothing is
estimated. Benchmarks, comparison and the CLI read these numbers; none of them times anything here.
"""

import torch

from core import registry
from core.errors import InvalidInputError
from core.models import LoadedModel

WEIGHTS_FILE = "weights file on disk"
STATE_DICT = "fp32 state dict (no weights file here)"


def gmacs(model: LoadedModel, *, input_size: int | tuple[int, int] | None = None) -> float:
    """Multiply-adds per image (batch 1) at `input_size` (default: the spec's), in billions.

    Counted with torch.utils.flop_counter on the meta device (no kernel runs, so this takes well
    under a second) and halved: the counter counts two FLOPs per multiply-add, while torchvision's
    `_ops` counts one. Cached per backbone name and size. For the length of the count the module's
    parameters are swapped for meta tensors (torch.func.functional_call), under `model.lock`.
    """
    size = input_size_of(model.spec, input_size)
    with model.lock:
        return _count(model.name, size, model)


def _counted_gmacs(name: str, pretrained: bool, model: LoadedModel) -> float:
    """Multiply-adds at the spec's input size (kept for callers of the earlier API)."""
    return gmacs(model)


_COUNTED: dict[tuple[str, tuple[int, int]], float] = {}  # the architecture decides, not weights or device


def _count(name: str, size: tuple[int, int], model: LoadedModel) -> float:
    if (name, size) not in _COUNTED:
        try:
            _COUNTED[(name, size)] = _count_on_meta(model.module, size)
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel, or a size that cannot run
            _COUNTED[(name, size)] = _count_on_device(model, size)
    return _COUNTED[(name, size)]


def _count_on_meta(module: torch.nn.Module, size: tuple[int, int]) -> float:
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    empty = {key: torch.empty_like(value, device="meta")
             for key, value in [*module.named_parameters(), *module.named_buffers()]}
    counter = FlopCounterMode(display=False)
    # On meta, nn.MultiheadAttention takes its composite path: the CPU fast path
    # (torch._native_multi_head_attention) is invisible to the counter and undercounts ViT by a third.
    with torch.inference_mode(), counter:
        functional_call(module, empty, (torch.empty(1, 3, *size, device="meta"),), strict=False)
    return counter.get_total_flops() / 2 / 1e9


def _count_on_device(model: LoadedModel, size: tuple[int, int]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # see _count_on_meta
    try:
        with torch.inference_mode(), counter:
            model.module(torch.zeros(1, 3, *size, device=model.device))
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as error:
        raise cannot_run(model, size, error) from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return counter.get_total_flops() / 2 / 1e9


def weights_bytes(model: LoadedModel) -> tuple[int, str]:
    """Size of the weights: the file on disk when present, else the state dict stored as fp32.

    Returns (bytes, WEIGHTS_FILE or STATE_DICT).
    """
    path = model.spec.weights_file
    if path is not None and path.is_file():
        return path.stat().st_size, WEIGHTS_FILE
    state = model.module.state_dict()
    total = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in state.values())
    return total, STATE_DICT


def weights_mib(model: LoadedModel) -> tuple[float, str]:
    """(weights_bytes in MiB, its kind)."""
    size, kind = weights_bytes(model)
    return size / 2**20, kind


def input_size_of(spec: registry.BackboneSpec, input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(height, width): the spec's own for None, a square for an int."""
    if input_size is None:
        return tuple(spec.input_size)
    if isinstance(input_size, int):
        return (input_size, input_size)
    return (int(input_size[0]), int(input_size[1]))


def cannot_run(model: LoadedModel, size: tuple[int, int], error: RuntimeError) -> InvalidInputError:
    """An InvalidInputError for a first pass that failed: usually an input too small for the network's pooling."""
    reason = (str(error).splitlines() or [type(error).__name__])[0].rstrip(". ")
    return InvalidInputError(
        f"{model.spec.title} cannot run at {size[0]}x{size[1]} ({reason}). Choose a larger input size."
    )
