"""bf16 autocast (channels-last) against fp32 on this CPU, per job kind, in one run: is 'auto' allowed to pick bf16?

    nice .venv/bin/python bench/precision.py [--models efficientnet_lite0,resnet50] [--images 256] [--batch 32]
                                             [--size 128] [--threads 1] [--sets digits,shapes]

For each backbone (Lite0 with its real offline weights, the others with random weights) and each set (digits,
shapes), the features job (`embeddings.extract`) and the explain-a-dataset job (`audit.explain_dataset`, Grad-CAM
of the predicted class) run in fp32 and in bf16, alternating. Printed per row:

- speed: images/s of fp32 and bf16, and their ratio, for extraction and for the audit;
- features: cosine of each image's bf16 features with its fp32 ones (min and mean; bar >= 0.99);
- head: share of images whose top-1 class of the backbone's own head agrees (bar >= 99%), from extraction;
  audit: the same for the audit's predictions;
- probe: share of held-out images whose linear-probe class agrees when the probe is fitted on bf16 features instead
  of fp32 ones (what the Datasets page's confusion matrix shows for sets whose folders are not ImageNet classes);
  fp32: the same agreement between two fp32 extractions at batch 32 and 8 (the probe's own floor);
- maps: Spearman rank correlation of each image's bf16 map with its fp32 map, over the images whose explained class
  agrees (min, 1st percentile, mean; bar >= 0.98).

The verdict: what 'auto' may run per job kind (core.embeddings.AUTO): bf16 only where every bar of its results
passes (features job: cosine, head and probe agreement; audit job: cosine, its predictions and maps). bf16 is only measured where the CPU runs it natively (AVX-512 BF16 / AMX).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import audit, datasets, embeddings, evaluation, models, runtime  # noqa: E402


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def timed(call):
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def measure(model, data, args) -> dict:
    common = {"batch_size": args.batch, "size": args.size}
    embeddings.extract(model, data.subset(range(args.batch)), precision="bf16", **common)  # warm-up (oneDNN kernels)
    embeddings.extract(model, data.subset(range(args.batch)), precision="fp32", **common)
    e32, t_e32 = timed(lambda: embeddings.extract(model, data, precision="fp32", **common))
    e16, t_e16 = timed(lambda: embeddings.extract(model, data, precision="bf16", **common))
    f32 = embeddings.extract(model, data, precision="fp32", batch_size=8, size=args.size)  # fp32 again, other batch
    a32, t_a32 = timed(lambda: audit.explain_dataset(model, data, precision="fp32", **common))
    a16, t_a16 = timed(lambda: audit.explain_dataset(model, data, precision="bf16", **common))
    cos = cosine(e32.features, e16.features)
    head = float((e32.logits.argmax(1) == e16.logits.argmax(1)).mean())
    p32 = evaluation.linear_probe(e32.features, data.labels, seed=0)
    p16 = evaluation.linear_probe(e16.features, data.labels, seed=0)
    probe = float((p32.predicted == p16.predicted).mean())
    floor = float((p32.predicted == evaluation.linear_probe(f32.features, data.labels, seed=0).predicted).mean())
    same = np.flatnonzero(a32.explained == a16.explained)
    rho = np.array([spearman(a32.maps[i].astype(np.float32), a16.maps[i].astype(np.float32)) for i in same])
    n = len(data)
    return {
        "extract_fp32": n / t_e32, "extract_bf16": n / t_e16, "audit_fp32": n / t_a32, "audit_bf16": n / t_a16,
        "cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "head": head, "probe": probe, "floor": floor,
        "audit_head": float((a32.predictions == a16.predictions).mean()),
        "distinct": len(np.unique(e32.logits.argmax(1))),
        "rho_min": float(rho.min()) if len(rho) else float("nan"),
        "rho_p01": float(np.percentile(rho, 1)) if len(rho) else float("nan"),
        "rho_mean": float(rho.mean()) if len(rho) else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--sets", default="digits,shapes")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = runtime.configure_threads(args.threads)
    if not embeddings.cpu_bf16_supported():
        print("This CPU has no native bf16 (AVX-512 BF16 / AMX): 'auto' stays fp32 for every job; nothing to measure.")
        return
    print(f"{args.images} images per set at {args.size} px, batch {args.batch}, {threads} torch thread(s), "
          f"torch {torch.__version__}, native bf16: yes")
    sets = {"digits": lambda: datasets.digits(n=args.images), "shapes": lambda: datasets.shapes(n=args.images)}
    print(f"{'model':18s} {'set':7s} | {'extract fp32/bf16 img/s':>24s} {'x':>5s} | {'audit fp32/bf16':>16s} "
          f"{'x':>5s} | {'cos min':>7s} {'mean':>6s} | {'head':>6s} {'probe':>6s} {'fp32':>6s} {'audit':>6s} | {'rho min':>7s} {'p01':>6s} "
          f"{'mean':>6s} | verdict")
    passes = {"features": [], "audit": []}
    for name in args.models.split(","):
        model = models.load(name, device="cpu", pretrained=models.weights_available(name))
        for set_name in args.sets.split(","):
            r = measure(model, sets[set_name](), args)
            features_ok = r["cos_min"] >= 0.99 and r["probe"] >= 0.99 and r["head"] >= 0.99
            audit_ok = r["audit_head"] >= 0.99 and r["rho_p01"] >= 0.98 and r["cos_min"] >= 0.99
            passes["features"].append(features_ok)
            passes["audit"].append(audit_ok)
            verdict = f"{r['distinct']:3d} head classes; features job: {'bf16' if features_ok else 'fp32'}; audit job: {'bf16' if audit_ok else 'fp32'}"
            print(f"{name:18s} {set_name:7s} | {r['extract_fp32']:11.1f} / {r['extract_bf16']:10.1f} "
                  f"{r['extract_bf16'] / r['extract_fp32']:5.2f} | {r['audit_fp32']:7.1f} / {r['audit_bf16']:6.1f} "
                  f"{r['audit_bf16'] / r['audit_fp32']:5.2f} | {r['cos_min']:7.4f} {r['cos_mean']:6.4f} | "
                  f"{r['head']:6.1%} {r['probe']:6.1%} {r['floor']:6.1%} {r['audit_head']:6.1%} | {r['rho_min']:7.3f} {r['rho_p01']:6.3f} {r['rho_mean']:6.3f} "
                  f"| {verdict}", flush=True)
    print("'auto' on this CPU, bf16 only where every row passes: " + ", ".join(
        f"{kind} {'bf16' if all(ok) else 'fp32'}" for kind, ok in passes.items()))


if __name__ == "__main__":
    main()
