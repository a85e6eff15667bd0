"""The dashboard's caches of models, images, heatmaps, features and lessons: thin wrappers around core, keyed by
plain values (dashboard.dataset_cache holds those of labelled sets and training runs; background work that
fills some of them is dashboard.jobs).

Image bytes are keyed by their sha256 (`digest`) and passed unhashed (`_data`): st.cache_data
hashes only a sample of large values, and two images one pixel apart must not share a result.

Whatever holds pictures, heatmaps, features or models is kept under a byte budget (dashboard.budget):
`data_budget()` ($VISIONLENS_CACHE_MB) and `model_budget()` ($VISIONLENS_MODEL_CACHE_MB). st.cache_data is
left to small records (predictions, scores, layer lists), bounded by their entry counts. Pages show pictures
at `images.DISPLAY_SIDE` (`picture`, `overlay_jpeg`); models still see the whole decoded image (`decoded`).
"""

import contextlib
import hashlib
from pathlib import Path

import streamlit as st

from core import (
    benchmarks,
    cams,
    comparison,
    concepts,
    convolution,
    features,
    gradcam,
    images,
    lessons,
    models,
    own_models,
    predictions,
    preprocessing,
    queueing,
    registry,
    runtime,
    sanity,
    user_weights,
)
from dashboard import budget as _budget

