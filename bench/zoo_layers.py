"""Issue 13's quality bar over the whole list (tests/zoo_layers_cases.py): for each architecture, the CAM layer
`core.layers.find` names, its output shape, Pearson r of our Grad-CAM against pytorch-grad-cam's, and the seconds.

    .venv/bin/python bench/zoo_layers.py [--only SUBSTRING] [--threads 1]
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests import zoo_layers_cases as cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the architectures whose name contains this")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in cases.all_names() if args.only in n]
    rows, failed = [], []
    started = time.perf_counter()
    print(f"{'arch':48} {'layer':44} {'layout':7} {'shape':22} {'r':>9} {'s':>6}", flush=True)
    for name in names:
        try:
            row = cases.check(name)
        except Exception as error:  # noqa: BLE001 -- a failure is a row of the table, not the end of it
            failed.append((name, f"{type(error).__name__}: {error}"))
            print(f"{name:48} FAILED {type(error).__name__}: {str(error)[:150]}", flush=True)
            continue
        rows.append(row)
        print(f"{row.arch:48} {row.layer[:44]:44} {row.layout:7} {str(row.shape):22} {row.r:9.6f} "
              f"{row.seconds:6.1f} {row.reason}", flush=True)
    explained = [r for r in rows if r.layer]
    values = sorted(r.r for r in explained if not math.isnan(r.r))
    reasoned = [r for r in rows if r.reason]
    print(f"\n{len(names)} architectures in {time.perf_counter() - started:.0f} s: {len(explained)} with a CAM layer, "
          f"{len(rows) - len(explained)} without, {len(reasoned)} with a reason, {len(failed)} failed")
    if values:
        def q(p):
            return values[min(len(values) - 1, int(p * len(values)))]
        print(f"r: min {values[0]:.6f}  p5 {q(0.05):.6f}  median {q(0.5):.6f}  max {values[-1]:.6f}  "
              f">=0.99: {sum(v >= 0.99 for v in values)}/{len(explained)}  constant/nan: "
              f"{len(explained) - len(values)}")
    for row in rows:
        if row.reason:
            print(f"reason  {row.arch}: {row.reason}")
    for name, error in failed:
        print(f"failed  {name}: {error}")


if __name__ == "__main__":
    main()
