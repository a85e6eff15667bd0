"""How much memory a piece of work needed: the CUDA allocator's peak, or the growth of the process's peak RSS.

`CudaPeak(device)` / `RssPeak()` read their baseline when made; `.growth()` is the peak above it, in bytes.
"""

import os

import torch


class CudaPeak:
    """Peak CUDA memory allocated above what was allocated when it started."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        torch.cuda.synchronize(device)
        self.baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    def growth(self) -> int:
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - self.baseline)


class RssPeak:
    """Growth of the process's peak resident set (Linux VmHWM, reset through /proc/self/clear_refs).

    Where the peak cannot be reset, falls back to the resident set after the passes (a lower bound).
    Memory the allocator kept from earlier work is reused without growing the RSS, so on CPU this
    is the extra memory this setting needed, not its full working set.
    """

    def __init__(self) -> None:
        self.resettable = _reset_peak_rss()
        self.baseline = _rss_bytes()

    def growth(self) -> int:
        peak = _status_kib("VmHWM") * 1024 if self.resettable else _rss_bytes()
        return max(0, peak - self.baseline)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(key: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
