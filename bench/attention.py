"""Transformer explanations' speed, measured in one run on ViT-B/16 at 224 x 224 (random weights; CPU, or --device cuda).

Prints:
  (a) rollout + grad_rollout + legrad from our one shared pass / one plain forward pass      (target <= 3.5)
  (b) the same / TorchCAM's LeGrad, a reference gradient-weighted rollout and a reference     (target <= 0.4)
      rollout, run one after another (each its own explicit-attention forward, the references
      with the published full-matrix recurrences)
  (c) Grad-CAM + LayerCAM + rollout + grad_rollout + legrad from the shared pass (`cams.raw_maps`: one forward,
      one backward for all five) / one plain forward pass                                  (issue #14: about 1x
      the cost of one method, i.e. close to (a))
  (d) the same / the five methods as five separate `cams.raw_maps` calls
  (e) the same / two calls, the Grad-CAM family and the attention methods apart (the engine before the shared pass)
  (f) the same / ours in (a): what Grad-CAM and LayerCAM add to the attention methods' pass (about 1)
Medians of repeated, interleaved runs after warm-up.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core import attention, cams, models, runtime  # noqa: E402
from tests import attention_reference as reference  # noqa: E402

METHODS = list(attention.METHODS)
GRADCAM = ["gradcam", "layercam"]
MIXED = GRADCAM + METHODS


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reference_rollout(module, x):
    with torch.no_grad():
        return reference.rollout(reference.explicit_vit_forward(module, x)[1])


def reference_grad_rollout(module, x, target):
    with torch.enable_grad():
        return reference.grad_rollout(*reference.explicit_vit_forward(module, x), target)


def torchcam_legrad(module, x, target):
    from torchcam.methods import LeGrad

    with LeGrad(module, list(module.encoder.layers)) as extractor:
        extractor.model(x)
        return extractor(target)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: the app's setting)")
    args = parser.parse_args()
    runtime.configure_threads()
    if args.threads:
        torch.set_num_threads(args.threads)  # one thread is the steadiest measure on a shared machine
    model = models.load("vit_b_16", device=args.device, pretrained=False)
    with torch.no_grad():  # torchvision zero-initialises the head: give every class a gradient
        model.module.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(model.device)
    target, module = 281, model.module

    def forward():
        with torch.inference_mode():
            module(x)

    def ours():
        attention.raw_maps(model, x, methods=METHODS, target=target)

    def references():
        torchcam_legrad(module, x, target)
        reference_grad_rollout(module, x, target)
        reference_rollout(module, x)

    layer = model.spec.cam_layer

    def mixed():
        cams.raw_maps(model, x, methods=MIXED, target=target, layer=layer)

    def five_calls():
        for name in MIXED:
            cams.raw_maps(model, x, methods=[name], target=target, layer=layer)

    def two_calls():
        cams.raw_maps(model, x, methods=GRADCAM, target=target, layer=layer)
        cams.raw_maps(model, x, methods=METHODS, target=target, layer=layer)

    runs = {"forward": forward, "ours": ours, "references": references, "mixed": mixed, "five": five_calls,
            "two": two_calls}
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved: a slow moment of a shared machine hits all three
            _sync()
            started = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"ViT-B/16, 224 x 224, {args.device}, {torch.get_num_threads()} threads, medians of {args.repeats}")
    print(f"  one plain forward pass            {median['forward'] * 1000:8.1f} ms")
    print(f"  ours: {', '.join(METHODS)} {median['ours'] * 1000:8.1f} ms")
    print(f"  TorchCAM LeGrad + references      {median['references'] * 1000:8.1f} ms")
    print(f"  mixed: {', '.join(MIXED)} {median['mixed'] * 1000:8.1f} ms")
    print(f"  the same as five separate calls   {median['five'] * 1000:8.1f} ms")
    print(f"  the same as two calls (family, attention) {median['two'] * 1000:8.1f} ms")
    print(f"  (a) ours / forward    = {median['ours'] / median['forward']:.2f}  (target <= 3.5)")
    print(f"  (b) ours / references = {median['ours'] / median['references']:.2f}  (target <= 0.4)")
    print(f"  (c) mixed / forward   = {median['mixed'] / median['forward']:.2f}  (five methods, one shared pass)")
    print(f"  (d) mixed / five calls = {median['mixed'] / median['five']:.2f}")
    print(f"  (e) mixed / two calls  = {median['mixed'] / median['two']:.2f}")
    print(f"  (f) mixed / ours       = {median['mixed'] / median['ours']:.2f}  (Grad-CAM + LayerCAM on the same pass)")


if __name__ == "__main__":
    main()
