"""`predict`, `explain`, `report` and `models`: one image (or a few) through one or more backbones.

Each JSON these commands write is a record here, printed with `records.to_dict`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import cams, faithfulness, images, models, predictions, records, registry, report, weights_cache
from core.cli.common import image_paths, load_model, read_image, write
from core.errors import InvalidInputError

BASELINES_ABOUT = ("random: a random map; inverted: 1 - the map of the best method (inverted_method); "
                   "edges: the Sobel gradient magnitude of the image")


@dataclass(frozen=True)
class PredictOutput:
    """`predict --json`."""

    model: str
    device: str
    pretrained: bool
    predictions: tuple[predictions.Prediction, ...]

    @classmethod
    def of(cls, model: models.LoadedModel, found) -> "PredictOutput":
        return cls(model.name, str(model.device), model.pretrained, tuple(found))


@dataclass(frozen=True)
class ModelRow:
    """One row of `models --json`: a catalogue entry and whether its weights are here (asked now)."""

    name: str
    title: str
    source: str
    offline: bool  # the weights are on this machine
    weights_file: Path | None  # None for weights in the Hugging Face cache (hub_id) or inside a package
    family: str
    params: int | None
    gmacs: float | None
    top1: float | None
    input_size: tuple[int, int]
    label_set: str
    hub_id: str | None

    @classmethod
    def of(cls, entry: registry.CatalogueEntry) -> "ModelRow":
        return cls(entry.name, entry.title, entry.source, entry.weights_here(), entry.weights_file, entry.family,
                   entry.params, entry.gmacs, entry.top1, entry.input_size, entry.label_set, entry.hub_id)

    def where(self) -> str:
        if self.offline:
            return "weights here"
        if self.hub_id:
            return f"weights not here (timm downloads hub repo {self.hub_id} into {weights_cache.cache_folder()})"
        return f"weights not here (download or put {self.weights_file})"


@dataclass(frozen=True)
class ImageScores:
    """One image's entry in `explain --method all`'s scores.json: its scorecard, class label and layer."""

    label: str
    layer: str
    card: faithfulness.Scorecard

    def to_dict(self) -> dict:
        return {"target": self.card.target, "label": self.label, "layer": self.layer, **self.card.to_dict()}


@dataclass(frozen=True)
class ScoresFile:
    """scores.json: what the scores mean, and each image's scores by file name."""

    model: str
    about: dict[str, object]
    images: dict[str, ImageScores]

    @classmethod
    def of(cls, model: models.LoadedModel, scores: dict[str, ImageScores]) -> "ScoresFile":
        about = {"faithfulness": "Faithfulness: " + faithfulness.explanation(), "removal": faithfulness.REMOVAL,
                 "fractions_removed": list(faithfulness.FRACTIONS), "baselines": BASELINES_ABOUT}
        return cls(model.name, about, scores)


def run_predict(args) -> None:
    image = read_image(args.image)
    model = load_model(args)
    found = predictions.predict(model, image, top_k=args.top)
    if args.json:
        print(records.to_json(PredictOutput.of(model, found)))
        return
    print(f"{model.label} on {model.device}")
    for p in found:
        print(f"{p.prob * 100:6.2f}%  {p.index:4d}  {p.label}")


