"""Command line: `python -m core predict|explain|report|models|benchmark|embed|evaluate|train|audit|download ...`, over the same
functions as the dashboard.

`options` is the parser; the code that runs a subcommand lives with its family (`images`: predict, explain, report,
models; `benchmark`; `data`: embed, evaluate, train; `audit`), each JSON it prints a record beside it. A family's module is
imported when one of its subcommands runs, so `python -m core models` does not load scikit-learn or the training
loop. Bad input or an unknown name exits with status 2 and one `error: ...` line on stderr.
"""

import os

# Before torch loads: OpenMP threads that spin while idle made a forward pass 5-7x slower on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib  # noqa: E402
import sys  # noqa: E402

from core import runtime  # noqa: E402
from core.cli.options import parser  # noqa: E402
from core.errors import CoreError  # noqa: E402

FAMILIES = {"predict": "images", "explain": "images", "report": "images", "models": "images",
            "benchmark": "benchmark", "embed": "data", "evaluate": "data", "train": "data", "audit": "audit",
            "download": "download"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runtime.configure_threads()
    run = getattr(importlib.import_module(f"core.cli.{FAMILIES[args.command]}"), f"run_{args.command}")
    try:
        run(args)
    except CoreError as error:
        sys.stderr.write(f"error: {' '.join(str(error).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0
