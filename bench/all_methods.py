"""What 'all' costs: the 13 methods that `explain --method all` and the All methods page now run on a CNN,
against the 10 of the shared pass that 'all' ran before, measured in one run (same model, image, class).

Prints medians of interleaved rounds, the ratio 13 / 10, and each library-path method's own seconds.
    python bench/all_methods.py [rounds] [--model efficientnet_lite0] [--device cpu]
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from core import cams, models, runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=3)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    threads = runtime.configure_threads()
    model = models.load(args.model, device=args.device, pretrained=models.weights_available(args.model))
    image = Image.open(ROOT / "assets" / "samples" / "chelsea.jpg").convert("RGB")
    every = cams.applicable(model)
    before = list(cams.SHARED)
    extra = [m for m in every if m not in before]
    target = 285
    runs = {"shared 10": [], f"all {len(every)}": []}
    per_method: dict[str, list[float]] = {m: [] for m in extra}
    cams.compute(model, image, methods=every, target=target)  # warm-up
    for _ in range(args.rounds):  # interleaved: load drifts on a shared machine hit both alike
        started = time.perf_counter()
        cams.compute(model, image, methods=before, target=target)
        runs["shared 10"].append(time.perf_counter() - started)
        started = time.perf_counter()
        results = cams.compute(model, image, methods=every, target=target)
        runs[f"all {len(every)}"].append(time.perf_counter() - started)
        for result in results:
            if result.method in per_method:
                per_method[result.method].append(result.seconds)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{args.model}, {threads} threads, {runtime.describe_device(model.device)}, "
          f"{image.width}x{image.height} image, medians of {args.rounds} rounds")
    for name, seconds in medians.items():
        print(f"  {name:12s} {seconds:7.2f} s")
    first, second = medians.values()
    print(f"  ratio all / shared: {second / first:.2f}x")
    for name, values in per_method.items():
        print(f"  {cams.METHODS[name].title:12s} {statistics.median(values):7.2f} s  ({cams.METHODS[name].cost})")


if __name__ == "__main__":
    main()
