"""Peak memory, in bytes, with the way it was measured (never compare numbers of two different kinds).

GPU (`cuda_max_memory_allocated`): bytes held by torch's caching allocator at its peak since the last reset (weights,
gradients, optimiser state, activations; not the allocator's cache or the CUDA context).
CPU (`cpu_peak_rss`): the process's peak resident set size (Linux VmHWM) since the last reset. Linux lets a process
reset it (/proc/self/clear_refs); the peak then starts from what is resident at the reset (the loaded model included).
Where the reset is not available the kind is `cpu_peak_rss_process` (ru_maxrss: the whole life of the process), which
only compares runs each in a fresh process. Resident memory counts everything the process holds (Python, libraries,
freed memory malloc has kept), so CPU figures compare configurations each measured in its own fresh process.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_reset_done = False


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on the device (CPU: where the OS allows it)."""
    global _reset_done
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (VmHWM) only; see proc(5)
        _reset_done = True
    except OSError:
        pass


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_memory(device: torch.device | str) -> int:
    """Bytes in use now: allocated tensors on a GPU, resident set size on CPU (0 where unknown)."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else 0


def peak_memory(device: torch.device | str) -> tuple[int, str]:
    """(bytes, how it was measured) for the device."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    hwm = _status_kib("VmHWM")
    if hwm is not None and _reset_done:
        return hwm * 1024, "cpu_peak_rss"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_peak_rss_process"