runtime.configure_threads()  # before the first forward pass (idempotent): every page imports this module
SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Plain process-wide objects, not st.cache_resource: background threads and deferred downloads (no script
# context) use them too.
_DATA_BUDGET = _budget.Budget("data", _budget.megabytes_from_env("VISIONLENS_CACHE_MB", _budget.DEFAULT_DATA_MB))
_MODEL_LIMIT = _budget.megabytes_from_env("VISIONLENS_MODEL_CACHE_MB", _budget.DEFAULT_MODEL_MB)
_MODEL_BUDGET = _budget.Budget("models", _MODEL_LIMIT, largest=_MODEL_LIMIT // 2)


def data_budget() -> _budget.Budget:
    """Pictures, heatmaps, overlays, features and results of every session: $VISIONLENS_CACHE_MB in all."""
    return _DATA_BUDGET


def model_budget() -> _budget.Budget:
    """Loaded models and private copies of them: $VISIONLENS_MODEL_CACHE_MB in all."""
    return _MODEL_BUDGET


def spinner(text: str):
    """A spinner around a computation in a page's script thread; nothing in other threads."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return st.spinner(text) if get_script_run_ctx(suppress_warning=True) is not None else contextlib.nullcontext()


@_budget.memoize(model_budget, around=lambda: spinner("Loading the model…"))
def model(name: str, device: str, pretrained: bool) -> models.LoadedModel:
    """One shared, frozen model per (name, device, weights). core serialises its use with model.lock."""
    return models.load(name, device=device, pretrained=pretrained)


@_budget.memoize(data_budget, max_entries=4)
def decoded(key: str, _data: bytes) -> images.DecodedImage:
    """The whole decoded image (up to images.MAX_SIDE). A 12-MP photo is 48 MB here, so only the last few are
    kept (for the burst of calls right after an upload): pages show `picture`, models get `model_input`."""
    return images.decode(_data)


@_budget.memoize(data_budget)
def model_input(name: str, key: str, _data: bytes):
    """The whole image at the input size of backbone `name` (preprocessing.resize), as a small picture.

    A model fed this computes exactly what it computes from the whole decoded image (preprocessing leaves a
    picture already at the input size as it is), without resizing 12 MP again on every call."""
    whole = decoded(key, _data).image
    spec = registry.get(name)
    small = preprocessing.resize(whole, spec)
    if preprocessing.input_size(small.size, spec) != (small.height, small.width):  # never seen; stay exact
        return whole
    return small


@_budget.memoize(data_budget)
def picture(key: str, _data: bytes) -> images.Picture:
    return images.picture(decoded(key, _data))


def display_size(key: str, _data: bytes) -> tuple[int, int]:
    """(width, height) the pages show this image at, and at which they compute its heatmaps."""
    return picture(key, _data).image.size


@_budget.memoize(data_budget)
def overlay_jpeg(key: str, _data: bytes, _result: cams.CamResult, result_key: tuple, opacity: float,
                 colormap: str) -> bytes:
    """JPEG of a heatmap (at display size) over the picture, keyed by the result's cache key + settings: a
    slider move recomputes one blend of a screen-sized picture, and moving back costs nothing."""
    return images.to_jpeg(_result.overlay(picture(key, _data).image, opacity=opacity, colormap=colormap))


def full_overlay_png(key: str, _data: bytes, result: cams.CamResult, opacity: float, colormap: str) -> bytes:
    """PNG of the overlay at the decoded image's full size (the download): the heatmap made again from the
    result's raw map at that size, exactly as an explanation of the whole image makes it. Not cached."""
    whole = decoded(key, _data).image
    full = result.resized(*whole.size)
    return images.to_png(full.overlay(whole, opacity=opacity, colormap=colormap), compress_level=1)


@st.cache_data(max_entries=64, show_spinner="Predicting…")
def top_k(name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int = 5) -> list[predictions.Prediction]:
    loaded = model(name, device, pretrained)  # at most k: the Shapes models know 4 classes
    return predictions.predict(loaded, model_input(name, key, _data), top_k=min(k, len(loaded.categories)))


def results(name: str, *, models: bool = False, max_entries: int | None = None) -> _budget.Store:
    """Computed results shared by all sessions (keys are plain values), in the data budget or the models' one.

    Used instead of st.cache_data where the computation reports progress into page elements,
    which Streamlit forbids inside cached functions.
    """
    return _budget.Store(model_budget() if models else data_budget(), name, max_entries=max_entries)


@st.cache_resource(show_spinner=False)
def heavy_gate() -> queueing.SlotQueue:
    """The process-wide bounded queue every heavy computation goes through (Score-CAM, dataset features,
    t-SNE, benchmarks, training): $VISIONLENS_HEAVY_SLOTS at once, else half the cores. Here, beside the CAMs
    that take it in the script thread; dashboard.jobs' background jobs enter it too."""
    return queueing.SlotQueue()


def heavy(label: str, _on_wait=None) -> queueing.Ticket:
    """Block the calling thread until it holds a heavy-work slot (a context manager releases it).

    `_on_wait(ticket)` runs about 4 times a second while queued: in a script thread an element update there
    also lets Streamlit interrupt the wait on a rerun, and the ticket then leaves the queue.
    """
    return heavy_gate().acquire(label, on_wait=_on_wait)


def cam_results() -> _budget.Store:
    return results("cams")


def cam(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, method: str, target: int | None,
    layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> cams.CamResult:
    """One method's result, its heatmap at `display_size` (`CamResult.resized` makes the full size)."""
    (result,) = cam_grid(name, device, pretrained, key, _data, (method,), target, layer, eigen_smooth, aug_smooth,
                         _on_progress=_on_progress)
    return result


def cam_key(name: str, device: str, pretrained: bool, key: str, methods: tuple[str, ...], target: int | None,
            layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False) -> tuple:
    """The cache key of cam_grid's result for these settings (overlay_jpeg keys its pictures by it)."""
    return (name, device, pretrained, key, tuple(methods), target, layer, eigen_smooth, aug_smooth)


def cam_grid(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, methods: tuple[str, ...],
    target: int | None, layer: str | None, eigen_smooth: bool = False, aug_smooth: bool = False, _on_progress=None,
) -> list[cams.CamResult]:
    """Several methods at once (the gradient methods share one pass), cached by image sha256 + settings.

    The model explains the whole decoded image; the heatmaps are made at `display_size`."""
    memo_key = cam_key(name, device, pretrained, key, methods, target, layer, eigen_smooth, aug_smooth)

    def run() -> list[cams.CamResult]:
        return cams.compute(
            model(name, device, pretrained), model_input(name, key, _data), methods=list(methods), target=target,
            layer=layer, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, on_progress=_on_progress,
            size=display_size(key, _data),
        )

    store = cam_results()
    slow = [cams.METHODS[m].title for m in methods if m in cams.METHODS and cams.METHODS[m].slow]
    if not slow:
        return store.get(memo_key, run)
    kept = store.peek(memo_key)
    if kept is not None:
        return kept
    # One pass per channel: a heavy-work slot first, the queue's state in the progress bar meanwhile. The slot is
    # taken before the store's compute-once wait, so sessions asking for the same map queue visibly ("Queued: N
    # ahead of you") and, when their turn comes, find it already computed.
    on_wait = (lambda ticket: _on_progress(0.0, ticket.describe())) if _on_progress else None
    with heavy(", ".join(slow), on_wait):
        return store.get(memo_key, run)


@_budget.memoize(data_budget, around=lambda: spinner("Running every backbone on the image…"))
def compared(
    names: tuple[str, ...], device: str, pretrained: bool, key: str, _data: bytes, method: str, common: int | None,
    transformer_method: str | None = None, faithful: bool = False,
) -> comparison.Comparison:
    loaded = [model(n, device, pretrained) for n in names]
    return comparison.compare(loaded, decoded(key, _data).image, method=method, common_target=common,
                              size=display_size(key, _data), transformer_method=transformer_method,
                              faithful=faithful)


@_budget.memoize(data_budget, around=lambda: spinner("Guided backpropagation on a private copy of the model…"))
def guided(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, target: int | None, layer: str | None
) -> cams.GuidedResult:
    return cams.guided(model(name, device, pretrained), model_input(name, key, _data), target=target, layer=layer,
                       size=display_size(key, _data))


@_budget.memoize(data_budget, around=lambda: spinner("Factorising the layer's activations into concepts…"))
def concepts_of(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, k: int, layer: str | None
) -> concepts.Concepts:
    return concepts.factorize(model(name, device, pretrained), model_input(name, key, _data), k=k, layer=layer,
                              shown=picture(key, _data).image)


def randomized_model(name: str, device: str, pretrained: bool, steps: int) -> models.LoadedModel:
    """The shared model itself for steps == 0, else a private copy with the top `steps` layers randomised."""
    return model(name, device, pretrained) if steps == 0 else _randomized_copy(name, device, pretrained, steps)


@_budget.memoize(model_budget, around=lambda: spinner("Randomising a copy of the model…"), max_entries=4)
def _randomized_copy(name: str, device: str, pretrained: bool, steps: int) -> models.LoadedModel:
    return sanity.randomized(model(name, device, pretrained), steps)


def depth(
    name: str, device: str, pretrained: bool, steps: int, key: str, _data: bytes, method: str, target: int,
    _on_progress=None,
) -> list[cams.CamResult]:
    """One CAM per stage of the backbone (shallow to deep), on the (possibly randomised) model; for "rollout",
    attention rollout up to each block."""
    loaded = randomized_model(name, device, pretrained, steps)
    image = model_input(name, key, _data)

    def compute():
        if cams.METHODS[method].attention:  # rollout up to each block, from one pass
            return cams.rollout_depth(loaded, image, target=target, size=display_size(key, _data))
        results = []
        for index, stage in enumerate(loaded.spec.stages):
            if _on_progress:
                _on_progress(index / len(loaded.spec.stages), f"Stage {stage}")
            results += cams.compute(loaded, image, methods=[method], target=target, layer=stage,
                                    size=display_size(key, _data))
        return results

    return cam_results().get(("depth", name, device, pretrained, steps, key, method, target), compute)


def cascade(name: str, device: str, pretrained: bool) -> list[str]:
    return sanity.cascade(model(name, device, pretrained))


def random_target(name: str, device: str, pretrained: bool, *, avoid: int) -> int:
    return sanity.random_target(model(name, device, pretrained), avoid=avoid)


@_budget.memoize(data_budget, around=lambda: spinner("Computing feature maps…"))
def depth_feature_maps(
    name: str, device: str, pretrained: bool, steps: int, key: str, _data: bytes, layer: str, limit: int
) -> features.FeatureMaps:
    loaded = randomized_model(name, device, pretrained, steps)
    return features.feature_maps(loaded, decoded(key, _data).image, layer=layer, limit=limit)


@st.cache_data(max_entries=32, show_spinner=False)
def estimate(name: str, device: str, pretrained: bool, key: str, _data: bytes, method: str, layer: str | None) -> float:
    return cams.estimate_seconds(model(name, device, pretrained), model_input(name, key, _data), method, layer=layer)


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def cam_layers(name: str, device: str, pretrained: bool) -> list[str]:
    return features.cam_layers(model(name, device, pretrained))


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def layer_shapes(name: str, device: str, pretrained: bool) -> dict[str, str]:
    """Each layer's output shape for a grey image of the model's size, batch left out, as the layer lists say it."""
    return {info.name: "×".join(map(str, info.output_shape[1:])) for info in features.layers(model(name, device, pretrained))
            if info.output_shape}


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


OWN_SOURCE = user_weights.SOURCE


def spec(name: str) -> registry.BackboneSpec:
    return registry.get(name)


def weights_where(name: str) -> str:
    """Where a backbone's missing weights come from, in a sentence."""
    spec = registry.get(name)
    where = (f"the Hugging Face hub cache ({spec.hub_id})" if spec.hub_id
             else f"{spec.weights_file.parent}" if spec.weights_file else "")
    if not where:
        return "there is nothing to download: use architecture only."
    return (f"they download into {where} on first use when online, or beforehand with "
            f"`python -m core download {name}`.")


@st.cache_resource
def catalogue() -> tuple[registry.CatalogueEntry, ...]:
    return registry.catalogue()


@st.cache_data(max_entries=64, show_spinner=False)
def search(text: str, *, family: str | None, source: str | None, weights_here: bool | None,
           max_params: int | None) -> tuple[registry.CatalogueEntry, ...]:
    return registry.search(text, family=family, source=source, weights_here=weights_here, max_params=max_params)


def label_set(name: str) -> str:
    return registry.get(name).label_set


def own_base(name: str) -> str:
    return own_models.base(name)


def own_weights(architecture: str, filename: str, data: bytes, labels: bytes | None) -> str:
    """The name a user's state dict for `architecture` is offered under (checked once, kept by content)."""
    return _own_weights(architecture, filename, digest(data), data, None if labels is None else digest(labels), labels)


@_budget.memoize(data_budget, max_entries=16)
def _own_weights(architecture: str, filename: str, key: str, _data: bytes, labels_key: str | None,
                 _labels: bytes | None) -> str:
    return own_models.register(architecture, _data, filename=filename, labels=_labels)


# --- feature maps and architecture ---


@st.cache_data(max_entries=16, show_spinner="Listing layers…")
def layer_table(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> list[features.LayerInfo]:
    """Every layer with its output shape for this image."""
    return features.layers(model(name, device, pretrained), decoded(key, _data).image)


@_budget.memoize(data_budget, around=lambda: spinner("Computing feature maps…"))
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


# --- benchmarks ---


def benchmark_precisions(device: str) -> list[str]:
    return benchmarks.precisions(device)


# --- learn ---

@_budget.memoize(data_budget)
def lesson_picture(name: str, key: str, _data: bytes, grey: bool = False):
    """The image at the size `name` gets it: (H, W, 3) uint8, or (H, W) luminance with `grey`."""
    return convolution.picture(decoded(key, _data).image, registry.get(name), grey=grey)


@_budget.memoize(data_budget)
def convolved(name: str, key: str, _data: bytes, kernel: tuple[tuple[float, ...], ...], grey: bool):
    """The picture filtered by a 3x3 kernel, as a uint8 picture (see convolution.visible)."""
    result = convolution.convolve(lesson_picture(name, key, _data, grey), kernel)
    return convolution.visible(result, kernel)


@st.cache_data(max_entries=64, show_spinner=False)
def worked_pixel(name: str, key: str, _data: bytes, kernel: tuple[tuple[float, ...], ...]) -> convolution.Worked:
    """The centre output pixel of the grey picture's convolution, worked out."""
    return convolution.worked(lesson_picture(name, key, _data, True), kernel)


@_budget.memoize(data_budget)
def pooled(name: str, key: str, _data: bytes, size: int, kind: str):
    return convolution.pool(lesson_picture(name, key, _data), size, kind)


@st.cache_data(max_entries=16, show_spinner="Measuring every convolution and pooling layer…")
def conv_checks(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> list[lessons.ConvCheck]:
    return lessons.conv_layers(model(name, device, pretrained), decoded(key, _data).image)


@st.cache_data(max_entries=16, show_spinner="Following the receptive field…")
def receptive_field(name: str, device: str, pretrained: bool) -> list[lessons.FieldStep]:
    return lessons.receptive_field(model(name, device, pretrained))


@_budget.memoize(data_budget)
def field_outline(name: str, key: str, _data: bytes, size: int, jump: int):
    return convolution.field_outline(lesson_picture(name, key, _data), size, jump=jump)


@st.cache_data(max_entries=16, show_spinner="Measuring F(x) and x in every residual block…")
def residuals(name: str, device: str, pretrained: bool, key: str, _data: bytes) -> lessons.Residuals:
    return lessons.residuals(model(name, device, pretrained), decoded(key, _data).image)


@st.cache_data(max_entries=16, show_spinner=False)
def depth_layers(name: str, device: str, pretrained: bool, count: int) -> list[str]:
    return lessons.depth_layers(model(name, device, pretrained), count=count)


@st.cache_data(max_entries=32, show_spinner=False)
def transfer_plans(name: str, device: str, pretrained: bool, classes: int) -> lessons.Transfer:
    return lessons.transfer_plans(model(name, device, pretrained), classes=classes)


@_budget.memoize(data_budget, around=lambda: spinner("One forward and backward pass for Grad-CAM…"))
def gradcam_parts(
    name: str, device: str, pretrained: bool, key: str, _data: bytes, target: int | None, top: int
) -> gradcam.Parts:
    return gradcam.parts(model(name, device, pretrained), decoded(key, _data).image, target=target, top=top)
