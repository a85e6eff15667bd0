"""CAM speed, measured in one run on the same model, image, layer and class (224 x 224; CPU, or --device cuda).

Prints per model:
  (a) our Grad-CAM / one inference forward pass                       (target <= 1.3)
  (b) seven gradient methods from our one pass / pytorch-grad-cam's    (target <= 0.1)
      seven classes called one after another
  (c) the same seven from one pass / one pytorch-grad-cam GradCAM call (target <= 0.6)
Medians of repeated, interleaved runs after warm-up.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from core import cams, hooks, models, runtime  # noqa: E402

SEVEN = ["gradcam", "hirescam", "gradcam_elementwise", "gradcam++", "xgradcam", "layercam", "eigengradcam"]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time it to the end


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        started = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, repeats: int, device: str = "cpu") -> dict[str, float]:
    model = models.load(name, device=device, pretrained=models.weights_available(name))
    tensor = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(model.device)
    target, layer = 281, model.spec.cam_layer
    module = hooks.find(model.module, layer)

    def forward():
        with torch.inference_mode():
            model.module(tensor)

    def ours_gradcam():
        cams.raw_maps(model, tensor, methods=["gradcam"], target=target, layer=layer)

    def ours_seven():
        cams.raw_maps(model, tensor, methods=SEVEN, target=target, layer=layer)

    def library(method):
        with cams.METHODS[method].cls(model=model.module, target_layers=[module]) as cam:
            cam(input_tensor=tensor.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])
        model.module.zero_grad(set_to_none=True)

    def library_seven():
        for method in SEVEN:
            library(method)

    for fn in (forward, ours_gradcam, ours_seven, lambda: library("gradcam"), library_seven):
        fn()  # warm-up
    t = {"forward": [], "ours_gradcam": [], "ours_seven": [], "lib_gradcam": [], "lib_seven": []}
    for _ in range(repeats):  # interleaved so that machine load drifts hit every variant alike
        t["forward"].append(_median(forward, 3))
        t["ours_gradcam"].append(_median(ours_gradcam, 3))
        t["ours_seven"].append(_median(ours_seven, 3))
        t["lib_gradcam"].append(_median(lambda: library("gradcam"), 1))
        t["lib_seven"].append(_median(library_seven, 1))
    return {k: statistics.median(v) for k, v in t.items()}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repeats", nargs="?", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    threads, repeats = runtime.configure_threads(), args.repeats
    where = runtime.describe_device(runtime.resolve_device(args.device))
    print(f"torch {torch.__version__}, {threads} threads, {where}, batch 1, 224x224, medians of {repeats} rounds")
    print(f"{'model':20s} {'forward':>9s} {'ours GC':>9s} {'ours 7':>9s} {'lib GC':>9s} {'lib 7':>9s}   (a)    (b)    (c)")
    for name in ("resnet18", "resnet50", "efficientnet_lite0"):
        r = measure(name, repeats, args.device)
        a = r["ours_gradcam"] / r["forward"]
        b = r["ours_seven"] / r["lib_seven"]
        c = r["ours_seven"] / r["lib_gradcam"]
        ms = {k: f"{v * 1e3:7.1f}ms" for k, v in r.items()}
        print(f"{name:20s} {ms['forward']:>9s} {ms['ours_gradcam']:>9s} {ms['ours_seven']:>9s} "
              f"{ms['lib_gradcam']:>9s} {ms['lib_seven']:>9s}  {a:5.2f}  {b:5.3f}  {c:5.2f}")


if __name__ == "__main__":
    main()