def run_explain(args) -> None:
    if args.colormap not in images.COLORMAPS:
        raise InvalidInputError(f"Unknown colormap '{args.colormap}'. Choose one of: {', '.join(images.COLORMAPS)}.")
    paths = image_paths([args.image, *args.more])
    many = len(paths) > 1 or args.method == "all"
    if args.method != "all":
        cams.check_method(args.method)
    elif args.heatmap is not None:
        raise InvalidInputError("--heatmap works with one image and one method; with 'all', heatmaps go to --out.")
    if not many and args.out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out must be a .png file, got '{args.out}'.")
    if many and args.out.suffix:
        raise InvalidInputError(f"With several images or --method all, --out is a folder; got '{args.out}'.")
    first = read_image(paths[0])  # a bad file fails before the model loads
    model = load_model(args)
    methods = cams.applicable(model, include_slow=args.include_slow) if args.method == "all" else [args.method]
    scores: dict[str, ImageScores] = {}
    for index, path in enumerate(paths):
        image = first if index == 0 else read_image(path)
        results = cams.compute(model, image, methods=methods, target=args.target, layer=args.layer)
        for result in results:
            _write_result(args, path, image, result, many)
        if args.method == "all":
            scores[path.name] = _score(model, path, image, results)
    if args.method == "all":
        write(args.out / "scores.json", records.to_json(ScoresFile.of(model, scores), indent=2).encode())
        print(f"faithfulness scores: {args.out / 'scores.json'}")


def _write_result(args, path: Path, image, result: cams.CamResult, many: bool) -> None:
    overlay = result.overlay(image, opacity=args.opacity, colormap=args.colormap)
    out = args.out / f"{path.stem}_{result.method}.png" if many else args.out
    write(out, images.to_png(overlay))
    if args.heatmap is not None:
        args.heatmap.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.heatmap, result.heatmap.astype(np.float32))
    elif many:
        np.save(args.out / f"{path.stem}_{result.method}.npy", result.heatmap.astype(np.float32))
    print(f"{path.name}: {result.method} for class {result.target} ({result.label}) "
          f"at layer {result.layer}, {result.seconds * 1000:.0f} ms: {out}")


def _score(model, path: Path, image, results: list[cams.CamResult]) -> ImageScores:
    target = results[0].target
    print(f"{path.name}: scoring faithfulness of {len(results)} maps and 3 baselines…", flush=True)
    card = faithfulness.scorecard(model, image, {r.method: r.heatmap for r in results}, target)
    ranked = sorted(card.methods, key=lambda m: card.methods[m].faithfulness, reverse=True)
    print(f"{path.name}: faithfulness {', '.join(f'{m} {card.methods[m].faithfulness:+.3f}' for m in ranked)}; "
          f"random map {card.baselines['random'].faithfulness:+.3f} ({card.seconds:.1f} s)")
    return ImageScores(model.categories[target], results[0].layer, card)


def run_report(args) -> None:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not names or not methods:
        raise InvalidInputError("Give at least one model (--models) and one method (--methods).")
    for name in names:
        registry.get(name)
    for method in methods:
        cams.check_method(method)
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"--out must be an .html file, got '{args.out}'.")
    image = read_image(args.image)
    loaded = [models.load(n, device=args.device, pretrained=not args.random_weights) for n in names]
    for model in loaded:
        for method in methods:
            cams.check_method(method, model)
    document = report.create(loaded, image, methods=methods, target=args.target, score=not args.no_scores,
                             source=args.image.name)
    write(args.out, document.encode("utf-8"))
    print(f"report: {args.out} ({len(document) / 1024:.0f} KB)")


def run_models(args) -> None:
    if args.methods:
        for method in cams.METHODS.values():
            print(f"{method.name:20s} {method.title:24s} {method.cost}")
        return
    if args.search is not None or args.family or args.source or args.weights_here:
        found = registry.search(args.search or "", family=args.family, source=args.source,
                                weights_here=True if args.weights_here else None)
    else:
        found = tuple(registry.entry(registry.get(name)) for name in registry.names())
    rows = [ModelRow.of(entry) for entry in found]
    if args.json:
        print(json.dumps([records.to_dict(row) for row in rows]))
        return
    if not rows:
        print("No model matches: try fewer words, or another --family / --source.")
        return
    width = max(len(row.name) for row in rows)
    for row in rows:
        params = f"{row.params / 1e6:7.1f} M" if row.params else "      ? M"
        print(f"{row.name:{width}s} {row.source:26s} {row.family or '?':11s} {params} {row.where()}")
