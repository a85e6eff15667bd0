"""Thread pools and devices: set once at start-up, so that torch, BLAS and OpenCV do not fight.

On a 2-core host, OpenMP spin-waiting from several pools made a forward pass 5-7x slower.
"""

import logging
import os
from collections.abc import Callable

import torch

from core.errors import DeviceError

log = logging.getLogger(__name__)
_CONFIGURED = False


def cores() -> int:
    """CPU cores this process may use (at least 1)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(torch_threads: int | None = None) -> int:
    """Give torch the cores, and BLAS and OpenCV one thread each. Idempotent; returns torch's threads."""
    global _CONFIGURED
    threads = torch_threads or cores()
    if _CONFIGURED and torch_threads is None:
        return torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except Exception as error:  # pragma: no cover - threadpoolctl is a requirement
        log.warning("Could not limit BLAS threads: %s", error)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception as error:  # pragma: no cover
        log.warning("Could not limit OpenCV threads: %s", error)
    _CONFIGURED = True
    return threads


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is refused with a clear message."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no GPU is available here. Use device 'cpu' or 'auto'.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise DeviceError(f"Unknown device '{device}'. Use 'auto', 'cpu' or 'cuda'.")
    return torch.device(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that is safe for inference on `device`, or None for fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} (mixed precision {str(autocast_dtype(device)).removeprefix('torch.')})"
    return f"CPU ({torch.get_num_threads()} threads)"


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


class HalvingBatches:
    """Runs work over a batch in chunks; a CUDA out-of-memory error halves the chunk and retries it.

    The chunk size only shrinks (1 is the floor), so later batches start at the size that fitted. At
    size 1 an out-of-memory error becomes a `DeviceError` with the advice to use the CPU.

        halving = HalvingBatches(64)
        for batch in loader:
            outputs += halving.run(batch, lambda chunk: model(chunk.to(device)))
    """

    def __init__(self, batch_size: int, *, on_halve: Callable[[int, int], None] | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.size = batch_size
        self.halvings = 0
        self._on_halve = on_halve

    def run(self, batch, step):
        """[step(chunk) for each chunk of `batch`], chunks of at most `self.size` rows (halved on OOM)."""
        outputs, start = [], 0
        while start < len(batch):
            chunk = batch[start:start + self.size]
            try:
                outputs.append(step(chunk))
            except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
                if not _is_oom(error):
                    raise
                out_of_memory = True
            else:
                out_of_memory = False
                start += len(chunk)
            if out_of_memory:  # outside the except block, so the failed step's tensors are already freed
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.size == 1:
                    raise DeviceError(
                        "The GPU ran out of memory even for one image at a time. Close other GPU programs, "
                        "choose a smaller input size, or use the CPU."
                    )
                previous, self.size = self.size, max(1, self.size // 2)
                self.halvings += 1
                log.warning("GPU out of memory at batch %d: retrying at %d", previous, self.size)
                if self._on_halve is not None:
                    self._on_halve(previous, self.size)
        return outputs
