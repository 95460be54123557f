"""Timing with warm-up, repeats, medians and p90, synchronising the GPU before reading the clock."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, p90, and how many calls were timed."""

    median_s: float
    p90_s: float
    n: int

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def p90_ms(self) -> float:
        return self.p90_s * 1e3


def summarize(samples: Sequence[float]) -> Timing:
    """Median and 90th percentile (nearest-rank) of timed samples, in the samples' unit."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, max(0, int(round(0.9 * len(ordered) + 0.5)) - 1))]
    return Timing(median_s=statistics.median(ordered), p90_s=p90, n=len(ordered))


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 3,
               device: torch.device | str | None = None, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call fn warmup times untimed, then repeats times timed one by one; the GPU is synchronised around each call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        fn()
        _sync(device)
        samples.append(clock() - start)
    return summarize(samples)


@torch.inference_mode()
def latency(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int = 20, warmup: int = 3) -> Timing:
    """Inference latency of one forward pass on a fixed batch (model in eval mode, no autograd)."""
    was_training = model.training
    model.eval()
    device = next(iter(inputs.values())).device
    try:
        return time_calls(lambda: model(**inputs), repeats=repeats, warmup=warmup, device=device)
    finally:
        model.train(was_training)
