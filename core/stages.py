"""The stages of a network: one record per stage, the only definition of "stage" in the project.

A backbone's spec names the layers that end its stages, shallow to deep (`BackboneSpec.stages`). `of`
reads the network's own module order once and gives each stage the modules and parameters it owns: a
stage owns every parameter registered after the previous stage's last module, up to its own last
module, so the stem goes with the first stage, a layer between two stages with the later one, and
anything after the last stage (VGG's first two Linear layers, ViT's last block and final norm) with the
last one. The head is not a stage: `head` is its record.

Every page that says "stage" reads these records: fine-tuning's "last N stages" (`training`), the Learn
page's transfer plans and depth layers (`lessons`), the parameters-per-stage chart
(`features.architecture`), and the sanity cascade (`sanity`). CAM through depth computes a map at
each stage's `name`, the layer that ends it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from core.errors import InvalidInputError
from core.models import LoadedModel

BACKBONE = "backbone"  # the one stage of a network whose spec names none


@dataclass(frozen=True)
class Stage:
    """A run of layers that train, freeze and randomise together."""

    name: str  # the layer that ends it (an entry of spec.stages), or BACKBONE
    modules: tuple[str, ...]  # the modules it covers, e.g. ("conv_stem", "bn1", "blocks.0")
    parameters: tuple[str, ...]  # names of the parameters it owns, as `named_parameters()` spells them
    params: int  # scalars in those parameters


def inside(name: str, path: str) -> bool:
    """Whether dotted `name` is `path` or lies under it ("" is the root, which holds everything)."""
    return path == "" or name == path or name.startswith(path + ".")


def of(model: LoadedModel) -> tuple[Stage, ...]:
    """The stages of a loaded model's backbone (its head left out), shallow to deep; only read, under its lock."""
    with model.lock:
        return split(model.module, model.spec.stages, model.spec.head)


def split(module: nn.Module, ends: Sequence[str], head: str) -> tuple[Stage, ...]:
    """The stages of `module` whose last layers are `ends`, outside the head at path `head`, shallow to deep.

    Ends that are missing or inside the head are skipped, and so are stages that own no parameters.
    No ends: one stage, BACKBONE, with every parameter outside the head.
    """
    named = [name for name, _ in module.named_modules()]
    position = {name: i for i, name in enumerate(named)}
    last = []
    for end in ends:
        if (head and inside(end, head)) or end not in position:
            continue
        last.append((max(i for i, name in enumerate(named) if inside(name, end)), end))
    last.sort()
    if not last:
        last = [(len(named), BACKBONE)]
    owner: dict[str, str] = {}  # parameter name -> the end of its stage, or "" inside the head
    counts: dict[str, int] = {}
    for name, parameter in module.named_parameters():
        where = name.rpartition(".")[0]
        if head and inside(where, head):
            owner[name] = ""
            continue
        at = position.get(where, len(named))
        owner[name] = next((end for index, end in last if at <= index), last[-1][1])
        counts[name] = parameter.numel()
    cover = _cover(owner)
    return tuple(
        Stage(end, tuple(dict.fromkeys(cover[n] for n in counts if owner[n] == end)),
              tuple(n for n in counts if owner[n] == end), sum(c for n, c in counts.items() if owner[n] == end))
        for _, end in last if end in owner.values()
    )


def _cover(owner: dict[str, str]) -> dict[str, str]:
    """For each parameter, the outermost module holding it whose parameters all belong to the same stage.

    That names a stage by whole blocks (ViT's `encoder_layer_9`, not its four parts) and a parameter
    owned by the root by its own name (ViT's `class_token`).
    """
    stages_under: dict[str, set[str]] = {}
    for name, end in owner.items():
        parts = name.split(".")[:-1]
        for depth in range(1, len(parts) + 1):
            stages_under.setdefault(".".join(parts[:depth]), set()).add(end)
    cover = {}
    for name, end in owner.items():
        parts = name.split(".")[:-1]
        prefixes = (".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        cover[name] = next((p for p in prefixes if stages_under[p] == {end}), name)
    return cover


def head(module: nn.Module, path: str) -> Stage:
    """The head at `path` as a record of the same shape (no parameters if `module` has no such layer)."""
    names = [(name, p.numel()) for name, p in module.named_parameters() if inside(name.rpartition(".")[0], path)]
    present = any(name == path for name, _ in module.named_modules())
    return Stage(path, (path,) if present else (), tuple(name for name, _ in names), sum(n for _, n in names))


def last(stages: Sequence[Stage], count: int | None) -> tuple[Stage, ...]:
    """The `count` deepest of `stages` (None: all of them).

    Raises:
        InvalidInputError: `count` is negative or larger than the number of stages.
    """
    if count is None:
        return tuple(stages)
    if count < 0 or count > len(stages):
        raise InvalidInputError(f"This backbone has {len(stages)} stages; cannot unfreeze the last {count}. "
                                f"Choose 0 to {len(stages)}, or all.")
    return tuple(stages[len(stages) - count:])
