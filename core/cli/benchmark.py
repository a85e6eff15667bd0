"""`benchmark`: latency, throughput, memory, size and compute of backbones, as a table or JSON."""

import sys

from core import benchmark_tables, benchmarks, registry
from core.cli.common import load_model, one_model_with_checkpoint
from core.errors import InvalidInputError


def run_benchmark(args) -> None:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        registry.get(name)  # unknown names fail before anything heavy
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        raise InvalidInputError(f"--batch takes comma-separated whole numbers such as 1,8; got '{args.batch}'.") from None

    def progress(row, done: int, total: int) -> None:
        sys.stderr.write(f"[{done}/{total}] {row.name} batch {row.batch}: p50 {row.median_ms:.2f} ms "
                         f"({row.repeats} timed passes)\n")

    one_model_with_checkpoint(args, names)
    machine, busy = benchmarks.machine(), benchmarks.busy()
    if args.checkpoint is not None:  # the user's weights: the one model, measured at each batch size
        model, rows = load_model(args, names[0]), []
        for batch in sorted(set(batches)):
            rows.append(benchmarks.measure(model, batch=batch, input_size=args.input_size, precision=args.precision,
                                           repeats=args.repeats, warmup=args.warmup))
            progress(rows[-1], len(rows), len(set(batches)))
    else:
        rows = benchmarks.run(
            names, batches=batches, input_size=args.input_size, precision=args.precision, device=args.device,
            pretrained=False if args.random_weights else None, repeats=args.repeats, warmup=args.warmup,
            on_row=progress,
        )
    method = benchmarks.method(warmup=args.warmup, repeats=args.repeats, device=args.device, precision=args.precision)
    if busy:
        sys.stderr.write(f"note: {busy}\n")
    if args.json:
        print(benchmark_tables.to_json(rows, machine=machine, method=method))
        return
    print(benchmark_tables.text_table(rows))
    print(f"\nmachine: {machine}\nmethod: {method}")
