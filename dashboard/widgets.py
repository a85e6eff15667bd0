"""Shared widgets: backbone, image and class pickers, the report button, progress of slow and background work."""

import time
import uuid
from dataclasses import dataclass

import streamlit as st

from core import images
from dashboard import cache, dataset_cache, shelf

SAMPLE_CREDITS = {
    "chelsea": "Chelsea the cat, Stefan van der Walt (CC0)",
    "coffee": "Coffee cup, Rachel Michetti (CC0)",
    "astronaut": "Eileen Collins, NASA (public domain)",
    "rocket": "Falcon 9 launch, SpaceX (CC0)",
}
UPLOAD_MB = 40  # a photo, a zip of class folders (the server allows 600 MB: weights files)
WEIGHTS_MB = 600  # a weights file or a model export: ViT-B/16 is about 350 MB in float32
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in images.SUFFIXES)  # HEIC (iPhone photos) and AVIF too


@dataclass(frozen=True)
class Choice:
    """The backbone the user picked."""

    name: str
    device: str
    pretrained: bool


@dataclass(frozen=True)
class Picked:
    """The image the user picked: raw bytes, their sha256, and where they came from."""

    key: str
    data: bytes
    source: str
    sample: str | None = None  # the sample photo's name, None for an upload or a camera shot


def model_picker(where=st.sidebar, *, key: str = "model") -> Choice:
    """Backbone, weights and device in the sidebar: the shelf's models, the zoo's finder and the user's own weights."""
    found = shelf.finder(where, key=key)
    arrived = st.session_state.pop(f"{key}_arrived", None)  # own weights loaded on the last run
    if found is not None and st.session_state.get(f"{key}_found") != found:
        arrived = found  # a new pick in the finder becomes the backbone once; then the list is the user's again
    st.session_state[f"{key}_found"] = found
    if arrived is not None:
        st.session_state[f"{key}_name"] = arrived
        if cache.spec(arrived).source == cache.OWN_SOURCE:
            st.session_state[f"{key}_weights"] = "pretrained"
    names = shelf.names()
    if st.session_state.get(f"{key}_name") not in names:  # a pick from another session's shelf, or a stale one
        st.session_state.pop(f"{key}_name", None)
    name = where.selectbox("Backbone", names, format_func=shelf.title, key=f"{key}_name")
    shelf.card(where, name)
    spec = cache.spec(name)
    available = cache.weights_here(name)
    weights = where.radio(
        "Weights",
        ["pretrained", "random"],
        # the same labels for every backbone: a label that changes with the backbone resets the radio
        format_func=lambda w: "Trained weights" if w == "pretrained" else "Architecture only (random weights)",
        key=f"{key}_weights",
        help="Random weights give meaningless predictions: useful only to look at the architecture "
        "or as a sanity check for explanations.",
    )
    if weights == "pretrained" and not available:
        where.caption(f"{plain(spec.title)}'s weights are not on this machine yet: {cache.weights_where(name)}")
    own = shelf.own_weights(where, cache.own_base(name), key=key) if where is st.sidebar else None  # the main picker's only
    if own is not None and own != name and st.session_state.get(f"{key}_own") != own:
        st.session_state[f"{key}_own"] = own
        st.session_state[f"{key}_arrived"] = own
        st.rerun()
    device = where.selectbox("Device", cache.devices(), key=f"{key}_device")
    where.caption(f"Running on: {cache.device_label(device)}")
    return Choice(name, device, weights == "pretrained")


def layer_label(choice: Choice):
    """A layer list's labels: each layer with its output shape (tokens stay tokens: 197×768 is a ViT's)."""
    shapes = cache.layer_shapes(choice.name, choice.device, choice.pretrained)
    return lambda layer: f"{layer} · {shapes[layer]}" if layer in shapes else layer


def default_sample() -> str:
    """The sample photo a page shows before anyone picks one (the start-up warm-up computes it too)."""
    names = cache.sample_names()
    return "chelsea" if "chelsea" in names else names[0]


def image_picker(*, key: str = "image") -> Picked | None:
    source = st.radio("Image source", ["Sample photos", "Upload", "Camera"], horizontal=True, key=f"{key}_source")
    if source == "Sample photos":
        st.session_state.setdefault(f"{key}_sample", default_sample())  # not index=: `restore` may have set it
        name = st.selectbox(
            "Sample photo", cache.sample_names(), key=f"{key}_sample",
            format_func=lambda n: f"{n} — {SAMPLE_CREDITS.get(n, 'scikit-image sample')}",
        )
        data = cache.sample_bytes(name)
        st.session_state.pop(f"{key}_restored", None)
        return Picked(cache.digest(data), data, f"sample: {name} ({SAMPLE_CREDITS.get(name, '')})", name)
    if source == "Upload":
        upload = st.file_uploader(
            "Upload an image (JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC, AVIF)", type=UPLOAD_TYPES, key=f"{key}_upload",
            max_upload_size=UPLOAD_MB,
        )
        if upload is None:
            return _restored(key, "upload")
        data = upload.getvalue()
        st.session_state.pop(f"{key}_restored", None)
        return Picked(cache.digest(data), data, f"upload: {upload.name}")
    shot = st.camera_input("Take a photo", key=f"{key}_camera")
    if shot is None:
        return _restored(key, "camera")
    data = shot.getvalue()
    st.session_state.pop(f"{key}_restored", None)
    return Picked(cache.digest(data), data, "camera")


