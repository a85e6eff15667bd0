"""Target "both" of an audit (`core.audit`): beside each image's map of its predicted class, the map of its true
class, so that a wrong prediction shows where the model looked for what it said and for what it should have said.

Where the prediction is the label the two maps are one map, so the second is only computed for the other rows:
one more pass (forward, and the backward to the target layer) over the wrongly predicted images, each explaining
its label. In eval mode nothing mixes images within a batch (BatchNorm uses its running statistics), so a row's
map does not depend on the rows beside it: these maps are those a "true" audit gives. The second maps' statistics
are the same columns with `SUFFIX` ("heat_in_mask_true", ...).
"""

from collections.abc import Callable, Sequence

import numpy as np

from core.map_statistics import statistics

SUFFIX = "_true"


def true_maps(maps: np.ndarray, stats: dict[str, np.ndarray], explained: np.ndarray, labels: np.ndarray,
              masks: Sequence[np.ndarray | None] | None, explain: Callable[[np.ndarray], np.ndarray] | None) -> dict:
    """{"maps_true": (B, side, side) float16, "stats": each of `stats` suffixed} of a batch whose `maps` explain
    `explained`: the rows where `explained` is the label keep their map; `explain(rows)` gives the others' maps
    of their labels (None: the method's map does not depend on the class, so every row keeps its map)."""
    rows = np.flatnonzero(np.asarray(explained) != np.asarray(labels))
    second = maps.copy()
    extra = {f"{name}{SUFFIX}": values.copy() for name, values in stats.items()}
    if explain is not None and len(rows):
        second[rows] = explain(rows)
        scored = statistics(second[rows], None if masks is None else [masks[int(r)] for r in rows])
        for name, values in scored.items():
            extra[f"{name}{SUFFIX}"][rows] = values
    return {"maps_true": second, "stats": extra}


def names(plain: Sequence[str]) -> tuple[str, ...]:
    """The statistics a "both" audit adds to `plain`."""
    return tuple(f"{name}{SUFFIX}" for name in plain)
