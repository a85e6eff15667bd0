"""The only place the dashboard caches: thin wrappers around core, keyed by plain values.

Image bytes are keyed by their sha256 (`digest`) and passed unhashed (`_data`): st.cache_data
hashes only a sample of large values, and two images one pixel apart must not share a result.
"""

import hashlib
from pathlib import Path

import streamlit as st

from core import cams, features, images, models, predictions, registry, runtime

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def model(name: str, device: str, pretrained: bool) -> models.LoadedModel:
    """One shared, frozen model per (name, device, weights). core serialises its use with model.lock."""
    return models.load(name, device=device, pretrained=pretrained)


@st.cache_data(max_entries=32, show_spinner=False)
def decoded(key: str, _data: bytes) -> images.DecodedImage:
    return images.decode(_data)


@st.cache_data(max_entries=64, show_spinner="Predicting…")
def top_k(name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int = 5) -> list[predictions.Prediction]:
    return predictions.predict(model(name, device, pretrained), decoded(key, _data).image, top_k=k)


@st.cache_data(max_entries=64, show_spinner=False)
def cam(
    name: str,
    device: str,
    pretrained: bool,
    key: str,
    _data: bytes,
    method: str,
    target: int | None,
    layer: str | None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    _on_progress=None,
) -> cams.CamResult:
    (result,) = cams.compute(
        model(name, device, pretrained), decoded(key, _data).image, methods=[method], target=target,
        layer=layer, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, on_progress=_on_progress,
    )
    return result


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def cam_layers(name: str, device: str, pretrained: bool) -> list[str]:
    return features.cam_layers(model(name, device, pretrained))


@st.cache_data
def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.jpg"))


@st.cache_data
def sample_bytes(name: str) -> bytes:
    return (SAMPLES / f"{name}.jpg").read_bytes()


def devices() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] if runtime.resolve_device("auto").type == "cuda" else [])


def device_label(device: str) -> str:
    return runtime.describe_device(runtime.resolve_device(device))


def specs() -> dict[str, registry.BackboneSpec]:
    return {name: registry.get(name) for name in registry.names()}


def weights_here(name: str) -> bool:
    return models.weights_available(name)
