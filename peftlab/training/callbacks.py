"""Callbacks every run gets: training cost (step time, throughput, peak memory) and a divergence guard."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from peftlab.measure import peak_memory, reset_peak_memory, summarize
from peftlab.measure.timing import _sync


class TrainCost(L.Callback):
    """Times each optimisation step (forward, backward, optimiser; data loading excluded) after `warmup` steps.

    Throughput is samples (and non-padding tokens) divided by the summed step times of the timed steps.
    """

    def __init__(self, warmup_steps: int = 3):
        self.warmup_steps = warmup_steps
        self.step_times: list[float] = []
        self.samples = self.tokens = 0
        self._start = 0.0
        self._seen = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reset_peak_memory(pl_module.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        _sync(pl_module.device)
        elapsed = time.perf_counter() - self._start
        self._seen += 1
        if self._seen <= self.warmup_steps:
            return
        self.step_times.append(elapsed)
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()

    def result(self, device: torch.device | str) -> dict[str, Any]:
        """The training-cost fields of the run record."""
        mem, how = peak_memory(device)
        out: dict[str, Any] = {"peak_memory_bytes": mem, "peak_memory_kind": how, "timed_steps": len(self.step_times),
                               "warmup_steps_excluded": self.warmup_steps}
        if self.step_times:
            t = summarize(self.step_times)
            total = sum(self.step_times)
            out |= {"step_time_median_s": t.median_s, "step_time_p90_s": t.p90_s,
                    "train_samples_per_s": self.samples / total, "train_tokens_per_s": self.tokens / total}
        return out


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class DivergenceGuard(L.Callback):
    """Stops the run at the first non-finite training loss; the run is recorded as `diverged`."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise Diverged(f"non-finite training loss ({float(loss)}) at step {trainer.global_step}")