def _kind(picked: Picked) -> str:
    return "sample" if picked.sample else "camera" if picked.source == "camera" else "upload"


def _restored(key: str, kind: str) -> Picked | None:
    """The upload or camera shot handed back by `restore` (a file widget cannot be refilled), until replaced."""
    restored = st.session_state.get(f"{key}_restored")
    if restored is None or _kind(restored) != kind:
        return None
    st.caption(f"Showing the photo from presenter mode ({restored.source}). "
               f"{'Upload' if kind == 'upload' else 'Take'} another to replace it.")
    return restored


PRESENTER = "presenter_choice"  # session key: the (Choice, Picked) chosen on Explain, for presenter mode


def remember_for_presenter(choice: Choice, picked: Picked) -> None:
    st.session_state[PRESENTER] = (choice, picked)


def chosen_for_presenter() -> tuple[Choice, Picked] | None:
    return st.session_state.get(PRESENTER)


def restore(choice: Choice, picked: Picked, *, model_key: str = "model", image_key: str = "image") -> None:
    """Set the pickers' widgets to `choice` and `picked` for the next page that shows them.

    Streamlit forgets a widget's value when a page without it runs; values set here before the widget is
    drawn again become its value. Uploads and camera shots cannot be put back into their widget: the
    picker shows them (with a note) until another is chosen.
    """
    st.session_state[f"{model_key}_name"] = choice.name
    st.session_state[f"{model_key}_weights"] = "pretrained" if choice.pretrained else "random"
    st.session_state[f"{model_key}_device"] = choice.device
    kind = _kind(picked)
    st.session_state[f"{image_key}_source"] = {"sample": "Sample photos", "upload": "Upload", "camera": "Camera"}[kind]
    if kind == "sample":
        st.session_state[f"{image_key}_sample"] = picked.sample
        st.session_state.pop(f"{image_key}_restored", None)
    else:
        st.session_state[f"{image_key}_restored"] = picked


TOP1 = -1  # sentinel option: "explain the predicted class" (a None option would show as a placeholder)


def require_image(*, key: str = "image") -> Picked:
    """The picked image, or a hint and a stop of the page when there is none yet."""
    picked = image_picker(key=key)
    if picked is None:
        st.info("Upload an image or take a photo to start, or pick a sample photo.")
        st.stop()
    return picked


def class_picker(categories: tuple[str, ...], top1: int, *, key: str = "target") -> int | None:
    """None means "the predicted class". The select box is searchable: type part of a name."""
    options = [TOP1, *range(len(categories))]
    chosen = st.selectbox(
        "Class to explain (type to search)",
        options,
        format_func=lambda i: f"Top-1 prediction: {categories[top1]} ({top1})" if i == TOP1 else f"{i}: {categories[i]}",
        key=key,
    )
    return None if chosen == TOP1 else chosen


def report_button(image, sections, *, source: str, key: str, opacity: float = 0.5, colormap: str = "jet") -> None:
    """A download button for the self-contained HTML report of what the page shows (`image`: the picture the
    page shows, at its heatmaps' size). The report is written when the button is clicked, not on every rerun."""
    from core import report

    def document() -> bytes:
        return report.render(image, sections, source=source, opacity=opacity, colormap=colormap).encode("utf-8")

    st.download_button(
        "Download report (HTML)", document, file_name="visionlens-report.html", mime="text/html",
        key=key, on_click="ignore",
        help="One self-contained file: the image, predictions, heatmaps, scores, settings and versions.",
    )


DATASET_SOURCES = {
    "digits": "Digits (built-in)",
    "shapes": "Shapes with masks (built-in)",
    "zip": "Upload a zip",
    "folder": "Dataset on this server",
    "torchvision": "torchvision set (online)",
}


def dataset_picker(*, key: str, default_limit: int, min_limit: int = 20):
    """A labelled dataset from any source, stratified-sampled and seeded: returns (dataset, seed)."""
    kind = st.radio("Dataset", list(DATASET_SOURCES), format_func=DATASET_SOURCES.get, horizontal=True,
                    key=f"{key}_source")
    left, middle, right = st.columns(3)
    limit = int(left.number_input("Images (stratified sample)", min_limit, 20_000, default_limit, step=50,
                                  key=f"{key}_limit", help="Every class keeps its share; the sample is seeded."))
    seed = int(middle.number_input("Sample seed", 0, 2**31 - 1, 0, key=f"{key}_sample_seed"))
    if kind in ("digits", "shapes"):
        return dataset_cache.dataset(kind, kind, seed, limit), seed
    if kind == "zip":
        upload = st.file_uploader(
            "A zip of class folders (cats/1.jpg, dogs/2.png, ...), at its top or inside wrapping folders", type=["zip"],
            key=f"{key}_zip", max_upload_size=UPLOAD_MB,
        )
        if upload is None:
            st.info("Upload a zip with one folder per class (at least two classes).")
            st.stop()
        raw = upload.getvalue()
        return dataset_cache.dataset("zip", cache.digest(raw), seed, limit, raw), seed
    if kind == "folder":
        return dataset_cache.dataset("folder", server_dataset(key=key), seed, limit), seed
    name = right.selectbox("torchvision set", dataset_cache.TORCHVISION_SETS, key=f"{key}_torchvision")
    st.caption(f"Downloaded on first use into {dataset_cache.TORCHVISION_ROOT} (needs the internet once).")
    return dataset_cache.dataset("torchvision", name, seed, limit), seed


