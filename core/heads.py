"""Classification heads and the module surgery that installs them.

`Head` describes a head (a Linear, or an MLP around one) and where it sits; `head_of` reads it back
from a network; `install` puts a module at a dotted path; `architecture` rebuilds an untrained network
(a registered backbone or a baseline) with a head, which is how an export is loaded back.
"""

from dataclasses import dataclass

from torch import nn

from core import hooks, registry
from core.baselines import BASELINES
from core.errors import InvalidInputError, did_you_mean
from core.models import LoadedModel

HEADS = ("linear", "mlp")


class MLPHead(nn.Sequential):
    """Linear -> ReLU -> Dropout -> Linear; the final Linear is `[3]`."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))


@dataclass(frozen=True)
class Head:
    """A classification head and where it sits: `slot` is the path of the backbone's final Linear it replaces."""

    kind: str  # "linear" or "mlp"
    slot: str
    in_features: int
    classes: int
    hidden: int = 0  # mlp only
    dropout: float = 0.0  # mlp only

    @property
    def path(self) -> str:
        """The path of the head's final Linear (what `BackboneSpec.head` names)."""
        return self.slot if self.kind == "linear" else f"{self.slot}.3"

    @property
    def params(self) -> int:
        if self.kind == "linear":
            return (self.in_features + 1) * self.classes
        return (self.in_features + 1) * self.hidden + (self.hidden + 1) * self.classes

    def build(self) -> nn.Module:
        if self.kind == "linear":
            return nn.Linear(self.in_features, self.classes)
        return MLPHead(self.in_features, self.hidden, self.classes, self.dropout)


def head_of(model: LoadedModel) -> Head:
    """The head of `model`, read from its module: an MLPHead around `spec.head`, or the Linear itself."""
    parent_path, _, _ = model.spec.head.rpartition(".")
    parent = hooks.find(model.module, parent_path) if parent_path else None
    if isinstance(parent, MLPHead):
        return Head("mlp", parent_path, parent[0].in_features, parent[3].out_features, parent[0].out_features,
                    float(parent[2].p))
    linear = hooks.find(model.module, model.spec.head)
    if not isinstance(linear, nn.Linear):
        raise InvalidInputError(f"{model.spec.title}'s head '{model.spec.head}' is a {type(linear).__name__}, not a Linear.")
    return Head("linear", model.spec.head, linear.in_features, linear.out_features)


def install(module: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` at dotted `path` in `module` (in place)."""
    parent_path, _, name = path.rpartition(".")
    parent = hooks.find(module, parent_path) if parent_path else module
    hooks.find(module, path)  # the slot must exist
    setattr(parent, name, new)


def architecture(base: str, head: Head) -> nn.Module:
    """An untrained network: `base` (a registered backbone or a baseline) with `head` installed. No download.

    Raises:
        InvalidInputError: an unknown base, or a head that does not fit it.
    """
    if base in BASELINES:
        baseline = BASELINES[base]
        if head.kind != "linear" or head.slot != baseline.head:
            raise InvalidInputError(f"{baseline.title} has a linear head at '{baseline.head}', not a {head.kind} head "
                                    f"at '{head.slot}'.")
        module = baseline.build(head.classes)
        expected = hooks.find(module, baseline.head).in_features
    else:
        if not registry.known(base):
            known = [*registry.names(), *BASELINES]
            raise InvalidInputError(f"Unknown backbone '{base}'.{did_you_mean(base, known)} Known: {', '.join(known)}.")
        spec = registry.get(base)
        if head.slot != spec.head:
            raise InvalidInputError(f"{spec.title}'s head sits at '{spec.head}', not at '{head.slot}'.")
        module = spec.build(False)
        try:
            old = module.get_submodule(head.slot)
        except AttributeError:
            raise InvalidInputError(f"{base} has no layer '{head.slot}' to hold the head.") from None
        if not isinstance(old, nn.Linear):
            raise InvalidInputError(f"{base}'s '{head.slot}' is a {type(old).__name__}, not the final Linear.")
        expected = old.in_features
        install(module, head.slot, head.build())
    if head.in_features != expected:
        raise InvalidInputError(f"The head takes {head.in_features} features, but {base} gives {expected}.")
    return module


def final_linear(model: LoadedModel) -> nn.Linear:
    """The final Linear of `model` (at `spec.head`), the layer a new head replaces."""
    layer = hooks.find(model.module, model.spec.head)
    if not isinstance(layer, nn.Linear):
        raise InvalidInputError(f"{model.spec.title}'s head '{model.spec.head}' is a {type(layer).__name__}, not a "
                                "Linear: it cannot be replaced.")
    return layer

