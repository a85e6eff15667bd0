"""Live-camera speed: frames per second of core.live.analyse on the CPU, with the stages of one frame.

Feeds what the browser component sends: a JPEG frame scaled so its shorter side is 224 px (299 x 224 for a
4:3 camera), base64-encoded, a different frame each time (the sample photos, shifted). Prints frames per
second over the whole loop and the median milliseconds of each stage: decode (base64 + JPEG + shrink to the
input size), CAM (ONE forward pass, whose logits also give the top-3, + backward to the target layer +
weighting), overlay (colour map, blend, JPEG). The browser adds the round trip and its own drawing on top.

Usage: python bench/webcam.py [--model efficientnet_lite0] [--method gradcam] [--frames 60] [--device cpu]
"""

import argparse
import base64
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from core import live, models, runtime  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
FRAME = (299, 224)  # what the component sends from a 4:3 camera


def frames(count: int) -> list[str]:
    """`count` different base64 JPEG frames of FRAME size, like the browser's."""
    photos = [Image.open(p).convert("RGB").resize(FRAME) for p in sorted(SAMPLES.glob("*.jpg"))]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        shifted = photo.transform(FRAME, Image.Transform.AFFINE, (1, 0, i % 7, 0, 1, i % 5))  # never the same bytes
        buffer = io.BytesIO()
        shifted.save(buffer, format="JPEG", quality=80)
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--method", default="gradcam", choices=live.METHODS)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    threads = runtime.configure_threads()
    model = models.load(args.model, device=args.device, pretrained=models.weights_available(args.model))
    where = runtime.describe_device(model.device)
    batch = frames(args.frames)
    for frame in batch[:5]:  # warm-up
        live.analyse(model, frame, method=args.method)

    results = []
    started = time.perf_counter()
    for frame in batch:
        results.append(live.analyse(model, frame, method=args.method))
    seconds = time.perf_counter() - started

    def median(stage: str) -> float:
        return statistics.median(getattr(r.timings, stage) for r in results)

    print(f"torch {torch.__version__}, {threads} threads, {where}; {model.spec.title}, {args.method}, "
          f"frames {FRAME[0]}x{FRAME[1]} JPEG (overlay {results[0].size[0]}x{results[0].size[1]})")
    print(f"{args.frames} frames in {seconds:.2f} s: {args.frames / seconds:.1f} frames per second "
          f"({seconds / args.frames * 1e3:.1f} ms per frame)")
    print("median ms per stage: " + ", ".join(
        f"{stage.removesuffix('_ms')} {median(stage):.1f}"
        for stage in ("decode_ms", "cam_ms", "overlay_ms", "total_ms")
    ))
    sent = statistics.median(len(f) * 3 / 4 / 1024 for f in batch)
    returned = statistics.median(len(r.overlay_jpeg) / 1024 for r in results)
    print(f"median frame sent {sent:.1f} KB, overlay returned {returned:.1f} KB")


if __name__ == "__main__":
    main()
