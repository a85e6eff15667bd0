"""Where pretrained weights live on this machine: torch hub's checkpoints folder (torchvision, timm's URL-only
configs) and the Hugging Face hub cache (timm). Looking never touches the network."""

from pathlib import Path

import torch

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repo, in order


def hub_weights_path(url: str) -> Path:
    """Where torch.hub keeps (or expects) the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def cache_folder() -> Path:
    """The Hugging Face hub cache (HF_HUB_CACHE / HF_HOME), where timm keeps downloaded weights."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(hub_id: str, files: tuple[str, ...] = HUB_FILES) -> Path | None:
    """The weights of hub repo `hub_id` ("owner/name", optionally "@revision") in the cache, None when absent."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for filename in files:
        found = try_to_load_from_cache(repo, filename, revision=revision or None, cache_dir=cache_folder())
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def present(hub_id: str | None, weights_file: Path | None) -> bool:
    """Whether pretrained weights are here: in the Hugging Face cache for a hub repo, else the file."""
    if hub_id:
        return cached_file(hub_id) is not None
    return weights_file is not None and weights_file.is_file()
