"""The Ray engine against the in-process one, and the data path against the model, measured in one run.

1. On a generated folder of N JPEG images (default 2,000 shapes at 160 px, class folders): the dataset job
   (`--job audit`, default, or `features`) in-process, then on Ray Data with a local instance; the Ray start-up
   (ray.init) is timed apart from the job. Prints the ratio (target: Ray within 1.5x of in-process).
2. The in-process data path: model-only throughput (batches of random uint8 squares already in memory) against
   `embeddings.extract` over the folder with W DataLoader workers started by "spawn" (decoding in parallel).
   Prints the ratio (target >= 0.85 where the cores exist; the GPU host measured 0.28 with 4 forked workers).

    .venv/bin/python bench/ray_engine.py [--images 2000] [--model efficientnet_lite0] [--job audit|features]
        [--workers 4] [--device auto] [--batch-size 32] [--skip-ray]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import (audit, datasets, distributed, embeddings, image_lists, job_sources, models, preprocessing, runtime,
                  shape_drawing)  # noqa: E402


def make_folder(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    classes = datasets.SHAPES[:4]
    for i in range(n):
        name = classes[i % len(classes)]
        picture, _ = shape_drawing.draw(rng, name, side)
        (root / name).mkdir(parents=True, exist_ok=True)
        picture.save(root / name / f"{i:06d}.jpg", quality=90)
    return root


def in_process(model, dataset, job: str, batch_size: int, size: int | None) -> float:
    started = time.perf_counter()
    if job == "audit":
        audit.explain_dataset(model, dataset, batch_size=batch_size, precision="fp32", size=size)
    else:
        embeddings.extract(model, dataset, batch_size=batch_size, precision="fp32", size=size, workers=0)
    return time.perf_counter() - started


def on_ray(model, dataset, job: str, batch_size: int, size: int | None, out: Path) -> tuple[float, float, int]:
    source = job_sources.source_of(dataset)
    started = time.perf_counter()
    distributed.start()
    startup = time.perf_counter() - started
    try:
        if job == "audit":
            spec = distributed.audit_job(model, source, batch_size=batch_size, precision="fp32", size=size)
        else:
            spec = distributed.features_job(model, source, batch_size=batch_size, precision="fp32", size=size)
        began = time.perf_counter()
        report = distributed.run(model, source, spec, out)
        return startup, time.perf_counter() - began, len(report.nodes)
    finally:
        distributed.stop()


def model_only(model, n: int, batch_size: int, side: int) -> float:
    """Images per second of the forward pass alone (features + logits) on in-memory uint8 squares."""
    pixels = torch.randint(0, 256, (batch_size, 3, side, side), dtype=torch.uint8)
    embeddings.batch_features(model, pixels, None)  # warm-up
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while done < n:
        embeddings.batch_features(model, pixels, None)
        done += batch_size
    return done / (time.perf_counter() - started)


def decode_per_core(dataset, spec, side: int, n: int = 300) -> float:
    """Images per second one core reads, decodes and resizes (what each Ray decoding task does per image)."""
    blobs = [Path(b).read_bytes() for b in dataset.images.blobs[:n]]
    started = time.perf_counter()
    for blob in blobs:
        preprocessing.square(image_lists.picture(blob), spec, side)
    return len(blobs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=160, help="side of the generated JPEGs")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--job", choices=("audit", "features"), default="audit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=None, help="model input side (default: the model's)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    runtime.configure_threads()
    model = models.load(args.model, device=args.device)
    side = args.image_size or model.spec.input_size[0]
    workers = args.workers if args.workers is not None else max(1, runtime.cores() - 1)
    print(f"{model.label} on {model.device}, {runtime.cores()} cores, {args.images} JPEGs at {args.side} px, "
          f"model input {side} px, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        folder = make_folder(Path(scratch) / "set", args.images, args.side)
        dataset = datasets.from_folder(folder)
        if not args.skip_ray:
            local = in_process(model, dataset, args.job, args.batch_size, args.image_size)
            print(f"{args.job} in-process: {local:.1f} s", flush=True)
            startup, ray_seconds, nodes = on_ray(model, dataset, args.job, args.batch_size, args.image_size,
                                                 Path(scratch) / "out")
            print(f"{args.job}: in-process {local:.1f} s ({len(dataset) / local:.1f} images/s); Ray {ray_seconds:.1f} s "
                  f"({len(dataset) / ray_seconds:.1f} images/s) on {nodes} node(s) after {startup:.1f} s of start-up")
            print(f"ratio Ray / in-process: {ray_seconds / local:.2f} (job only), "
                  f"{(ray_seconds + startup) / local:.2f} (with start-up)")
        per_core = decode_per_core(dataset, model.spec, side)
        print(f"decoding + resizing on one core: {per_core:.0f} images/s", flush=True)
        alone = model_only(model, min(args.images, 1024), args.batch_size, side)
        started = time.perf_counter()
        embeddings.extract(model, dataset, batch_size=args.batch_size, precision="fp32", size=args.image_size,
                           workers=workers, context="spawn")
        fed = len(dataset) / (time.perf_counter() - started)
        print(f"data path: model alone {alone:.1f} images/s, extract with {workers} spawned workers {fed:.1f} images/s "
              f"(worker start-up included); ratio {fed / alone:.2f}")


if __name__ == "__main__":
    main()
