"""Timing with warm-up, repeats, medians and p90, synchronising the GPU before reading the clock.

`time_calls` times one function; `compare_calls` times several interleaved round by round, so that load from other
processes falls on every contender alike (comparisons are ratios measured side by side). `StepTimer` is the training
clock shared by the trainer's callback and the benchmarks' plain PyTorch loop.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    """Median and 90th percentile (nearest rank: the ceil(0.9 n)-th smallest) of timed samples, in their unit."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    rank = (9 * len(ordered) + 9) // 10  # ceil(0.9 n) in integers, free of float rounding
    return Timing(median_s=statistics.median(ordered), p90_s=ordered[rank - 1], n=len(ordered))


def sync(device: torch.device | str | None) -> None:
    """Wait for the GPU's queued work (no-op on CPU), so the clock reads finished work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast to dtype on the device's type, or nothing when dtype is None (full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 3,
               device: torch.device | str | None = None, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call fn warmup times untimed, then repeats times timed one by one; the GPU is synchronised around each call."""
    return compare_calls({"fn": fn}, repeats, warmup, device, clock)["fn"]


def compare_calls(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 3,
                  device: torch.device | str | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time several functions interleaved: each round calls every one once, the order rotating by one each round.

    Every function is warmed up `warmup` times first. Returns a Timing per name over its `repeats` timed calls.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            sync(device)
            start = clock()
            fns[name]()
            sync(device)
            samples[name].append(clock() - start)
    return {name: summarize(s) for name, s in samples.items()}


def random_tokens(vocab_size: int, batch_size: int, seq_len: int, device: torch.device | str = "cpu",
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch of random non-special token ids (ids >= min(1000, vocab/2)) with full attention."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _forward_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                dtype: torch.dtype | None) -> Callable[[], object]:
    device = next(iter(inputs.values())).device

    @torch.inference_mode()
    def forward() -> object:
        with autocast(device, dtype):
            return model(**inputs)

    return forward


def latency(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int = 20, warmup: int = 3,
            dtype: torch.dtype | None = None) -> Timing:
    """Inference latency of one forward pass on a fixed batch (eval mode, no autograd, autocast to dtype if given)."""
    return compare_latency({"model": model}, inputs, repeats, warmup, dtype)["model"]


def compare_latency(models: Mapping[str, torch.nn.Module], inputs: dict[str, torch.Tensor], repeats: int = 20,
                    warmup: int = 3, dtype: torch.dtype | None = None) -> dict[str, Timing]:
    """Latency of several models on the same batch, timed interleaved (see compare_calls)."""
    modes = {name: m.training for name, m in models.items()}
    device = next(iter(inputs.values())).device
    try:
        for m in models.values():
            m.eval()
        return compare_calls({n: _forward_fn(m, inputs, dtype) for n, m in models.items()}, repeats, warmup, device)
    finally:
        for name, m in models.items():
            m.train(modes[name])


class StepTimer:
    """The training clock: start() and stop() bracket each optimisation step (forward, backward, optimiser step).

    Step time excludes fetching the batch; iteration time (stop to stop) includes it and everything between steps
    (framework hooks, logging). The first `warmup` steps are excluded. Throughput is samples or tokens divided by the
    summed step times. pause() forgets the last stop, so an iteration never spans a validation loop or an epoch end.
    """

    def __init__(self, warmup: int = 3, device: torch.device | str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.warmup, self.device, self.clock = warmup, device, clock
        self.step_times: list[float] = []
        self.iteration_times: list[float] = []
        self.samples = self.tokens = self.seen = 0
        self._start = 0.0
        self._last_stop: float | None = None

    def start(self) -> None:
        sync(self.device)
        self._start = self.clock()

    def stop(self, samples: int, tokens: int) -> None:
        sync(self.device)
        now = self.clock()
        self.seen += 1
        if self.seen > self.warmup:
            self.step_times.append(now - self._start)
            self.samples += samples
            self.tokens += tokens
            if self._last_stop is not None:
                self.iteration_times.append(now - self._last_stop)
        self._last_stop = now

    def pause(self) -> None:
        self._last_stop = None

    def result(self) -> dict[str, Any]:
        """step_time_{median,p90}_s, iteration_time_{median,p90}_s, train_{samples,tokens}_per_s, counts."""
        out: dict[str, Any] = {"timed_steps": len(self.step_times), "warmup_steps_excluded": self.warmup}
        if self.step_times:
            t, total = summarize(self.step_times), sum(self.step_times)
            out |= {"step_time_median_s": t.median_s, "step_time_p90_s": t.p90_s,
                    "train_samples_per_s": self.samples / total, "train_tokens_per_s": self.tokens / total}
        if self.iteration_times:
            t = summarize(self.iteration_times)
            out |= {"iteration_time_median_s": t.median_s, "iteration_time_p90_s": t.p90_s}
        return out


def batch_size_and_tokens(batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Samples in a batch and its non-padding tokens (all tokens without an attention mask)."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    return int(ids.shape[0]), int(mask.sum()) if mask is not None else ids.numel()
