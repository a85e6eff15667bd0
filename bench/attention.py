"""Transformer explanations' speed, measured in one run on ViT-B/16 at 224 x 224 (random weights; CPU, or --device cuda).

Prints:
  (a) rollout + grad_rollout + legrad from our one shared pass / one plain forward pass      (target <= 3.5)
  (b) the same / TorchCAM's LeGrad, a reference gradient-weighted rollout and a reference     (target <= 0.4)
      rollout, run one after another (each its own explicit-attention forward, the references
      with the published full-matrix recurrences)
Medians of repeated, interleaved runs after warm-up.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core import attention, models, runtime  # noqa: E402
from tests import attention_reference as reference  # noqa: E402

METHODS = list(attention.METHODS)


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

    runs = {"forward": forward, "ours": ours, "references": references}
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
    print(f"  (a) ours / forward    = {median['ours'] / median['forward']:.2f}  (target <= 3.5)")
    print(f"  (b) ours / references = {median['ours'] / median['references']:.2f}  (target <= 0.4)")


if __name__ == "__main__":
    main()
