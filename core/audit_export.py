"""An audit's (`core.audit.Audit`) export: the per-image table as Parquet or CSV bytes (a download), and a
results folder (`write`) that `core.results` reads back. `core.audit` re-exports these names."""

from pathlib import Path

import numpy as np

from core.errors import InvalidInputError


def table_bytes(audit, kind: str) -> bytes:
    """The per-image table as Parquet or CSV bytes (a download), with the settings in the Parquet metadata."""
    import io

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if kind not in ("parquet", "csv"):
        raise InvalidInputError(f"Export as parquet or csv, not '{kind}'.")
    table = _table(audit)
    buffer = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, buffer)
    else:
        pacsv.write_csv(_spreadsheet_safe(table), buffer)
    return buffer.getvalue()


def _spreadsheet_safe(table):
    """The table with text cells that a spreadsheet would run as a formula (=, +, -, @ first) quoted by a '."""
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type):
            column = pa.array([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
                               for v in column.to_pylist()], type=column.type)
        columns.append(column)
    return pa.table(columns, names=table.column_names).replace_schema_metadata(table.schema.metadata)


def _table(audit):
    import json

    import pyarrow as pa

    settings = {k: v for k, v in audit.to_dict().items() if k != "classes"}
    return pa.table(audit.rows()).replace_schema_metadata({"visionlens": json.dumps(settings)})


def described(audit) -> dict:
    """What a results reader needs beside the table (core.results): the engine, the kind, the class names in
    label order and the model's classes in prediction order, and the map side."""
    return {"engine": "in-process", "kind": "audit", "class_names": list(audit.classes),
            "categories": list(audit.categories), "map_side": int(audit.maps.shape[1])}


def write(audit, out: str | Path, *, with_features: bool = False) -> dict[str, Path]:
    """DIR/audit.parquet and DIR/audit.csv (one row per image), DIR/maps.npy ((N, side, side) float16, in the
    table's row order; target "both": DIR/maps_true.npy too), DIR/summary.json, and with `with_features`
    DIR/features.npy. Returns the paths."""
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = _table(audit)
    paths = {"parquet": out / "audit.parquet", "csv": out / "audit.csv", "maps": out / "maps.npy",
             "summary": out / "summary.json"}
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(_spreadsheet_safe(table), paths["csv"])
    np.save(paths["maps"], audit.maps)
    if audit.maps_true is not None:
        paths["maps_true"] = out / "maps_true.npy"
        np.save(paths["maps_true"], audit.maps_true)
    else:
        (out / "maps_true.npy").unlink(missing_ok=True)  # an earlier "both" audit's, in the same folder
    paths["summary"].write_text(json.dumps({**audit.to_dict(), **described(audit)}, indent=2))
    if with_features:
        paths["features"] = out / "features.npy"
        np.save(paths["features"], audit.features)
    return paths
