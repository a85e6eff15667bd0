"""Faithfulness scoring time, measured in one run: the 10 one-pass methods + 3 baselines on one image.

Prints:
  (a) our scorecard (ROAD at 20/40/60/80% both ways, confidence change, 3 baselines) in seconds, and how the
      time splits between imputation and model passes
  (b) pytorch-grad-cam's ROADCombined(percentiles=[20, 40, 60, 80]) + CamMultImageConfidenceChange on the
      same 13 maps (the obvious baseline: the same amount of removal, its imputer and its model passes)
  (c) the ratio (a) / (b), and our imputation alone against the library's NoisyLinearImputer on the same masks
Interleaved runs, medians. Usage: python bench/faithfulness.py [--image chelsea] [--repeats 2] [--device cpu]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange  # noqa: E402
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402

from core import cams, faithfulness, imputation, models, predictions, preprocessing, runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    threads = runtime.configure_threads()
    model = models.load("efficientnet_lite0", device=args.device)
    image = Image.open(ROOT / "assets" / "samples" / f"{args.image}.jpg").convert("RGB")
    methods = list(cams.SHARED)
    results = cams.compute(model, image, methods=methods)
    target = results[0].target
    heatmaps = {r.method: r.heatmap for r in results}
    tensor = preprocessing.to_tensor(image, model.spec)
    print(f"EfficientNet-Lite0 on {args.device} ({threads} torch threads, {runtime.cores()} cores), {args.image} "
          f"at {tuple(tensor.shape[-2:])}, {len(methods)} methods + 3 baselines, fractions "
          f"{faithfulness.fractions_text()}")

    # the 13 maps at the tensor's size, as the scorecard scores them (its inverted map: of its best method)
    card = faithfulness.scorecard(model, image, heatmaps, target)  # warm-up, and the inverted method
    import cv2

    height, width = tensor.shape[-2:]
    resized = [cv2.resize(h, (width, height), interpolation=cv2.INTER_AREA) for h in heatmaps.values()]
    thirteen = np.stack(resized + [faithfulness.random_map((height, width)),
                                   faithfulness.edge_map(tensor, model.spec.mean, model.spec.std),
                                   1.0 - resized[methods.index(card.inverted)]]).astype(np.float32)

    def ours():
        return faithfulness.scorecard(model, image, heatmaps, target)

    def theirs():
        batch = tensor.to(model.device).repeat(len(thirteen), 1, 1, 1)
        targets = [ClassifierOutputSoftmaxTarget(target)] * len(thirteen)
        with model.lock:
            road = ROADCombined(percentiles=[20, 40, 60, 80])(batch, thirteen, targets, model.module)
            confidence = CamMultImageConfidenceChange()(batch, thirteen, targets, model.module)
        return road, confidence

    ours_s, theirs_s = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        mine = ours()
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        road, _ = theirs()
        theirs_s.append(time.perf_counter() - started)
    a, b = statistics.median(ours_s), statistics.median(theirs_s)
    print(f"(a) our scorecard: {a:.1f} s ({len(thirteen) * 9 + 1} model inputs)")
    print(f"(b) pytorch-grad-cam ROADCombined + CamMult on the same maps: {b:.1f} s")
    print(f"(c) ours / theirs: {a / b:.2f}")

    # where our time goes: imputations of the same 8 x 13 masks, and the model passes of as many images
    order = np.random.default_rng(0).permutation(height * width)
    array = tensor[0].numpy()
    masks = [faithfulness.removed_pixels(m, f, most_first=most, order=order)
             for m in thirteen for most in (True, False) for f in faithfulness.FRACTIONS]
    started = time.perf_counter()
    list(imputation.impute_many([(array, r, 0) for r in masks]))
    impute_s = time.perf_counter() - started
    started = time.perf_counter()
    library = NoisyLinearImputer()
    for r in masks[::4]:  # a quarter of them: the library is slow
        library(torch.from_numpy(array), torch.from_numpy((~r).astype(np.float32)))
    library_s = (time.perf_counter() - started) * 4
    batch = torch.from_numpy(np.repeat(array[None], faithfulness.BATCH, axis=0))
    if model.device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)  # as the scorecard passes them
    started = time.perf_counter()
    for _ in range(len(masks) // faithfulness.BATCH + 1):
        predictions.probabilities(model, batch)
    passes_s = time.perf_counter() - started
    print(f"    imputation of the {len(masks)} masks: ours {impute_s:.1f} s ({runtime.cores()} threads)"
          f", the library's {library_s:.1f} s (ratio {impute_s / library_s:.2f}); "
          f"model passes of {(len(masks) // faithfulness.BATCH + 1) * faithfulness.BATCH} images in batches of {faithfulness.BATCH}: {passes_s:.1f} s")
    ranked = sorted(mine.methods, key=lambda m: mine.methods[m].faithfulness, reverse=True)
    print("    ours:   " + ", ".join(f"{m} {mine.methods[m].faithfulness:+.3f}" for m in ranked)
          + "; baselines " + ", ".join(f"{k} {v.faithfulness:+.3f}" for k, v in mine.baselines.items()))
    print("    theirs: " + ", ".join(f"{m} {road[methods.index(m)]:+.3f}" for m in ranked)
          + f"; baselines random {road[-3]:+.3f}, edges {road[-2]:+.3f}, inverted {road[-1]:+.3f}")


if __name__ == "__main__":
    main()
