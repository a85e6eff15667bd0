"""Our median latency against torch.utils.benchmark.Timer, same model, same input, same threads (CPU).

Prints, per model and batch size, our median (benchmarks.measure) and Timer's median
(blocked_autorange, num_threads = torch.get_num_threads()) with their ratio (target: within 10%).
On a shared 2-core machine the load changes from second to second, so the two alternate in short
rounds (about --seconds each). Two ratios are shown: of the medians of all passes pooled, and the
median of the per-round ratios (paired: a burst of load that hits one side of one round moves
one ratio, not the result). The target is judged on the paired ratio; the per-round ratios show
how noisy the machine was.

    .venv/bin/python bench/latency_crosscheck.py [--rounds 20] [--seconds 0.25] [--models resnet18,efficientnet_lite0] [--batch 1,8] [--threads N]
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI and the app do
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.benchmark import Timer  # noqa: E402

from core import benchmarks, models, runtime  # noqa: E402


def timer_times_ms(model: models.LoadedModel, tensor: torch.Tensor, seconds: float) -> list[float]:
    """Timer's per-block times (each block's mean pass) from one blocked_autorange, in ms."""
    forward = torch.inference_mode()(model.module)
    timer = Timer(stmt="forward(tensor)", globals={"forward": forward, "tensor": tensor},
                  num_threads=torch.get_num_threads(), label=model.name)
    with model.lock:
        forward(tensor)  # warm-up, as ours does
        return [t * 1e3 for t in timer.blocked_autorange(min_run_time=seconds).times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.25, help="length of each side of a round")
    parser.add_argument("--models", default="resnet18,efficientnet_lite0")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both (default: all cores; 1 is steadier when another job uses a core)")
    args = parser.parse_args()
    runtime.configure_threads(args.threads)
    print(benchmarks.machine())
    busy = benchmarks.busy()  # before our own passes add to the load
    print(f"{'model':20s} {'batch':>5s} {'ours ms':>9s} {'Timer ms':>9s} {'pooled':>7s} {'paired':>7s}   per-round ratios")
    worst = 0.0
    for name in args.models.split(","):
        model = models.load(name, device="cpu", pretrained=models.weights_available(name))
        for batch in map(int, args.batch.split(",")):
            tensor = benchmarks.fixed_input(batch, model.spec.input_size)
            estimate = benchmarks.measure(model, batch=batch, repeats=3, warmup=2).median_ms
            repeats = max(3, round(args.seconds * 1e3 / estimate))
            ours, theirs, ratios = [], [], []
            for index in range(args.rounds):  # who goes first alternates, so neither always follows the other
                if index % 2:
                    timer = timer_times_ms(model, tensor, args.seconds)
                mine = benchmarks.measure(model, batch=batch, repeats=repeats, warmup=1).times_ms
                if not index % 2:
                    timer = timer_times_ms(model, tensor, args.seconds)
                ours += mine
                theirs += timer
                ratios.append(statistics.median(mine) / statistics.median(timer))
            a, b, paired = statistics.median(ours), statistics.median(theirs), statistics.median(ratios)
            worst = max(worst, abs(paired - 1))
            rounds = " ".join(f"{r:.2f}" for r in ratios)
            print(f"{name:20s} {batch:5d} {a:9.2f} {b:9.2f} {a / b:7.3f} {paired:7.3f}   {rounds}", flush=True)
    print(f"largest paired difference: {worst:.1%} ({'within' if worst <= 0.10 else 'OUTSIDE'} the 10% target)")
    if busy:
        print(f"note: {busy}")


if __name__ == "__main__":
    main()
