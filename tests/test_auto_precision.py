"""'auto' precision per job kind (core.embeddings.AUTO): decided from bench/precision.py, detected at run time.

Nothing here depends on this CPU having native bf16: the detection is patched both ways."""

import pytest
import torch

from core import audit, datasets, embeddings, runtime
from core.embeddings import AutoPrecision

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-native-bf16"])
def native(request, monkeypatch) -> bool:
    monkeypatch.setattr(embeddings, "cpu_bf16_supported", lambda: request.param)
    return request.param


def test_auto_is_fp32_for_every_dataset_job_whatever_the_cpu(native, tiny):
    """Pinned: on bench/precision.py's numbers bf16 changed predictions (probe 2.6-7.5%, head 4.7-5.9% of images),
    so 'auto' runs fp32 for the features and the audit even where bf16 is native. Changing AUTO needs new numbers."""
    assert {kind: choice.cpu_bf16 for kind, choice in embeddings.AUTO.items()} == {"features": "fp32", "audit": "fp32"}
    data = datasets.shapes(0, 4, 40)
    assert embeddings.extract(tiny, data, batch_size=4, precision="auto").precision == "fp32"
    assert audit.explain_dataset(tiny, data, batch_size=4, precision="auto").precision == "fp32"
    assert audit.plan(tiny, data.classes, precision="auto").precision == "fp32"
    assert ("bf16" in embeddings.precisions("cpu")) == native  # offered where it is native, chosen by hand


def test_a_kind_whose_bars_pass_gets_bf16_only_where_it_is_native(native, monkeypatch):
    monkeypatch.setitem(embeddings.AUTO, "features", AutoPrecision("bf16", "every bar passed"))
    expected = torch.bfloat16 if native else None
    assert embeddings.resolve_precision("auto", CPU, kind="features") is expected
    assert embeddings.resolve_precision("auto", CPU, kind="audit") is None  # the other kind keeps its own choice
    assert embeddings.resolve_precision("fp32", CPU, kind="features") is None  # a choice by hand is kept
    assert embeddings.resolve_precision("bf16", CPU, kind="audit") is torch.bfloat16
    note = embeddings.auto_note("features", "cpu")
    assert note == ("auto: bf16 on this CPU with native bf16: every bar passed." if native
                    else "auto: fp32 (this CPU has no native bf16, where bf16 is slower).")


def test_the_note_says_what_auto_runs_and_why(monkeypatch):
    monkeypatch.setattr(embeddings, "cpu_bf16_supported", lambda: True)
    note = embeddings.auto_note("audit", "cpu")
    assert note.startswith("auto: fp32 on this CPU with native bf16: ") and "predicted class" in note


def test_the_audit_note_on_a_gpu_without_bf16_says_what_plan_runs(monkeypatch):
    monkeypatch.setattr(runtime, "autocast_dtype", lambda device: torch.float16)
    assert "fp32 for the gradient methods" in embeddings.auto_note("audit", torch.device("cuda"))
    assert embeddings.auto_note("features", torch.device("cuda")) == "auto: float16 autocast on the GPU."
    monkeypatch.setattr(runtime, "autocast_dtype", lambda device: torch.bfloat16)
    assert embeddings.auto_note("audit", torch.device("cuda")) == "auto: bfloat16 autocast on the GPU."
