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
        sub.add_argument("image", type=Path, help="a JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF file")
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
        help="CAM method (see `models --methods`), or 'all': every method that applies to the model except the "
        "one-forward-per-channel ones, one overlay each, plus scores.json with faithfulness scores",
    )
    explain.add_argument(
        "--include-slow", action="store_true",
        help="with --method all: add the one-forward-per-channel methods (Score-CAM, Ablation-CAM)",
    )
    explain.add_argument("--class", dest="target", type=int, default=None, help="class index (default: top-1)")
    explain.add_argument("--layer", default=None, help="dotted layer name (default: the backbone's own)")
    explain.add_argument(
        "--out", type=Path, required=True,
        help="overlay PNG to write; a folder when several images or --method all are given",
    )
    explain.add_argument("--heatmap", type=Path, default=None, help="also write the heatmap as .npy (float32, HxW)")
    explain.add_argument("--opacity", type=float, default=0.5, help="heatmap opacity 0..1 (default 0.5)")
    explain.add_argument("--colormap", default="jet", help="jet, turbo, inferno, magma, viridis, ...")

    report = commands.add_parser("report", help="a self-contained HTML report: models x methods, with scores")
    report.add_argument("image", type=Path, help="a JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF file")
    report.add_argument("--models", default=registry.DEFAULT, help="comma-separated backbone names")
    report.add_argument("--methods", default="gradcam,gradcam++,eigencam", help="comma-separated CAM methods")
    report.add_argument("--class", dest="target", type=int, default=None, help="class index (default: each top-1)")
    report.add_argument("--out", type=Path, required=True, help="the .html file to write")
    report.add_argument("--no-scores", action="store_true", help="skip the faithfulness scores (faster)")
    report.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    report.add_argument("--random-weights", action="store_true", help="architecture only (no download)")

    models = commands.add_parser("models", help="list backbones and whether their weights are here")
    models.add_argument("--json", action="store_true")
    models.add_argument("--methods", action="store_true", help="list CAM methods instead")

    bench = commands.add_parser("benchmark", help="latency, throughput, memory, size and compute of backbones")
    bench.add_argument("--models", required=True, help="comma-separated backbone names, e.g. resnet18,efficientnet_lite0")
    bench.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    bench.add_argument("--input-size", type=int, default=None, help="square input side (default: each model's own)")
    bench.add_argument("--precision", default="fp32", help="fp32, or bf16/fp16 autocast on GPU")
    bench.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    bench.add_argument("--repeats", type=int, default=None, help="timed passes (default: until the median is stable)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed warm-up passes (default 3)")
    bench.add_argument("--random-weights", action="store_true", help="random weights even where pretrained ones are here")
    bench.add_argument("--json", action="store_true", help="print JSON (machine, method, rows) instead of a table")
    def dataset_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "dataset", help="digits, shapes, torchvision:NAME (CIFAR10, MNIST, ...), a .zip of class folders, or a folder"
        )
        sub.add_argument("--model", default=registry.DEFAULT, help=f"backbone name (default {registry.DEFAULT})")
        sub.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
        sub.add_argument("--random-weights", action="store_true", help="architecture only (meaningless features)")
        sub.add_argument("--limit", type=int, default=None, help="a stratified sample of at most this many images")
        sub.add_argument("--seed", type=int, default=0, help="seed of the sample, the split and t-SNE (default 0)")
        sub.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
        sub.add_argument("--precision", default="auto", help="auto, fp32, bf16 (GPU, or CPUs with native bf16), fp16 (GPU)")
        sub.add_argument("--image-size", type=int, default=None, help="square side images are resized to (default: the model's)")

    embed = commands.add_parser("embed", help="2-D map (t-SNE or PCA) of a dataset's penultimate features")
    dataset_options(embed)
    embed.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="tsne (default) or pca")
    embed.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    embed.add_argument("--iterations", type=int, default=750, help="t-SNE iterations (default 750)")
    embed.add_argument("--out", type=Path, required=True, help="CSV to write: x, y, label, prediction, file")

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix on a dataset")
    dataset_options(evaluate)
    evaluate.add_argument("--mode", default="auto", help="auto, zero-shot or 'linear probe' (default auto)")
    evaluate.add_argument("--test-fraction", type=float, default=0.3, help="linear probe: share held out (default 0.3)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = commands.add_parser("train", help="transfer learning: a new head (or fine-tuning) on a dataset, exported")
    train.add_argument(
        "dataset", help="digits, shapes, torchvision:NAME (CIFAR10, MNIST, ...), a .zip of class folders, or a folder"
    )
    train.add_argument("--model", default=registry.DEFAULT, help=f"pretrained backbone (default {registry.DEFAULT})")
    train.add_argument("--strategy", default=None,
                       help="feature-extraction (default: frozen backbone, new head), fine-tune, small-cnn or deeper-cnn")
    train.add_argument("--head", default=None, help="linear (default) or mlp (hidden layer + dropout)")
    train.add_argument("--hidden", type=int, default=None, help="mlp head: hidden units (default 256)")
    train.add_argument("--dropout", type=float, default=None, help="mlp head: dropout (default 0.2)")
    train.add_argument("--unfreeze", default=None, help="fine-tune: how many of the last stages train, or 'all' (default 1)")
    train.add_argument("--optimizer", default=None, help="sgd (momentum 0.9), adam (default) or adamw")
    train.add_argument("--lr-head", type=float, default=None, help="learning rate of the head and of baselines (default 3e-3)")
    train.add_argument("--lr-backbone", type=float, default=None, help="fine-tune: learning rate of the backbone (default 1e-4)")
    train.add_argument("--weight-decay", type=float, default=None, help="default 0")
    train.add_argument("--batch-size", type=int, default=None, help="default 32")
    train.add_argument("--epochs", type=int, default=None, help="default 10")
    train.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without a lower val loss")
    train.add_argument("--clip", type=float, default=None, help="clip the gradients' global norm to this")
    train.add_argument("--crop", action="store_true", help="augment with random resized crops (not feature-extraction)")
    train.add_argument("--flip", action="store_true", help="augment with horizontal flips (not feature-extraction)")
    train.add_argument("--train-fraction", type=float, default=None, help="default 0.7")
    train.add_argument("--val-fraction", type=float, default=None, help="default 0.15; the test set is the rest")
    train.add_argument("--image-size", type=int, default=None, help="square side (default: the backbone's; 64 for baselines)")
    train.add_argument("--limit", type=int, default=None, help="a stratified sample of at most this many images")
    train.add_argument("--seed", type=int, default=0, help="sample, split, initialisation and shuffling (default 0)")
    train.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    train.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    train.add_argument("--json", action="store_true", help="print a JSON summary (the epochs go to stderr)")
    train.add_argument("--out", type=Path, required=True, help="folder to write model.json and model.safetensors into")
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
        methods = cams.applicable(model, include_slow=args.include_slow)
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
            print(f"{path.name}: scoring faithfulness of {len(results)} maps and 3 baselines…", flush=True)
            card = faithfulness.scorecard(model, image, {r.method: r.heatmap for r in results}, target)
            scores[path.name] = {
                "target": target, "label": model.categories[target], "layer": results[0].layer,
                "seconds": round(card.seconds, 3),
                "methods": {m: {**s.as_dict(), "beats_random": card.beats_random(m)} for m, s in card.methods.items()},
                "baselines": {b: s.as_dict() for b, s in card.baselines.items()},
                "inverted_method": card.inverted,
            }
            ranked = sorted(card.methods, key=lambda m: card.methods[m].faithfulness, reverse=True)
            print(f"{path.name}: faithfulness {', '.join(f'{m} {card.methods[m].faithfulness:+.3f}' for m in ranked)}; "
                  f"random map {card.baselines['random'].faithfulness:+.3f} ({card.seconds:.1f} s)")
    if args.method == "all":
        from core import faithfulness

        about = {"faithfulness": "Faithfulness: " + faithfulness.explanation(), "removal": faithfulness.REMOVAL,
                 "fractions_removed": list(faithfulness.FRACTIONS),
                 "baselines": "random: a random map; inverted: 1 - the map of the best method (inverted_method); "
                              "edges: the Sobel gradient magnitude of the image"}
        _write(args.out / "scores.json",
               json.dumps({"model": model.name, "about": about, "images": scores}, indent=2).encode())
        print(f"faithfulness scores: {args.out / 'scores.json'}")


def _dataset_notes(dataset) -> None:
    """What was left out of a dataset, on stderr: skipped files per reason, other files ignored."""
    for reason, count in dataset.skipped_reasons().items():
        sys.stderr.write(f"note: skipped {count} file(s): {reason}\n")
    if dataset.ignored:
        sys.stderr.write(f"note: {dataset.ignored_summary()}\n")


def _image_paths(given: list[Path]) -> list[Path]:
    from core.errors import InvalidInputError
    from core.images import SUFFIXES as IMAGE_SUFFIXES

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


def _report(args) -> None:
    from core import cams, models, report
    from core.errors import InvalidInputError

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
    image = _read_image(args.image)
    loaded = [models.load(n, device=args.device, pretrained=not args.random_weights) for n in names]
    for model in loaded:
        for method in methods:
            cams.check_method(method, model)
    document = report.create(loaded, image, methods=methods, target=args.target, score=not args.no_scores,
                             source=args.image.name)
    _write(args.out, document.encode("utf-8"))
    print(f"report: {args.out} ({len(document) / 1024:.0f} KB)")


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


def _benchmark(args) -> None:
    from core import benchmark_tables, benchmarks
    from core.errors import InvalidInputError

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        registry.get(name)  # unknown names fail before anything heavy
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        raise InvalidInputError(f"--batch takes comma-separated whole numbers such as 1,8; got '{args.batch}'.") from None

    def progress(row, done: int, total: int) -> None:
        sys.stderr.write(f"[{done}/{total}] {row.name} batch {row.batch}: p50 {row.median_ms:.2f} ms "
                         f"({row.repeats} timed passes)\n")

    machine, busy = benchmarks.machine(), benchmarks.busy()
    rows = benchmarks.run(
        names, batches=batches, input_size=args.input_size, precision=args.precision, device=args.device,
        pretrained=False if args.random_weights else None, repeats=args.repeats, warmup=args.warmup, on_row=progress,
    )
    method = benchmarks.method(warmup=args.warmup, repeats=args.repeats, device=args.device, precision=args.precision)
    if busy:
        sys.stderr.write(f"note: {busy}\n")
    if args.json:
        print(benchmark_tables.to_json(rows, machine=machine, method=method))
        return
    print(benchmark_tables.text_table(rows))
    print(f"\nmachine: {machine}\nmethod: {method}")


def _dataset_and_features(args):
    from core import datasets, embeddings

    if args.limit is not None and args.limit < 2:
        from core.errors import InvalidInputError

        raise InvalidInputError(f"--limit must be at least 2, got {args.limit}.")
    dataset = datasets.load(args.dataset, seed=args.seed, n=args.limit)
    _dataset_notes(dataset)
    model = _load(args)

    def progress(fraction: float, message: str) -> None:
        sys.stderr.write(f"\r{message}   ")
        if fraction >= 1:
            sys.stderr.write("\n")

    extracted = embeddings.extract(
        model, dataset, batch_size=args.batch_size, precision=args.precision, size=args.image_size, on_progress=progress
    )
    return dataset, model, extracted


def _evaluation(args, dataset, model, extracted, mode: str):
    from core import evaluation

    return evaluation.evaluate(
        extracted.features, extracted.logits, dataset.labels, dataset.classes, categories=model.categories,
        mode=mode, test_fraction=getattr(args, "test_fraction", 0.3), seed=args.seed,
    )


def _embed(args) -> None:
    import csv
    import io

    from core import embeddings
    from core.errors import InvalidInputError

    if args.out.suffix.lower() != ".csv":
        raise InvalidInputError(f"--out must be a .csv file, got '{args.out}'.")
    dataset, model, extracted = _dataset_and_features(args)
    if args.method == "tsne":
        points = embeddings.tsne(extracted.features, perplexity=args.perplexity, iterations=args.iterations, seed=args.seed)
    else:
        points = embeddings.pca(extracted.features, seed=args.seed)
    scored = _evaluation(args, dataset, model, extracted, "auto")
    predicted = {int(i): int(p) for i, p in zip(scored.indices, scored.predicted, strict=True)}
    rows = [["x", "y", "label", "prediction", "file"]]
    for i, (x, y) in enumerate(points):
        guess = predicted.get(i)
        rows.append([f"{x:.5f}", f"{y:.5f}", dataset.classes[dataset.labels[i]],
                     dataset.classes[guess] if guess is not None else "", dataset.files[i]])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    _write(args.out, buffer.getvalue().encode())
    trust = embeddings.trustworthiness(extracted.features, points)
    print(f"{len(points)} points ({args.method}, trustworthiness {trust:.3f}; predictions by {scored.method}, "
          f"empty for training rows): {args.out}")


def _evaluate(args) -> None:
    dataset, model, extracted = _dataset_and_features(args)
    result = _evaluation(args, dataset, model, extracted, args.mode)
    report = {
        "dataset": dataset.name,
        "model": model.name,
        "method": result.method,
        "images": len(dataset),
        "evaluated": len(result.indices),
        "train_size": result.train_size,
        "accuracy": result.accuracy,
        "classes": list(result.classes),
        "per_class": [
            {"class": m.name, "precision": m.precision, "recall": m.recall, "f1": m.f1, "support": m.support}
            for m in result.per_class
        ],
        "confusion": result.confusion.tolist(),
        "skipped": dataset.skipped_reasons(),
        "ignored": list(dataset.ignored),
    }
    if result.method == "zero-shot" and result.mapping is not None:
        report["mapping"] = dict(zip(result.mapping.classes, result.mapping.labels, strict=True))
    if args.json:
        print(json.dumps(report))
        return
    print(f"{model.label} on {dataset.name}: {result.method}, accuracy {result.accuracy:.3f} "
          f"on {len(result.indices)} images" + (f" (trained on {result.train_size})" if result.train_size else ""))
    print(f"{'class':20s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}")
    for m in result.per_class:
        print(f"{m.name[:20]:20s} {m.precision:9.3f} {m.recall:7.3f} {m.f1:6.3f} {m.support:8d}")


def _train(args) -> None:
    import dataclasses

    from core import checkpoints, datasets, training
    from core.errors import InvalidInputError

    unfreeze = args.unfreeze
    if unfreeze is not None and unfreeze != "all":
        try:
            unfreeze = int(unfreeze)
        except ValueError:
            raise InvalidInputError(f"--unfreeze takes a number of stages or 'all', got '{args.unfreeze}'.") from None
    given = {
        "strategy": args.strategy, "head": args.head, "hidden": args.hidden, "dropout": args.dropout,
        "optimizer": args.optimizer, "lr_head": args.lr_head, "lr_backbone": args.lr_backbone,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "epochs": args.epochs,
        "patience": args.patience, "clip_norm": args.clip, "train_fraction": args.train_fraction,
        "val_fraction": args.val_fraction, "image_size": args.image_size, "random_crop": args.crop, "flip": args.flip,
        "seed": args.seed,
    }
    config = training.TrainConfig(**{k: v for k, v in given.items() if v is not None})
    if unfreeze is not None:
        config = dataclasses.replace(config, unfreeze_stages=None if unfreeze == "all" else unfreeze)
    config.check()
    if args.out.exists() and not args.out.is_dir():
        raise InvalidInputError(f"--out must be a folder (model.json and model.safetensors go in it); '{args.out}' is a file.")
    if args.limit is not None and args.limit < 2:
        raise InvalidInputError(f"--limit must be at least 2, got {args.limit}.")
    dataset = datasets.load(args.dataset, seed=args.seed, n=args.limit)
    _dataset_notes(dataset)
    strategy = training.STRATEGIES[config.strategy]
    model = _load(args) if strategy.pretrained else None
    log = sys.stderr if args.json else sys.stdout

    def epoch(s) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  train loss {s.train_loss:.4f} acc {s.train_accuracy:.3f}  "
              f"val loss {s.val_loss:.4f} acc {s.val_accuracy:.3f}  {s.seconds:.1f} s{'  *' if s.best else ''}",
              file=log, flush=True)

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Features"):
            sys.stderr.write(f"\r{message}   " + ("\n" if fraction >= 1 else ""))

    print(f"{strategy.title}: {model.label if model else strategy.title} on {dataset.name} ({len(dataset)} images, "
          f"{len(dataset.classes)} classes)", file=log, flush=True)
    result = training.train(model, dataset, config, device=args.device, on_epoch=epoch, on_progress=progress)
    facts = {"dataset": dataset.name, "strategy": config.strategy, "test_accuracy": result.accuracy,
             "best_epoch": result.best_epoch}
    exported = checkpoints.export(result.model, args.out, trained=facts)
    summary = {
        "dataset": dataset.name, "strategy": config.strategy, "backbone": result.backbone, "ended": result.ended,
        "best_epoch": result.best_epoch, "epochs": len(result.history), "test_images": len(result.split.test),
        "accuracy": result.accuracy, "macro_precision": result.macro_precision, "macro_recall": result.macro_recall,
        "macro_f1": result.macro_f1, "seconds": result.seconds, "trainable_params": result.trainable_params,
        "total_params": result.total_params, "classes": list(result.classes),
        "confusion": result.test.confusion.tolist(),
        "export": {"json": str(exported.json), "weights": str(exported.weights)},
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{result.ended}; kept epoch {result.best_epoch}. Test ({len(result.split.test)} images): accuracy "
          f"{result.accuracy:.3f}, macro precision {result.macro_precision:.3f}, recall {result.macro_recall:.3f}, "
          f"F1 {result.macro_f1:.3f}; {result.seconds:.1f} s; {result.trainable_params:,} of "
          f"{result.total_params:,} parameters trained.")
    print(f"export: {exported.json} and {exported.weights}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from core import runtime

    runtime.configure_threads()
    try:
        {"predict": _predict, "explain": _explain, "models": _models, "benchmark": _benchmark,
         "embed": _embed, "evaluate": _evaluate, "report": _report, "train": _train}[args.command](args)
    except CoreError as error:
        sys.stderr.write(f"error: {' '.join(str(error).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
