"""Peak memory. GPU: bytes allocated by torch's caching allocator (max_memory_allocated after a reset). CPU: the
process's peak resident set size (ru_maxrss), which never goes down, so it only compares runs each in a fresh process."""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window (GPU only; the CPU peak is per process)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> tuple[int, str]:
    """(bytes, how it was measured) for the device."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_peak_rss"
