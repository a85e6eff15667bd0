"""`audit`: a heatmap and its statistics for every image of a dataset, written as Parquet and CSV."""

import csv
import io
import json
import sys

from core import audit, datasets, distributed, embeddings, job_sources, results
from core.cli.common import check_limit, dataset_notes, load_model, precision_note, progress_line, write
from core.errors import InvalidInputError

SHOWN = ("heat_half_area", "heat_border", "heat_in_mask", "pointing_hit")  # the per-class table's columns


def run_audit(args) -> None:
    check_limit(args.limit)
    if args.out.exists() and not args.out.is_dir():
        raise InvalidInputError(f"--out is a folder to write into; '{args.out}' is a file.")
    if args.engine == "ray":
        _run_on_ray(args)
        return
    dataset = datasets.load(args.dataset, seed=args.seed, n=args.limit)
    dataset_notes(dataset)
    model = load_model(args)
    precision_note(args.precision, "audit", model.device)
    result = audit.explain_dataset(
        model, dataset, method=args.method, target=args.target, layer=args.layer, batch_size=args.batch_size,
        precision=args.precision, size=args.image_size, on_progress=progress_line,
    )
    try:
        paths = audit.write(result, args.out, with_features=args.features)
    except OSError as error:
        raise InvalidInputError(f"Cannot write into {args.out}: {error.strerror or error}") from None
    if args.embed:
        paths["embedding"] = _embedding(args, result)
    _print(args, model, dataset.name, result, paths)


def _embedding(args, result: audit.Audit):
    """DIR/embedding.csv: the t-SNE (or PCA) map of the audit's own features, as `embed` computes it from its."""
    if args.embed == "tsne":
        points = embeddings.tsne(result.features, perplexity=args.perplexity, iterations=args.iterations,
                                 seed=args.seed)
    else:
        points = embeddings.pca(result.features, seed=args.seed)
    rows = [["file", "label", "prediction", "x", "y"]]
    for file, label, guess, (x, y) in zip(result.files, result.labels, result.predictions, points, strict=True):
        rows.append([file, result.classes[label], result.categories[guess], f"{x:.5f}", f"{y:.5f}"])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path = args.out / "embedding.csv"
    write(path, buffer.getvalue().encode())
    trust = embeddings.trustworthiness(result.features, points)
    print(f"{len(points)} points ({args.embed} of the audit's features, trustworthiness {trust:.3f})", file=sys.stderr)
    return path


def _run_on_ray(args) -> None:
    """The same audit on Ray Data (core.distributed): shards and summary.json in --out, read back to print."""
    source = job_sources.open_source(args.dataset, seed=args.seed, n=args.limit)
    dataset_notes(source)
    model = load_model(args)
    precision_note(args.precision, "audit", model.device)
    job = distributed.audit_job(model, source, method=args.method, target=args.target, layer=args.layer,
                                precision=args.precision, size=args.image_size, batch_size=args.batch_size,
                                with_features=args.features or args.embed is not None)
    report = distributed.run(model, source, job, args.out, address=args.address, actors=args.actors,
                             on_progress=progress_line)
    result = results.read(args.out).audit
    print(f"Ray: {report.rows} images in {report.seconds:.1f} s after {report.startup_seconds:.1f} s of start-up, "
          f"on {len(report.nodes)} node(s)", file=sys.stderr)
    paths = {"shards": [args.out / s for s in report.shards], "summary": args.out / distributed.SUMMARY}
    if args.embed:
        paths["embedding"] = _embedding(args, result)
    _print(args, model, source.name, result, paths)


def _print(args, model, name: str, result: audit.Audit, paths: dict) -> None:
    if args.json:
        print(json.dumps({**result.to_dict(), "files": {k: [str(x) for x in v] if isinstance(v, list) else str(v)
                                                        for k, v in paths.items()}}))
        return
    summary = result.summary()
    columns = [c for c in ("accuracy", *SHOWN) if c in summary[0]]
    explained = "predicted and the true" if result.target == "both" else result.target
    print(f"{model.label} on {name}: {result.method} maps of the {explained} class, {len(result)} images, "
          f"{result.images_per_second:.1f} images/s ({result.precision})")
    print(f"{'class':20s} {'images':>7s} " + " ".join(f"{c:>14s}" for c in columns))
    for row in summary:
        print(f"{row['class'][:20]:20s} {row['images']:7d} " + " ".join(f"{row[c]:14.3f}" for c in columns))
    if "shards" in paths:
        print(f"wrote {len(paths['shards'])} shard(s) and {paths['summary'].name} into {args.out}")
        return
    print(f"wrote {paths['parquet']}, {paths['csv'].name}, {paths['maps'].name} and {paths['summary'].name}"
          + "".join(f", {paths[k].name}" for k in ("maps_true", "features", "embedding") if k in paths))
