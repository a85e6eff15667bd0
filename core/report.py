"""A self-contained HTML report of an analysis: image, top-k per model, methods x models heatmaps.

Images are embedded as base64 data URIs, so the file opens anywhere, offline, and can be mailed.
"""

import base64
import html
import io
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from PIL import Image

import core
from core import cams, faithfulness, predictions
from core.models import LoadedModel


@dataclass(frozen=True)
class ModelSection:
    """Everything the report shows for one model."""

    name: str
    title: str
    pretrained: bool
    device: str
    predictions: list[predictions.Prediction]
    results: list[cams.CamResult]  # one per method, same order for every model
    scores: faithfulness.Scorecard | None  # every method's and the baselines' scores, or None when not scored


def analyse(
    model: LoadedModel, image: Image.Image, *, methods: Sequence[str], target: int | None = None, score: bool = True,
    top_k: int = 5,
) -> ModelSection:
    """Predict, explain with every method (shared pass where possible) and optionally score faithfulness."""
    top = predictions.predict(model, image, top_k=min(top_k, len(model.categories)))
    results = cams.compute(model, image, methods=list(methods), target=target)
    scores = None
    if score:
        scores = faithfulness.scorecard(model, image, {r.method: r.heatmap for r in results}, results[0].target)
    return ModelSection(model.name, model.spec.title, model.pretrained, str(model.device), top, results, scores)


def render(
    image: Image.Image,
    sections: Sequence[ModelSection],
    *,
    source: str = "",
    settings: dict[str, str] | None = None,
    opacity: float = 0.5,
    colormap: str = "jet",
    seconds: float | None = None,
) -> str:
    """The HTML document (a str). Every image is embedded."""
    settings = dict(settings or {})
    methods = [r.method for r in sections[0].results] if sections else []
    parts = [_HEAD, "<h1>VisionLens report</h1>"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class='meta'>{_e(stamp)} · {_e(source)} · {image.width}×{image.height} px</p>")
    parts.append(f"<figure class='input'><img alt='input image' src='{_uri(np.asarray(image.convert('RGB')), 'JPEG')}'>"
                 "<figcaption>Input image</figcaption></figure>")
    parts.append("<h2>Predictions</h2><div class='models'>")
    for section in sections:
        rows = "".join(
            f"<tr><td>{p.index}</td><td>{_e(p.label)}</td><td>{p.prob:.1%}</td></tr>" for p in section.predictions
        )
        warning = "" if section.pretrained else "<p class='warn'>random weights: meaningless predictions</p>"
        parts.append(f"<section><h3>{_e(section.title)}</h3>{warning}<table><tr><th>class</th><th>label</th>"
                     f"<th>probability</th></tr>{rows}</table></section>")
    parts.append("</div><h2>Heatmaps</h2><table class='grid'><tr><th>method</th>")
    for section in sections:
        target = section.results[0]
        parts.append(f"<th>{_e(section.title)}<br><small>class {target.target}: {_e(target.label)} · "
                     f"layer {_e(target.layer)}</small></th>")
    parts.append("</tr>")
    for index, method in enumerate(methods):
        parts.append(f"<tr><th>{_e(cams.METHODS[method].title)}</th>")
        for section in sections:
            result = section.results[index]
            overlay = result.overlay(image, opacity=opacity, colormap=colormap)
            caption = f"{result.seconds * 1000:.0f} ms"
            if section.scores is not None:
                caption += " · " + _score_text(section.scores.methods[method])
                if not section.scores.beats_random(method):
                    caption += " · no better than a random map here"
            parts.append(f"<td><img alt='{_e(section.title)} {_e(method)}' src='{_uri(overlay, 'JPEG')}'>"
                         f"<div class='cap'>{_e(caption)}</div></td>")
        parts.append("</tr>")
    if any(s.scores is not None for s in sections):
        for baseline in faithfulness.BASELINES:
            parts.append(f"<tr><th>{_e(faithfulness.BASELINE_TITLES[baseline])}</th>")
            for section in sections:
                card = section.scores
                text = "not scored" if card is None else _score_text(card.baselines[baseline])
                if card is not None and baseline == "inverted":
                    text = f"1 − {cams.METHODS[card.inverted].title} · {text}"
                parts.append(f"<td><div class='cap'>{_e(text)}</div></td>")
            parts.append("</tr>")
    parts.append("</table>")
    if any(s.scores is not None for s in sections):
        parts.append(
            f"<p class='note'>Faithfulness: {_e(faithfulness.explanation())} Most-first (lower is better) and "
            "least-first (higher is better) are the mean probability changes when those fractions of the pixels the "
            "map ranks highest or lowest are removed; the confidence change multiplies the image by the map (higher "
            f"is better). {_e(faithfulness.REMOVAL)} Baselines: a random map, the inverted map of the best method "
            "and a Sobel edge map of the image, scored in the same pass.</p>"
        )
    settings.update({"opacity": f"{opacity:.2f}", "colormap": colormap})
    if seconds is not None:
        settings["total time"] = f"{seconds:.1f} s"
    for section in sections:
        settings[f"{section.title} device"] = section.device
    settings.update(_versions())
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in settings.items())
    parts.append(f"<h2>Settings and versions</h2><table class='settings'>{rows}</table></body></html>")
    return "".join(parts)


def create(
    models: Sequence[LoadedModel], image: Image.Image, *, methods: Sequence[str], target: int | None = None,
    score: bool = True, source: str = "", opacity: float = 0.5, colormap: str = "jet",
) -> str:
    """Analyse `image` with every model and method and render the report."""
    started = time.perf_counter()
    sections = [analyse(m, image, methods=methods, target=target, score=score) for m in models]
    settings = {"methods": ", ".join(methods), "class": "top-1 of each model" if target is None else str(target)}
    return render(image, sections, source=source, settings=settings, opacity=opacity, colormap=colormap,
                  seconds=time.perf_counter() - started)


def _score_text(s: faithfulness.Faithfulness) -> str:
    return (f"faithfulness {s.faithfulness:+.3f} (most-first {s.road_most_first:+.3f}, least-first "
            f"{s.road_least_first:+.3f}) · confidence change {s.confidence_change:+.3f}")


def _uri(array: np.ndarray, fmt: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format=fmt, quality=88)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _versions() -> dict[str, str]:
    found = {"VisionLens": core.__version__, "Python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "grad-cam"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>VisionLens report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .meta{color:#666;margin-top:0} figure.input img{max-width:480px;border-radius:6px}
.models{display:flex;flex-wrap:wrap;gap:1.5rem} table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
table.grid img{max-width:260px;display:block} .cap{font-size:.8rem;color:#555;max-width:260px}
.warn{color:#b02a37} .note{color:#555;font-size:.9rem} small{color:#555;font-weight:normal}
</style></head><body>"""
