"""Where the time of a training run in its own process goes: prints each report with its timestamp.

Usage: python bench/train_process.py [--device cuda] [--images 60] [--epochs 2]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import datasets, processes, training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    last = [""]

    def stamp(what: str) -> None:
        print(f"{time.perf_counter() - started:7.2f} s  {what}", flush=True)

    def progress(fraction: float, message: str) -> None:
        key = message.split(":")[0][:40]
        if key != last[0]:
            last[0] = key
            stamp(message)

    run = processes.train(
        "efficientnet_lite0", datasets.digits(0, args.images), training.TrainConfig(image_size=64, epochs=args.epochs),
        device=args.device, on_start=lambda pid, threads: stamp(f"child {pid} started, {threads} threads"),
        on_epoch=lambda stats: stamp(f"epoch {stats.epoch}"), on_progress=progress,
    )
    stamp(f"returned: {run.ended}, features {run.feature_seconds:.2f} s, epochs {run.train_seconds:.2f} s")


if __name__ == "__main__":
    main()
