"""GPU out-of-memory handling, simulated on the CPU: batched work halves its batch and retries, down to 1."""

import dataclasses

import numpy as np
import pytest
import torch

from core import datasets, embeddings, models
from core.errors import DeviceError
from core.runtime import HalvingBatches


def _fits(limit: int):
    """A step that 'runs out of GPU memory' for chunks over `limit` rows and returns the rows it saw."""
    seen = []

    def step(chunk):
        if len(chunk) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(len(chunk))
        return list(chunk)

    return step, seen


def test_halves_until_the_chunk_fits_and_keeps_every_row_in_order():
    halved = []
    halving = HalvingBatches(16, on_halve=lambda old, new: halved.append((old, new)))
    step, seen = _fits(3)
    outputs = halving.run(list(range(10)), step)
    assert [row for chunk in outputs for row in chunk] == list(range(10))
    assert halved == [(16, 8), (8, 4), (4, 2)]
    assert halving.size == 2 and halving.halvings == 3
    assert seen == [2, 2, 2, 2, 2]
    # The next batch starts at the size that fitted: no new halving.
    assert [row for chunk in halving.run(list(range(5)), step) for row in chunk] == list(range(5))
    assert halving.halvings == 3


def test_the_old_style_runtime_error_counts_as_out_of_memory():
    def step(chunk):
        if len(chunk) > 1:
            raise RuntimeError("CUDA error: out of memory")
        return chunk

    halving = HalvingBatches(4)
    assert halving.run([1, 2, 3], step) == [[1], [2], [3]]
    assert halving.size == 1


def test_out_of_memory_at_one_image_is_a_clear_device_error():
    step, _ = _fits(0)
    with pytest.raises(DeviceError, match="even for one image"):
        HalvingBatches(4).run([1, 2], step)


def test_other_errors_are_not_swallowed():
    def step(chunk):
        raise RuntimeError("shape mismatch")

    halving = HalvingBatches(8)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        halving.run([1, 2], step)
    assert halving.size == 8


def test_feature_extraction_survives_a_simulated_oom_with_the_same_features(tiny):
    data = datasets.digits(seed=0, n=12, size=32)
    expected = embeddings.extract(tiny, data, batch_size=4, size=32, precision="fp32")

    module = models.load(tiny.name, device="cpu").module  # a private copy: the shared fixture stays untouched

    def refuse_big_batches(_module, args):
        if args[0].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = module.register_forward_pre_hook(refuse_big_batches)
    messages = []
    try:
        got = embeddings.extract(dataclasses.replace(tiny, module=module), data, batch_size=8, size=32, precision="fp32",
                                 on_progress=lambda fraction, message: messages.append(message))
    finally:
        handle.remove()
    np.testing.assert_allclose(got.features, expected.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    assert any("ran out of memory at batch 8: continuing at 4" in m for m in messages)
    assert any("at batch 4: continuing at 2" in m for m in messages)
