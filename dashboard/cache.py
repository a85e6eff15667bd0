"""The only place the dashboard caches: thin wrappers around core, keyed by plain values.

Image bytes are keyed by their sha256 (`digest`) and passed unhashed (`_data`): st.cache_data
hashes only a sample of large values, and two images one pixel apart must not share a result.
"""

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import streamlit as st

from core import cams, comparison, concepts, faithfulness, features, images, models, predictions, registry, runtime

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


class _Results:
    """A bounded LRU of computed results shared by all sessions (keys are plain values).

    Used instead of st.cache_data where the computation reports progress into page elements,
    which Streamlit forbids inside cached functions.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, compute):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = compute()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


@st.cache_resource
def _cam_results() -> _Results:
    return _Results(64)


def cam(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, method: str, target: int | None,
    layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> cams.CamResult:
    (result,) = cam_grid(name, device, pretrained, key, _data, (method,), target, layer, eigen_smooth, aug_smooth,
                         _on_progress=_on_progress)
    return result


def cam_grid(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, methods: tuple[str, ...],
    target: int | None, layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> list[cams.CamResult]:
    """Several methods at once (the gradient methods share one pass), cached by image sha256 + settings."""
    memo_key = (name, device, pretrained, key, tuple(methods), target, layer, eigen_smooth, aug_smooth)
    return _cam_results().get(memo_key, lambda: cams.compute(
        model(name, device, pretrained), decoded(key, _data).image, methods=list(methods), target=target,
        layer=layer, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, on_progress=_on_progress,
    ))


@st.cache_data(max_entries=32, show_spinner=False)
def faithfulness_scores(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, methods: tuple[str, ...],
    target: int, layer: str | None, eigen_smooth: bool = False,
) -> dict[str, faithfulness.Faithfulness]:
    results = cam_grid(name, device, pretrained, key, _data, methods, target, layer, eigen_smooth)
    heatmaps = {r.method: r.heatmap for r in results}
    return faithfulness.score_heatmaps(model(name, device, pretrained), decoded(key, _data).image, heatmaps, target)


@st.cache_data(max_entries=16, show_spinner="Running every backbone on the image…")
def compared(
    names: tuple[str, ...], device: str, pretrained: bool, key: str, _data: bytes, method: str, common: int | None
) -> comparison.Comparison:
    loaded = [model(n, device, pretrained) for n in names]
    return comparison.compare(loaded, decoded(key, _data).image, method=method, common_target=common)


@st.cache_data(max_entries=16, show_spinner="Guided backpropagation on a private copy of the model…")
def guided(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, target: int | None, layer: str | None
) -> cams.GuidedResult:
    return cams.guided(model(name, device, pretrained), decoded(key, _data).image, target=target, layer=layer)


@st.cache_data(max_entries=16, show_spinner="Factorising the layer's activations into concepts…")
def concepts_of(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int, layer: str | None
) -> concepts.Concepts:
    return concepts.factorize(model(name, device, pretrained), decoded(key, _data).image, k=k, layer=layer)


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


# --- feature maps and architecture ---


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def layer_table(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> list[features.LayerInfo]:
    """Every layer with its output shape for this image."""
    return features.layers(model(name, device, pretrained), decoded(key, _data).image)


@st.cache_data(max_entries=32, show_spinner="Computing feature maps…")
def feature_maps(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, layer: str | None, limit: int
) -> features.FeatureMaps:
    return features.feature_maps(model(name, device, pretrained), decoded(key, _data).image, layer=layer, limit=limit)


@st.cache_data(max_entries=16, show_spinner=False)
def first_conv_filters(name: str, device: str, pretrained: bool) -> features.Filters:
    return features.first_conv_filters(model(name, device, pretrained))


@st.cache_data(max_entries=16, show_spinner="Reading the architecture…")
def architecture(name: str, device: str, pretrained: bool) -> features.Architecture:
    """Modules, output shapes for a grey image of the model's input size, parameter counts."""
    return features.architecture(model(name, device, pretrained))
