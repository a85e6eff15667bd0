"""`embed`, `evaluate` and `train`: a backbone over a whole dataset.

Each JSON these commands print is a record here, printed with `records.to_dict`.
"""

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core import (checkpoints, datasets, distributed, embeddings, evaluation, job_sources, records, results,
                  training)
from core.cli.common import check_limit, dataset_notes, load_model, precision_note, progress_line, write
from core.cli.options import train_config
from core.errors import InvalidInputError


@dataclass(frozen=True)
class ClassRow:
    name: str = field(metadata={"key": "class"})
    precision: float
    recall: float
    f1: float
    support: int

    @classmethod
    def of(cls, metrics: evaluation.ClassMetrics) -> "ClassRow":
        return cls(metrics.name, metrics.precision, metrics.recall, metrics.f1, metrics.support)


@dataclass(frozen=True)
class EvaluateOutput:
    """`evaluate --json`."""

    dataset: str
    model: str
    method: str  # "zero-shot" or "linear probe"
    images: int  # in the dataset
    evaluated: int  # of them scored (the test split for a probe)
    train_size: int
    accuracy: float
    classes: tuple[str, ...]
    per_class: tuple[ClassRow, ...]
    confusion: list[list[int]]
    skipped: dict[str, int]  # reason -> files
    ignored: tuple[str, ...]
    mapping: dict[str, str | None] | None = field(default=None, metadata={"omit_none": True})  # zero-shot: -> ImageNet

    @classmethod
    def of(cls, dataset: datasets.Dataset, model, result: evaluation.Evaluation) -> "EvaluateOutput":
        mapping = None
        if result.method == "zero-shot" and result.mapping is not None:
            mapping = dict(zip(result.mapping.classes, result.mapping.labels, strict=True))
        return cls(
            dataset.name, model.name, result.method, len(dataset), len(result.indices), result.train_size,
            result.accuracy, tuple(result.classes), tuple(ClassRow.of(m) for m in result.per_class),
            result.confusion.tolist(), dataset.skipped_reasons(), tuple(dataset.ignored), mapping,
        )


@dataclass(frozen=True)
class TrainOutput:
    """`train --json`."""

    dataset: str
    strategy: str
    backbone: str
    ended: str
    best_epoch: int
    epochs: int
    test_images: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    seconds: float
    trainable_params: int
    total_params: int
    classes: tuple[str, ...]
    confusion: list[list[int]]
    export: checkpoints.Exported

    @classmethod
    def of(cls, result: training.RunResult, exported: checkpoints.Exported) -> "TrainOutput":
        return cls(
            result.dataset, result.config.strategy, result.backbone, result.ended, result.best_epoch,
            len(result.history), len(result.split.test), result.accuracy, result.macro_precision, result.macro_recall,
            result.macro_f1, result.seconds, result.trainable_params, result.total_params, tuple(result.classes),
            result.test.confusion.tolist(), exported,
        )


def _dataset_and_features(args):
    check_limit(args.limit)
    if args.engine == "ray":
        return _features_on_ray(args)
    dataset = datasets.load(args.dataset, seed=args.seed, n=args.limit)
    dataset_notes(dataset)
    model = load_model(args)
    precision_note(args.precision, "features", model.device)
    extracted = embeddings.extract(model, dataset, batch_size=args.batch_size, precision=args.precision,
                                   size=args.image_size, on_progress=progress_line)
    return dataset, model, extracted


def _features_on_ray(args):
    """Features and logits on Ray Data (core.distributed), written as shards into --results (or a temporary folder)
    and read back: the rows (a core.distributed.Source) stand in for the dataset."""
    import tempfile

    source = job_sources.open_source(args.dataset, seed=args.seed, n=args.limit)
    dataset_notes(source)
    model = load_model(args)
    precision_note(args.precision, "features", model.device)
    job = distributed.features_job(model, source, precision=args.precision, size=args.image_size,
                                   batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="visionlens-features-") as scratch:
        out = args.results or Path(scratch)
        report = distributed.run(model, source, job, out, address=args.address, actors=args.actors,
                                 on_progress=progress_line)
        extracted = results.read(out).embeddings
    where = f"; shards in {args.results}" if args.results else ""
    sys.stderr.write(f"note: Ray: {report.rows} images in {report.seconds:.1f} s after {report.startup_seconds:.1f} s "
                     f"of start-up, on {len(report.nodes)} node(s){where}\n")
    return source, model, extracted


def _evaluation(args, dataset, model, extracted, mode: str) -> evaluation.Evaluation:
    return evaluation.evaluate(
        extracted.features, extracted.logits, dataset.labels, dataset.classes, categories=model.categories,
        mode=mode, test_fraction=getattr(args, "test_fraction", 0.3), seed=args.seed,
    )


def run_embed(args) -> None:
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
    write(args.out, buffer.getvalue().encode())
    trust = embeddings.trustworthiness(extracted.features, points)
    print(f"{len(points)} points ({args.method}, trustworthiness {trust:.3f}; predictions by {scored.method}, "
          f"empty for training rows; features in {extracted.precision}): {args.out}")


def run_evaluate(args) -> None:
    dataset, model, extracted = _dataset_and_features(args)
    result = _evaluation(args, dataset, model, extracted, args.mode)
    if args.json:
        print(records.to_json(EvaluateOutput.of(dataset, model, result)))
        return
    print(f"{model.label} on {dataset.name}: {result.method}, accuracy {result.accuracy:.3f} "
          f"on {len(result.indices)} images" + (f" (trained on {result.train_size})" if result.train_size else ""))
    print(f"{'class':20s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}")
    for m in result.per_class:
        print(f"{m.name[:20]:20s} {m.precision:9.3f} {m.recall:7.3f} {m.f1:6.3f} {m.support:8d}")


def run_train(args) -> None:
    config = train_config(args)
    if args.out.exists() and not args.out.is_dir():
        raise InvalidInputError(f"--out must be a folder (model.json and model.safetensors go in it); '{args.out}' is a file.")
    check_limit(args.limit)
    dataset = datasets.load(args.dataset, seed=args.seed, n=args.limit)
    dataset_notes(dataset)
    strategy = training.STRATEGIES[config.strategy]
    model = load_model(args) if strategy.pretrained else None
    log = sys.stderr if args.json else sys.stdout

    def epoch(s) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  train loss {s.train_loss:.4f} acc {s.train_accuracy:.3f}  "
              f"val loss {s.val_loss:.4f} acc {s.val_accuracy:.3f}  {s.seconds:.1f} s{'  *' if s.best else ''}",
              file=log, flush=True)

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Features"):
            progress_line(fraction, message)

    print(f"{strategy.title}: {model.label if model else strategy.title} on {dataset.name} ({len(dataset)} images, "
          f"{len(dataset.classes)} classes)", file=log, flush=True)
    result = training.train(model, dataset, config, device=args.device, on_epoch=epoch, on_progress=progress)
    exported = checkpoints.export(result.model, args.out, trained=checkpoints.Trained.of(result))
    if args.json:
        print(records.to_json(TrainOutput.of(result, exported)))
        return
    print(f"{result.ended}; kept epoch {result.best_epoch}. Test ({len(result.split.test)} images): accuracy "
          f"{result.accuracy:.3f}, macro precision {result.macro_precision:.3f}, recall {result.macro_recall:.3f}, "
          f"F1 {result.macro_f1:.3f}; {result.seconds:.1f} s; {result.trainable_params:,} of "
          f"{result.total_params:,} parameters trained.")
    print(f"export: {exported.json} and {exported.weights}")
