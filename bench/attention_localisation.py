"""Which explanation finds the object, on a CNN and on a transformer? Measured offline on the shapes set's masks.

    .venv/bin/python bench/attention_localisation.py [--images 300] [--pairs 150] [--seed 0] [--models shapes_vit shapes_cnn]

For each backbone (default: the project's trained Shapes ViT and Shapes CNN) and every one-pass method that applies
to it (the transformer methods rollout, grad_rollout and LeGrad, and the Grad-CAM family on the target layer), each
held-out image is explained for the backbone's own top-1 class and scored by `core.localisation.score`, the
Datasets page's table:
  heat in mask   the share of the map's heat on the object (a uniform map scores the masks' mean area);
  pointing       the pointing-game hit rate (hottest pixel within 15 px per 224 px of the object);
  energy (box)   the energy-based pointing game (Score-CAM): the heat share of the object's bounding box.
A seeded random smooth map is the floor. Prints a Markdown table per backbone, best heat share first.
Seed 0 is the Datasets page's shapes set; the models were trained on seed 1 and tested on seed 2.

With `--pairs N` (0: skip), a second table per backbone on N two-shape pictures (`localisation.pair_pictures`,
two shapes of different classes, seed `--seed`), each explained once for each shape's class:
  asked / other  the heat share on the shape whose class was explained / on the other shape;
  split          asked / (asked + other): 0.5 for a map that does not follow the class;
  pointing       how often the hottest pixel lies on the asked / on the other shape;
  moved          the share of the heat that moves when the target changes (0: the same map for both).
`--images 0` skips the single-shape table.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core import cams, datasets, localisation, models  # noqa: E402


def one_pass(model) -> list[str]:
    """The transformer methods first, then the Grad-CAM family's one-pass methods, as the Datasets page offers them."""
    usable = cams.one_pass(model)
    return [m for m in usable if cams.METHODS[m].attention] + [m for m in usable if not cams.METHODS[m].attention]


def table(model, data) -> str:
    began = time.perf_counter()
    result = localisation.score(model, data, methods=one_pass(model))
    rows = ["| method | class-specific | heat in mask | pointing | energy (box) | ms / image |", "|---|---|---|---|---|---|"]
    for row in result.rows:
        method = cams.METHODS.get(row.method)
        specific = "" if method is None else ("yes" if method.class_specific else "no")
        kind = " (attention)" if method is not None and method.attention else ""
        rows.append(f"| {row.title}{kind} | {specific} | {row.heat_share:.3f} | {row.pointing:.3f} | "
                    f"{row.energy_box:.3f} | {row.seconds / row.images * 1e3:.1f} |")
    rows.append(f"| uniform map | | {result.mask_share:.3f} | | {result.box_share:.3f} | |")
    weights = "trained" if model.pretrained else "RANDOM weights"
    return (f"### {model.spec.title} ({weights}), {len(data)} shapes, seed {data.content_hash.split(':')[1]}, "
            f"{time.perf_counter() - began:.0f} s\n\n" + "\n".join(rows) + "\n")


def pair_table(model, pictures) -> str:
    began = time.perf_counter()
    result = localisation.pairs(model, pictures, methods=one_pass(model))
    rows = ["| method | class-specific | heat on asked | heat on other | split | pointing asked | pointing other "
            "| moved | ms / map |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result.rows:
        method = cams.METHODS.get(row.method)
        specific = "" if method is None else ("yes" if method.class_specific else "no")
        kind = " (attention)" if method is not None and method.attention else ""
        rows.append(f"| {row.title}{kind} | {specific} | {row.asked_share:.3f} | {row.other_share:.3f} | "
                    f"{row.split:.3f} | {row.asked_pointing:.3f} | {row.other_pointing:.3f} | {row.moved:.3f} | "
                    f"{row.seconds / row.explanations * 1e3:.1f} |")
    rows.append(f"| uniform map | | {result.mask_share:.3f} | {result.mask_share:.3f} | 0.500 | | | | |")
    weights = "trained" if model.pretrained else "RANDOM weights"
    return (f"### {model.spec.title} ({weights}), {len(pictures)} two-shape pictures x 2 targets, "
            f"the two shapes are the top-2 classes in {result.top_two:.1%}, {time.perf_counter() - began:.0f} s\n\n"
            + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=0, help="two-shape pictures to score (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["shapes_vit", "shapes_cnn"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = datasets.shapes(args.seed, args.images) if args.images else None
    pictures = localisation.pair_pictures(args.seed, args.pairs) if args.pairs else None
    for name in args.models:
        model = models.load(name, device="cpu", pretrained=models.weights_available(name))
        if data is not None:
            print(table(model, data), flush=True)
        if pictures is not None:
            print(pair_table(model, pictures), flush=True)


if __name__ == "__main__":
    main()
