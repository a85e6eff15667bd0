"""Command line: `python -m core predict|explain|models ...`, over the same functions as the dashboard.

Bad input or an unknown name exits with status 2 and one `error: ...` line on stderr.
"""

import os

# Before torch loads: OpenMP threads that spin while idle made a forward pass 5-7x slower on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from core import registry  # noqa: E402
from core.errors import CoreError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Predict and explain images with pretrained classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("image", type=Path, help="a JPEG, PNG, WebP, BMP, GIF or TIFF file")
        sub.add_argument("--model", default=registry.DEFAULT, help=f"backbone name (default {registry.DEFAULT})")
        sub.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
        sub.add_argument(
            "--random-weights", action="store_true", help="architecture only: meaningless predictions, no download"
        )

    predict = commands.add_parser("predict", help="top-k classes of one image")
    model_options(predict)
    predict.add_argument("--top", type=int, default=5, help="how many classes (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")

    explain = commands.add_parser("explain", help="class activation maps of images")
    model_options(explain)
    explain.add_argument("more", nargs="*", type=Path, help="more images, or folders of images")
    explain.add_argument(
        "--method", default="gradcam",
        help="CAM method (see `models --methods`), or 'all': every one-pass method, one overlay each, "
        "plus scores.json with faithfulness scores",
    )
    explain.add_argument("--include-slow", action="store_true", help="with --method all: add Score-CAM and Ablation-CAM")
    explain.add_argument("--class", dest="target", type=int, default=None, help="class index (default: top-1)")
    explain.add_argument("--layer", default=None, help="dotted layer name (default: the backbone's own)")
    explain.add_argument(
        "--out", type=Path, required=True,
        help="overlay PNG to write; a folder when several images or --method all are given",
    )
    explain.add_argument("--heatmap", type=Path, default=None, help="also write the heatmap as .npy (float32, HxW)")
    explain.add_argument("--opacity", type=float, default=0.5, help="heatmap opacity 0..1 (default 0.5)")
    explain.add_argument("--colormap", default="jet", help="jet, turbo, inferno, magma, viridis, ...")

    models = commands.add_parser("models", help="list backbones and whether their weights are here")
    models.add_argument("--json", action="store_true")
    models.add_argument("--methods", action="store_true", help="list CAM methods instead")
    return parser


def _read_image(path: Path):
    from core import images
    from core.errors import InvalidInputError

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"No such file: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder; give an image file.") from None
    except OSError as error:
        raise InvalidInputError(f"Cannot read {path}: {error.strerror or error}") from None
    decoded = images.decode(data)
    for note in decoded.notes:
        sys.stderr.write(f"note: {note}\n")
    return decoded.image


def _load(args):
    from core import models

    registry.get(args.model)  # unknown names fail before anything heavy
    return models.load(args.model, device=args.device, pretrained=not args.random_weights)


def _predict(args) -> None:
    from core import predictions

    image = _read_image(args.image)
    model = _load(args)
    results = predictions.predict(model, image, top_k=args.top)
    if args.json:
        print(json.dumps({
            "model": model.name,
            "device": str(model.device),
            "pretrained": model.pretrained,
            "predictions": [{"index": p.index, "label": p.label, "prob": p.prob} for p in results],
        }))
        return
    print(f"{model.label} on {model.device}")
    for p in results:
        print(f"{p.prob * 100:6.2f}%  {p.index:4d}  {p.label}")


def _explain(args) -> None:
    import numpy as np

    from core import cams, images
    from core.errors import InvalidInputError

    if args.colormap not in images.COLORMAPS:
        raise InvalidInputError(f"Unknown colormap '{args.colormap}'. Choose one of: {', '.join(images.COLORMAPS)}.")
    paths = _image_paths([args.image, *args.more])
    many = len(paths) > 1 or args.method == "all"
    if args.method != "all":
        cams.check_method(args.method)
    elif args.heatmap is not None:
        raise InvalidInputError("--heatmap works with one image and one method; with 'all', heatmaps go to --out.")
    if not many and args.out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out must be a .png file, got '{args.out}'.")
    if many and args.out.suffix:
        raise InvalidInputError(f"With several images or --method all, --out is a folder; got '{args.out}'.")
    first = _read_image(paths[0])  # a bad file fails before the model loads
    model = _load(args)
    methods = [args.method]
    if args.method == "all":
        methods = [
            m.name for m in cams.METHODS.values()
            if (m.shared or args.include_slow) and not (m.cnn_only and model.spec.family != "cnn")
        ]
    scores: dict[str, dict] = {}
    for index, path in enumerate(paths):
        image = first if index == 0 else _read_image(path)
        results = cams.compute(model, image, methods=methods, target=args.target, layer=args.layer)
        for result in results:
            overlay = result.overlay(image, opacity=args.opacity, colormap=args.colormap)
            out = args.out / f"{path.stem}_{result.method}.png" if many else args.out
            _write(out, images.to_png(overlay))
            if args.heatmap is not None:
                args.heatmap.parent.mkdir(parents=True, exist_ok=True)
                np.save(args.heatmap, result.heatmap.astype(np.float32))
            elif many:
                np.save(args.out / f"{path.stem}_{result.method}.npy", result.heatmap.astype(np.float32))
            print(f"{path.name}: {result.method} for class {result.target} ({result.label}) "
                  f"at layer {result.layer}, {result.seconds * 1000:.0f} ms: {out}")
        if args.method == "all":
            from core import faithfulness

            target = results[0].target
            scored = faithfulness.score_heatmaps(model, image, {r.method: r.heatmap for r in results}, target)
            scores[path.name] = {
                "target": target, "label": model.categories[target], "layer": results[0].layer,
                "methods": {
                    m: {"road_combined": s.road_combined, "road_most_relevant_first": s.road_most_first,
                        "road_least_relevant_first": s.road_least_first, "confidence_change": s.confidence_change}
                    for m, s in scored.items()
                },
            }
    if args.method == "all":
        _write(args.out / "scores.json", json.dumps({"model": model.name, "images": scores}, indent=2).encode())
        print(f"faithfulness scores: {args.out / 'scores.json'}")


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _image_paths(given: list[Path]) -> list[Path]:
    from core.errors import InvalidInputError

    paths: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise InvalidInputError(f"The folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _write(path: Path, data: bytes) -> None:
    from core.errors import InvalidInputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        raise InvalidInputError(f"Cannot write {path}: {error.strerror or error}") from None


def _models(args) -> None:
    from core import cams, models

    if args.methods:
        for method in cams.METHODS.values():
            print(f"{method.name:20s} {method.title:24s} {method.cost}")
        return
    rows = []
    for name in registry.names():
        spec = registry.get(name)
        rows.append({
            "name": name,
            "title": spec.title,
            "source": spec.source,
            "offline": models.weights_available(name),
            "weights_file": str(spec.weights_file) if spec.weights_file else None,
        })
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        where = "weights here" if row["offline"] else f"weights not here (download or put {row['weights_file']})"
        print(f"{row['name']:20s} {row['source']:26s} {where}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from core import runtime

    runtime.configure_threads()
    try:
        {"predict": _predict, "explain": _explain, "models": _models}[args.command](args)
    except CoreError as error:
        sys.stderr.write(f"error: {' '.join(str(error).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
