"""The CUDA path on a real GPU: skipped where there is none (CI, most laptops), run on a lent GPU machine.

Each test compares the GPU with the CPU on the same inputs, so a wrong device move, autocast or
channels_last would show as a different answer, not only as an exception.
"""

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import sample
from core import benchmarks, cams, datasets, embeddings, models, predictions, runtime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def lite0_cuda():
    return models.load("efficientnet_lite0", device="auto")


def test_auto_picks_the_gpu_and_the_model_lives_there(lite0_cuda):
    assert runtime.resolve_device("auto").type == "cuda"
    assert lite0_cuda.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in lite0_cuda.module.parameters())
    assert "GPU" in runtime.describe_device(lite0_cuda.device)


def test_prediction_on_the_gpu_equals_the_cpu(lite0_cuda, lite0):
    image = sample("chelsea")
    gpu, cpu = predictions.predict(lite0_cuda, image, top_k=5), predictions.predict(lite0, image, top_k=5)
    assert gpu[0].index == cpu[0].index == 285  # Egyptian cat
    assert [p.index for p in gpu[:3]] == [p.index for p in cpu[:3]]
    # Predictions on a GPU run under bf16 autocast: probabilities agree to about 0.02 (0.437 vs 0.458 on an H200).
    assert abs(gpu[0].prob - cpu[0].prob) < 0.05


@pytest.mark.parametrize("method", cams.SHARED)
def test_shared_pass_cams_on_the_gpu_match_the_cpu(lite0_cuda, lite0, method):
    image = sample("chelsea")
    (gpu,) = cams.compute(lite0_cuda, image, methods=[method])
    (cpu,) = cams.compute(lite0, image, methods=[method])
    assert gpu.target == cpu.target == 285
    correlation = np.corrcoef(gpu.heatmap.ravel(), cpu.heatmap.ravel())[0, 1]
    assert correlation > 0.99, f"{method}: GPU and CPU heatmaps differ (r = {correlation:.4f})"


def test_extraction_with_autocast_and_channels_last_is_close_to_fp32(lite0_cuda):
    data = datasets.shapes(0, 64, 96)
    full = embeddings.extract(lite0_cuda, data, batch_size=32, precision="fp32")
    mixed = embeddings.extract(lite0_cuda, data, batch_size=32, precision="auto")
    assert mixed.precision in ("bf16", "fp16")
    # bf16 keeps about 3 significant digits: Lite0's features move by about 5% in norm (measured on an H200),
    # but their direction, which the probe and t-SNE use, barely changes.
    cosine = (mixed.features * full.features).sum(1) / (
        np.linalg.norm(mixed.features, axis=1) * np.linalg.norm(full.features, axis=1))
    assert cosine.min() > 0.99, f"lowest cosine similarity {cosine.min():.4f}"
    assert (mixed.logits.argmax(1) == full.logits.argmax(1)).mean() > 0.9


def test_a_real_out_of_memory_halves_the_batch_and_gives_the_same_features():
    model = models.load("resnet50", device="cuda", pretrained=False)
    data = datasets.shapes(1, 256, 64)
    reference = embeddings.extract(model, data, batch_size=8, precision="fp32", size=224)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, free - (1 << 30)), dtype=torch.uint8, device="cuda")  # leave about 1 GiB
    messages = []
    try:
        got = embeddings.extract(model, data, batch_size=256, precision="fp32", size=224,
                                 on_progress=lambda fraction, message: messages.append(message))
    finally:
        del ballast
        torch.cuda.empty_cache()
    halvings = [m for m in messages if "ran out of memory" in m]
    print("\n".join(halvings))
    assert halvings, "256 ResNet-50 images at 224 px should not fit in 1 GiB"
    # Different batch sizes pick different cuDNN kernels (TF32 on): equal up to rounding, not bit for bit.
    cosine = (got.features * reference.features).sum(1) / (
        np.linalg.norm(got.features, axis=1) * np.linalg.norm(reference.features, axis=1))
    assert got.features.shape == reference.features.shape and cosine.min() > 0.999


def test_benchmark_on_the_gpu_synchronises_and_reports_gpu_memory(lite0_cuda):
    row = benchmarks.measure(lite0_cuda, batch=8, precision="bf16", repeats=20, warmup=3)
    assert row.median_ms > 0 and row.p95_ms >= row.median_ms
    assert row.peak_memory_mib > 0
    print(f"\nLite0 batch 8 bf16 on {torch.cuda.get_device_name()}: {row.median_ms:.2f} ms, "
          f"{row.images_per_second:.0f} images/s, peak {row.peak_memory_mib:.0f} MiB")


def test_hooks_are_gone_and_the_cached_model_is_unchanged_after_gpu_work(lite0_cuda):
    before = {k: v.clone() for k, v in lite0_cuda.module.state_dict().items()}
    cams.compute(lite0_cuda, sample("coffee"), methods=list(cams.SHARED))
    from core import hooks

    assert hooks.count(lite0_cuda.module) == 0
    after = lite0_cuda.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert dataclasses.replace(lite0_cuda).device.type == "cuda"


def test_a_live_camera_frame_on_the_gpu_agrees_with_the_cpu(lite0_cuda, lite0):
    from core import live

    frame = sample("chelsea")
    gpu, cpu = live.analyse(lite0_cuda, frame), live.analyse(lite0, frame)
    assert gpu.target == cpu.target == 285
    assert [p.index for p in gpu.predictions] == [p.index for p in cpu.predictions]
    for _ in range(10):
        gpu = live.analyse(lite0_cuda, frame)
    print(f"\nlive frame on the GPU: {gpu.timings.total_ms:.1f} ms ({gpu.timings.cam_ms:.1f} ms pass + backward)")


def test_the_probe_model_on_the_gpu_predicts_as_the_evaluation(lite0_cuda):
    from core import probing
    from tests.test_probing import _probe_logits, probed

    data = datasets.shapes(5, 24, 96)
    _, result = probed(lite0_cuda, data, size=96, batch_size=24)
    model = probing.probe_model(lite0_cuda, result, size=96)
    assert next(model.module.parameters()).device.type == "cuda"
    rows = result.indices.tolist()
    logits = np.stack([_probe_logits(model, data.images[r]) for r in rows])
    assert (logits.argmax(1) == result.predicted).mean() >= 0.9  # TF32 convolutions: ties may flip
    (cam,) = cams.compute(model, data.images[rows[0]], target=int(result.predicted[0]))
    assert cam.label == data.classes[int(result.predicted[0])]


def test_training_in_its_own_process_uses_the_gpu():
    from core import processes, training

    started = []
    run = processes.train("efficientnet_lite0", datasets.digits(0, 60), training.TrainConfig(image_size=64, epochs=2),
                          device="cuda", on_start=lambda pid, threads: started.append(pid))
    assert started and run.ended in ("completed", "early stopping") and len(run.history) >= 1
    assert run.model.device.type == "cuda"
    print(f"\ntraining in a child process on the GPU: test accuracy {run.accuracy:.3f}")
