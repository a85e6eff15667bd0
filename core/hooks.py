"""Borrowing a layer's output for the length of a `with` block: the only place core registers hooks.

Hooks live on the module object, so every session that shares the model would see them: callers
hold the model's lock while a hook is attached (see models.LoadedModel).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from torch import Tensor, nn

from core.errors import LayerNotFoundError, did_you_mean


def find(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path` (e.g. "layer4" or "classifier.1").

    Raises:
        LayerNotFoundError: with the closest existing name.
    """
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        raise LayerNotFoundError(f"No layer '{path}' in {type(model).__name__}.{did_you_mean(path, names)}") from None


@contextmanager
def attached(module: nn.Module, hook: Callable) -> Iterator[None]:
    """Register a forward hook on `module` for the block; it is removed even if the block raises."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture(model: nn.Module, paths: Sequence[str], *, inputs: bool = False) -> Iterator[dict[str, Tensor]]:
    """Record each layer's output (detached) during forward passes run inside the block.

    With `inputs=True`, record each layer's first positional input instead (the penultimate
    features, for a classifier's final Linear).
    """
    modules = {path: find(model, path) for path in paths}  # fail before touching the model
    captured: dict[str, Tensor] = {}
    handles = []
    try:
        for path, module in modules.items():
            handles.append(module.register_forward_hook(partial(_record, captured, path, inputs)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _record(captured: dict[str, Tensor], path: str, inputs: bool, _module, args, output) -> None:
    value = args[0] if inputs else output
    # A copy: later in-place ops (ReLU(inplace=True), `out += identity`) would overwrite a shared view.
    captured[path] = value.detach().clone() if isinstance(value, Tensor) else value


@contextmanager
def leaf(module: nn.Module, *, requires_grad: bool, name: str = "") -> Iterator[dict[str, Tensor]]:
    """For the block, `module`'s output is swapped for a fresh leaf tensor, kept as `store["leaf"]`: autograd
    stops there, so a backward pass from a score runs down to this layer and no further.

    Raises:
        LayerNotFoundError: the layer outputs something other than a tensor.
    """
    store: dict[str, Tensor] = {}

    def swap(_module, _args, output):
        if not isinstance(output, Tensor):
            raise LayerNotFoundError(
                f"Layer '{name}' outputs a {type(output).__name__}, not a tensor: choose another layer."
            )
        fresh = output.detach().requires_grad_(requires_grad)
        store["leaf"] = fresh
        return fresh.clone() if requires_grad else fresh  # a clone lets later in-place ops (ReLU) run

    with attached(module, swap):
        yield store


def count(model: nn.Module) -> int:
    """Number of forward, pre-forward and backward hooks on the model and all its submodules."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )
