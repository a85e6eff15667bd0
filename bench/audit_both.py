"""Audit target "both" against its two halves, in one run: seconds of `audit.explain_dataset` with target "both"
(each image's predicted class's map, and its true class's for the wrong predictions only) over target "predicted"
alone and over "predicted" + "true" run one after the other (the obvious way to get both sets of maps).

    .venv/bin/python bench/audit_both.py [--models shapes_cnn,efficientnet_lite0] [--images 128] [--batch 32]
                                         [--repeats 3] [--threads 1]

"both" needs a model whose classes are the dataset's: the Shapes CNN is trained on the shapes set (few wrong
predictions); Lite0 gets a random 4-class head for the shapes (most predictions wrong: the worst case, its
ImageNet features at 224 px). Also printed: the share of wrong predictions and whether "both"'s maps equal the
two single audits' (max abs difference).
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import audit, datasets, models, runtime  # noqa: E402


def comparable(name: str, classes) -> models.LoadedModel:
    """`name` with the shapes' classes: its own (the Shapes CNN) or a random Linear head of that many outputs."""
    model = models.load(name, device="cpu", pretrained=models.weights_available(name))
    if tuple(model.categories) == tuple(classes):
        return model
    parent, _, child = model.spec.head.rpartition(".")
    owner = model.module.get_submodule(parent) if parent else model.module
    old = getattr(owner, child)
    torch.manual_seed(0)
    setattr(owner, child, torch.nn.Linear(old.in_features, len(classes)).eval())
    return replace(model, spec=replace(model.spec, categories=tuple(classes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shapes_cnn,efficientnet_lite0")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    runtime.configure_threads(args.threads)
    dataset = datasets.shapes(n=args.images, size=128)
    print(f"{args.images} shapes images, batch {args.batch}, fp32, {torch.get_num_threads()} torch thread(s)")
    for name in args.models.split(","):
        model = comparable(name, dataset.classes)
        times: dict[str, list[float]] = {t: [] for t in audit.TARGETS}
        got = {}
        audit.explain_dataset(model, dataset.subset(range(min(8, len(dataset)))), batch_size=8)  # warm-up
        for _ in range(args.repeats):
            for target in audit.TARGETS:  # in alternation: a load change hits all three alike
                started = time.perf_counter()
                got[target] = audit.explain_dataset(model, dataset, target=target, batch_size=args.batch)
                times[target].append(time.perf_counter() - started)
        median = {t: statistics.median(v) for t, v in times.items()}
        both = got["both"]
        wrong = float((both.predictions != both.labels).mean())
        same = max(np.abs(both.maps.astype(np.float32) - got["predicted"].maps.astype(np.float32)).max(),
                   np.abs(both.maps_true.astype(np.float32) - got["true"].maps.astype(np.float32)).max())
        print(f"{name}: {wrong:.0%} wrong; predicted {median['predicted']:.2f} s, true {median['true']:.2f} s, "
              f"both {median['both']:.2f} s = {median['both'] / median['predicted']:.2f}x predicted, "
              f"{median['both'] / (median['predicted'] + median['true']):.2f}x predicted + true; "
              f"maps max abs difference {same:.1e}")


if __name__ == "__main__":
    main()
