"""Benchmark rows as the CLI prints them and the dashboard shows and downloads them: columns, text, CSV, JSON."""

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

from core.benchmarks import BenchmarkRow


@dataclass(frozen=True)
class Column:
    """One column of the table that the CLI prints and the dashboard shows."""

    header: str  # with its unit
    value: Callable[[BenchmarkRow], object]
    fmt: str = ""  # format spec for text


COLUMNS = (
    Column("model", lambda r: r.title),
    Column("weights", lambda r: "pretrained" if r.pretrained else "random"),
    Column("device", lambda r: r.device),
    Column("precision", lambda r: r.precision),
    Column("batch", lambda r: r.batch, "d"),
    Column("input", lambda r: f"{r.input_size[0]}x{r.input_size[1]}"),
    Column("p50 ms/batch", lambda r: r.median_ms, ".2f"),
    Column("p95 ms/batch", lambda r: r.p95_ms, ".2f"),
    Column("ms/image", lambda r: r.per_image_ms, ".2f"),
    Column("images/s", lambda r: r.images_per_second, ".1f"),
    Column("params (M)", lambda r: r.params / 1e6, ".2f"),
    Column("GMACs/image", lambda r: r.gmacs, ".3f"),
    Column("peak memory MiB", lambda r: r.peak_memory_mib, ".1f"),
    Column("weights MiB", lambda r: r.weights_mib, ".1f"),
    Column("top-1 %", lambda r: r.top1, ".1f"),
)


def text_table(rows: Sequence[BenchmarkRow]) -> str:
    """The rows as an aligned text table with COLUMNS' headers."""
    cells = [[c.header for c in COLUMNS]]
    for row in rows:
        cells.append([_cell(c, row) for c in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(text.rjust(w) if i >= 4 else text.ljust(w) for i, (text, w) in
                               enumerate(zip(line, widths, strict=True))).rstrip() for line in cells)


def _cell(column: Column, row: BenchmarkRow) -> str:
    value = column.value(row)
    return "—" if value is None else format(value, column.fmt)


def to_csv(rows: Sequence[BenchmarkRow]) -> str:
    """Every field of every row except the individual times; input_size as 'HxW'."""
    names = [f.name for f in fields(BenchmarkRow) if f.name != "times_ms"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = {name: getattr(row, name) for name in names}
        record["input_size"] = f"{row.input_size[0]}x{row.input_size[1]}"
        writer.writerow(record)
    return buffer.getvalue()


def to_json(rows: Sequence[BenchmarkRow], *, machine: str, method: str) -> str:
    """{"machine", "method", "rows": [every field, times included]} as indented JSON."""
    return json.dumps({"machine": machine, "method": method, "rows": [asdict(r) for r in rows]}, indent=2)
