"""Borrowing a layer's output for the length of a `with` block: the only place core registers hooks.

Hooks live on the module object, so every session that shares the model would see them: callers
hold the model's lock while a hook is attached (see models.LoadedModel).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
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
def leaf(module: nn.Module, *, requires_grad: bool, name: str = "", cut: bool = True) -> Iterator[dict[str, Tensor]]:
    """For the block, `module`'s output is swapped for a fresh leaf tensor, kept as `store["leaf"]`: autograd
    stops there, so a backward pass from a score runs down to this layer and no further. After the forward,
    `consumed(store)` is the activation the rest of the network went on with.

    Under grad mode the leaf always records the graph downstream of it (`requires_grad=False` only means the
    caller takes no gradient): that graph is how `consumed` tells an in-place activation from an in-place sum.

    `cut=False`: the graph is not cut; `store["leaf"]` is the output itself (a leaf only where nothing upstream
    needs a gradient), so one backward pass gives the gradient at this layer and at any tensor upstream of it
    (every block's attention, `core.cams`' shared pass with the attention methods).

    Raises:
        LayerNotFoundError: the layer outputs something other than a tensor.
    """
    store: dict[str, Tensor] = {}

    def swap(_module, _args, output):
        if not isinstance(output, Tensor):
            raise LayerNotFoundError(
                f"Layer '{name}' outputs a {type(output).__name__}, not a tensor: choose another layer."
            )
        tracked = requires_grad or (torch.is_grad_enabled() and output.is_floating_point())
        kept = not cut and tracked and output.requires_grad
        fresh = output if kept else output.detach().requires_grad_(tracked)
        store["leaf"] = fresh
        if not tracked:
            return fresh
        passed = fresh.clone()  # a clone lets later in-place ops (ReLU) run on a non-leaf
        store["passed"], store["node"], store["version"] = passed, passed.grad_fn, passed._version
        return passed

    with attached(module, swap):
        yield store


def consumed(store: dict[str, Tensor]) -> Tensor:
    """The layer's output as the rest of the network consumed it, detached, after a forward pass under `leaf`.

    An in-place op that is a function of the output alone (DenseNet-121's `F.relu(norm5, inplace=True)` before
    its classifier, a ReLU(inplace=True) module after a convolution) is part of what the next layer reads: the
    output after it is the activation, as pytorch-grad-cam and TorchCAM see it (they keep a reference that the
    op overwrites). An in-place op that mixes in another tensor (a ResNet block's `out += identity` after its
    last batch norm) makes a different quantity, no longer this layer's output: the output before it is kept.
    The gradient stays the one at the layer's own output (`store["leaf"]`), as the libraries' tensor hooks give.
    """
    fresh = store["leaf"]
    passed = store.get("passed")
    if passed is None or passed._version == store["version"] or not _unary_since(passed.grad_fn, store["node"]):
        return fresh.detach()
    return passed.detach()


def _unary_since(node, origin, limit: int = 64) -> bool:
    """Whether the autograd nodes from `node` back to `origin` each read a single tensor (in-place ReLU, clamp,
    scaling by a number), not a second one (an in-place sum with a skip connection)."""
    for _ in range(limit):
        if node is origin:
            return True
        if node is None or len(node.next_functions) != 1:
            return False
        node = node.next_functions[0][0]
    return False


@contextmanager
def everywhere(model: nn.Module, hook: Callable) -> Iterator[None]:
    """For the block, `hook(path, module, args, output)` runs after every submodule's forward (the root's path
    is ""); every hook is removed even if the block raises."""
    handles = []
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_hook(partial(hook, path)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def count(model: nn.Module) -> int:
    """Number of forward, pre-forward and backward hooks on the model and all its submodules."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )
