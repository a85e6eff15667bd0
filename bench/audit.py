"""Explaining a whole dataset against classifying it, in one run: images/s of `audit.explain_dataset` (prediction,
top-k, features, a Grad-CAM map and its statistics per image) over images/s of `embeddings.extract` (the plain
batched inference that gives features and logits) at the same batch size, precision and input size.

    .venv/bin/python bench/audit.py [--models efficientnet_lite0,resnet50] [--images 256] [--batch 32]
                                    [--size 224] [--precision fp32] [--repeats 2] [--methods gradcam]
                                    [--threads N]

`--methods` is a comma-separated list of one-pass methods, each measured against the same plain inference; on a
transformer the attention methods too (`--models shapes_vit --methods gradcam,rollout,grad_rollout,legrad --size
64`: rollout needs no backward pass, gradient-weighted rollout one to every block's attention, LeGrad one inside
each block). `--size` 0: each model's own input size.

Lite0 runs with its real offline weights, the others with random weights (the cost is the same). Each repeat
runs both in alternation; the ratio of the medians is printed (target >= 0.8). Also printed: the worst
correlation between a batched map and `cams.compute`'s map of the same image (target >= 0.999).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import audit, cams, datasets, embeddings, models, runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="gradcam")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    runtime.configure_threads(args.threads)
    methods = args.methods.split(",")
    dataset = datasets.shapes(n=args.images, size=128)
    print(f"{args.images} shapes images at {args.size} px, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} torch threads of {runtime.cores()} cores")
    for name in args.models.split(","):
        model = models.load(name, device="cpu", pretrained=models.weights_available(name))
        size = args.size or model.spec.input_size[0]
        plain, explained = [], {m: [] for m in methods}
        embeddings.extract(model, dataset.subset(range(args.batch)), batch_size=args.batch, precision=args.precision,
                           size=size)  # warm-up
        results = {}
        for _ in range(args.repeats):
            started = time.perf_counter()
            embeddings.extract(model, dataset, batch_size=args.batch, precision=args.precision, size=size)
            plain.append(args.images / (time.perf_counter() - started))
            for method in methods:
                started = time.perf_counter()
                results[method] = audit.explain_dataset(model, dataset, method=method, batch_size=args.batch,
                                                        precision=args.precision, size=size)
                explained[method].append(args.images / (time.perf_counter() - started))
        p = statistics.median(plain)
        for method, result in results.items():
            worst = 1.0
            if size == model.spec.input_size[0]:
                for index in range(4):
                    (one,) = cams.compute(model, dataset.images[index], methods=[method],
                                          target=int(result.explained[index]))
                    small = audit.shrink(one.raw[None])[0].astype(np.float64).ravel()
                    worst = min(worst, float(np.corrcoef(small, result.maps[index].astype(np.float64).ravel())[0, 1]))
            e = statistics.median(explained[method])
            print(f"{name:18s} {method:12s} inference {p:7.1f} img/s · explain {e:7.1f} img/s · ratio {e / p:.2f} "
                  f"(target >= 0.8) · worst map r vs cams.compute {worst:.5f}")


if __name__ == "__main__":
    main()