def server_dataset(*, key: str) -> str:
    """A class-folder dataset under the operator's data roots, picked from a list (never a typed path)."""
    listing = dataset_cache.server_datasets()
    for problem in listing.problems:
        st.warning(problem)
    if not listing.folders:
        st.info("No dataset on this server yet. The operator puts folders of class folders (pets/cats/1.jpg, "
                "pets/dogs/2.jpg) under a data root: " + ", ".join(f"`{r}`" for r in listing.roots) + ".")
        st.stop()
    folders = {str(f.path): f for f in listing.folders}
    return st.selectbox("Which dataset", list(folders), format_func=lambda p: folders[p].label(),
                        key=f"{key}_folder", help="The datasets under the data roots the operator configured.")


def slow_progress(title: str, *, key: str):
    """A progress bar with the time spent and left, and a Cancel button, for slow work in the script thread.

    Returns (report, clear): report(fraction, message) updates the bar; clear() removes bar and button.
    Cancel reruns the page, and the work stops at its next report (Streamlit ends the old run there).
    """
    holder = st.empty()
    with holder.container():
        bar = st.progress(0.0, text=f"{title}…")
        st.button("Cancel", key=key, help="Stops at the next step; nothing is kept.")
    started = time.monotonic()

    def report(fraction: float, message: str) -> None:
        elapsed = time.monotonic() - started
        left = f", about {elapsed * (1 - fraction) / fraction:.0f} s left" if 0.02 < fraction < 1 else ""
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{message} ({elapsed:.0f} s{left})")

    return report, holder.empty


_MARKDOWN_SPECIAL = "\\`*_{}[]()<>#!|~$:"  # links, images, HTML, emphasis, code, math, emoji and colour codes


def plain(text: str) -> str:
    """`text` with Markdown's special characters escaped: a file named `![x](http://...)` stays text."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in text)


def dataset_notes(data) -> None:
    """Where the class folders were found in a zip or folder, and the other files left beside them."""
    parts = []
    if data.root:
        parts.append(f"Class folders read from {plain(data.root + '/')}.")
    if data.ignored:
        parts.append(plain(data.ignored_summary()))
    if parts:
        st.caption(" ".join(parts))


def session_id() -> str:
    """This browser session, as the shared job registries know it (one of a job's watchers)."""
    return st.session_state.setdefault("jobs_session", uuid.uuid4().hex)


def follow(key: str, job, *, leave) -> None:
    """This session now waits for `job` (None: for nothing), kept in st.session_state[key] while it runs. The job
    it waited for there before, if another (its settings changed), is left: `leave(old, session_id())` stops it
    unless another session still waits for it."""
    old = st.session_state.pop(key, None)
    if old is not None and old is not job:
        leave(old, session_id())
    if job is not None and not job.done:
        st.session_state[key] = job


@st.fragment(run_every=1.0)
def job_progress(
    job, title: str, *, key: str, stop_label: str = "Stop", stopping: str = "Stopping…",
    stop_help: str = "Stops it for every session waiting for the same result.", details=None,
) -> None:
    """A background job's queue place or progress bar, Stop, then `details(job)` when given (what it has made so
    far: a table, a chart), redrawn every second; the whole page reruns when the job ends.

    Every page that runs a background job (Benchmarks, Datasets, Transfer learning, All methods) shows it here.
    """
    if job.done:
        st.rerun()
    if job.state == "queued":
        st.info(f"{title} — {job.queue_text()}")
    else:
        elapsed = time.time() - (job.running_since or job.started)
        st.progress(job.progress, text=f"{title}, {job.progress:.0%} · {job.message} ({elapsed:.0f} s)")
    if job.stop.is_set():
        st.caption(stopping)
    else:
        st.button(stop_label, key=key, on_click=job.stop.set, help=stop_help)
    if details is not None:
        details(job)


def job_ended(job, *, again: str | None = None, key: str | None = None, forget=None) -> bool:
    """For an ended job: True when it succeeded; else say why it has no result and return False. With `again`,
    a button to start over (`forget(job)` drops it so that the next request starts again)."""
    from core.errors import Cancelled, CoreError

    if job.error is None:
        return True
    if isinstance(job.error, Cancelled):  # Stop, here or in another session watching the same job
        st.info(str(job.error))
    elif isinstance(job.error, CoreError):
        st.error(str(job.error))
    else:
        if forget is not None:
            forget(job)
        raise job.error
    if again is not None:
        st.button(again, key=key, on_click=forget, args=(job,))
    return False
