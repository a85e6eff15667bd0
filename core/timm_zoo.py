"""Every timm pretrained config (`timm.list_models(pretrained=True)`) as a backbone spec, from its `pretrained_cfg`.

Mean, std, input size, crop percentage (-> resize), interpolation, `fixed_input_size`, classifier (-> head),
number of classes and label set come from the config; ImageNet label sets are named through
`timm.data.ImageNetInfo` (1k, 12k, 21k, 22k), others are numbered with a note. Parameters, multiply-adds, family
and prefix tokens come from assets/catalogue.json (read on the meta device by scripts/build_catalogue.py, or here
when the file has no row). Weights download through timm into the Hugging Face hub cache.

Names: `timm/ARCH.TAG` (canonical), `timm/ARCH` (timm's default tag), or either without the prefix when no
torchvision builder or registered backbone has that name (the registry decides that).
"""

import math
from functools import cache, partial

from torch import nn

from core import catalogue, network_facts
from core.backbone_spec import BackboneSpec, CatalogueEntry
from core.errors import WeightsUnavailableError
from core.weights_cache import HUB_FILES, cache_folder, hub_weights_path

SOURCE = "timm"
PREFIX = "timm/"
DEFAULT_CROP_PCT = 0.875  # timm.data's DEFAULT_CROP_PCT, for a config without one


@cache
def pretrained_names() -> frozenset[str]:
    """Every pretrained config, as "arch.tag"."""
    import timm

    return frozenset(timm.list_models(pretrained=True))


def canonical(name: str) -> str | None:
    """ "arch.tag" for `name` ("timm/arch.tag", "timm/arch", "arch.tag" or "arch"), None when timm has no such
    pretrained config. A bare arch resolves to timm's default tag for it."""
    bare = name.removeprefix(PREFIX)
    if not bare or any(c.isspace() for c in bare) or len(bare) > 200:
        return None
    names = pretrained_names()
    if bare in names:
        return bare
    if "." in bare:
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(bare, allow_unregistered=False) if _is_arch(bare) else None
    if cfg is None or not cfg.tag:
        return None
    tagged = f"{bare}.{cfg.tag}"
    return tagged if tagged in names else None


def _is_arch(name: str) -> bool:
    import timm

    return timm.is_model(name)


def config(name: str):
    """timm's PretrainedCfg of "arch.tag"."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)


def classifier(cfg) -> str:
    return network_facts.classifier(cfg)


@cache
def _imagenet_names(subset: str) -> tuple[str, ...]:
    """The first lemma of each class of an ImageNet subset ("tench" of "tench, Tinca tinca"), in timm's order."""
    from timm.data import ImageNetInfo

    return tuple(text.split(", ")[0] for text in ImageNetInfo(subset).label_descriptions())


def label_set(cfg) -> str:
    """The config's label set: an ImageNet subset timm names ("imagenet-1k", "imagenet-12k", ...), "numbered"
    (outputs without names) or "none" (no classifier)."""
    from timm.data import infer_imagenet_subset

    if not cfg.num_classes:
        return "none"
    return infer_imagenet_subset(cfg) or "numbered"


def labels(cfg) -> tuple[tuple[str, ...], str, str]:
    """(categories, label set, note) of a config."""
    count, subset = cfg.num_classes or 0, label_set(cfg)
    if subset == "none":
        return (), subset, "No classifier (num_classes 0): features only, for embeddings and feature maps."
    if subset != "numbered":
        names = _imagenet_names(subset)
        if len(names) == count:
            return names, subset, ""
    return (tuple(f"class {i}" for i in range(count)), "numbered",
            f"timm gives no names for these {count} outputs: the classes are numbered.")


def facts(name: str) -> dict:
    """The catalogue's row for "arch.tag", or the same facts read from a meta-device build when it has none."""
    row = catalogue.row(SOURCE, name)
    if row is None:
        row = dict(zip(catalogue.TIMM_COLUMNS, catalogue.timm_row(name, network_facts.timm_facts(name)), strict=True))
    return row


def spec(name: str) -> BackboneSpec:
    """The spec of pretrained config "arch.tag", from its metadata and the catalogue (nothing is built)."""
    cfg = config(name)
    row = facts(name)
    height, width = cfg.input_size[1:]
    categories, label_set, note = labels(cfg)
    notes = [note] if note else []
    heads = cfg.classifier if isinstance(cfg.classifier, (tuple, list)) else ()
    if len(heads) > 1:
        notes.append(f"{len(heads)} classifiers ({', '.join(heads)}) whose logits are averaged; the head here is "
                     f"'{heads[0]}'.")
    if cfg.crop_mode and cfg.crop_mode != "center":
        notes.append(f"timm preprocesses with crop mode '{cfg.crop_mode}'; here the shorter side is resized, then "
                     "the centre cropped.")
    return BackboneSpec(
        name=PREFIX + name,
        title=name,
        source=SOURCE,
        build=partial(build, name),
        head=row["head"] or classifier(cfg),
        categories=categories,
        weights_file=None if cfg.hf_hub_id or not cfg.url else hub_weights_path(cfg.url),
        weights_url=cfg.url or None,
        input_size=(height, width),
        resize_size=int(math.floor(min(height, width) / (cfg.crop_pct or DEFAULT_CROP_PCT))),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        interpolation=cfg.interpolation or "bicubic",
        fixed_size=bool(cfg.fixed_input_size),
        params=row["params"],
        gmacs=row["gmacs"],
        family=row["family"],
        prefix_tokens=row["prefix_tokens"],
        label_set=label_set,
        note=" ".join(notes),
        hub_id=cfg.hf_hub_id or None,
    )


def hub_files(cfg) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES


def entry(name: str) -> CatalogueEntry:
    """The catalogue record of "arch.tag" from its config and stored facts, without building its spec's labels."""
    cfg = config(name)
    facts = catalogue.row(SOURCE, name) or {"params": None, "gmacs": None, "family": ""}
    return CatalogueEntry(
        name=PREFIX + name, title=name, source=SOURCE, family=facts["family"], params=facts["params"],
        gmacs=facts["gmacs"], top1=None, input_size=tuple(cfg.input_size[1:]), label_set=label_set(cfg),
        num_classes=cfg.num_classes or 0, hub_id=cfg.hf_hub_id or None,
        weights_file=None if cfg.hf_hub_id or not cfg.url else hub_weights_path(cfg.url),
    )


def build(name: str, pretrained: bool) -> nn.Module:
    """timm's network for "arch.tag": random weights, or its pretrained weights through timm (the hub cache).

    Raises:
        WeightsUnavailableError: offline and not cached; names the hub repo, the file and the cache folder.
    """
    import timm

    if not pretrained:
        return timm.create_model(name, pretrained=False)
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as error:  # offline mode, connection errors, missing entries, partial files
        cfg = config(name)
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        if cfg.hf_hub_id:
            files = " or ".join(f"'{f}'" for f in hub_files(cfg))
            where = (f"timm downloads the file {files} of the Hugging Face hub repo '{cfg.hf_hub_id}' into the cache "
                     f"folder {cache_folder()}. On a machine with internet run `hf download {cfg.hf_hub_id}` and copy "
                     f"that cache folder here")
        else:
            path = hub_weights_path(cfg.url)
            where = f"Download {cfg.url} and put the file '{path.name}' in the folder {path.parent}"
        raise WeightsUnavailableError(
            f"Pretrained weights for {PREFIX}{name} are not on this machine and could not be downloaded ({reason}). "
            f"{where}, or choose 'architecture only (random weights)'."
        ) from None
