"""Callbacks every run gets: training cost (step time, throughput, peak memory) and a divergence guard."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from peftlab.measure import StepTimer, batch_size_and_tokens, peak_memory, reset_peak_memory


class TrainCost(L.Callback):
    """Training cost of a run through the shared StepTimer: step time (forward, backward, optimiser step and Lightning's
    per-step hooks; fetching the batch and its copy to the device excluded), iteration time (batch end to batch end,
    all included), throughput after `warmup_steps`, and peak memory over training (see peftlab.measure.memory).
    """

    def __init__(self, warmup_steps: int = 3):
        self.timer = StepTimer(warmup_steps)
        self.world_size = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.timer.device = pl_module.device
        reset_peak_memory(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.timer.pause()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.timer.pause()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.timer.start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.timer.stop(*batch_size_and_tokens(batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under DDP each process times its own batches; the gradient all-reduce keeps the steps in lockstep, so
        throughput is the samples and tokens of all processes over rank 0's step times."""
        self.world_size = trainer.world_size
        if trainer.world_size > 1:
            counts = torch.tensor([self.timer.samples, self.timer.tokens], device=pl_module.device)
            total = trainer.strategy.reduce(counts, reduce_op="sum")
            self.timer.samples, self.timer.tokens = int(total[0]), int(total[1])

    def result(self, device: torch.device | str) -> dict[str, Any]:
        """The training-cost fields of the run record (peak memory is this process's: rank 0's under DDP)."""
        mem, how = peak_memory(device)
        return {"peak_memory_bytes": mem, "peak_memory_kind": how, "world_size": self.world_size, **self.timer.result()}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class DivergenceGuard(L.Callback):
    """Stops the run at the first non-finite training loss; the run is recorded as `diverged`."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise Diverged(f"non-finite training loss ({float(loss)}) at step {trainer.global_step}")


class EpochReseed(L.Callback):
    """Reseed torch before each epoch's first batch from (seed, epoch): dropout is the same whether or not the run was
    resumed. (Not in on_train_epoch_start: Lightning skips that hook for the epoch after a checkpoint saved on an
    epoch's last batch; a run resumed mid-epoch gets its RNG state back from peftlab.training.resume.ResumeState.)"""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            torch.manual_seed(self.seed * 100_003 + trainer.current_epoch)
