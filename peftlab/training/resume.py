"""Resuming a killed run exactly: atomic checkpoint files, and the state Lightning does not keep.

Lightning restores weights, optimiser, scheduler and loop counters. For a resumed run to end with the same numbers as an
uninterrupted one it also needs (1) the torch RNG state (dropout) at the checkpoint, (2) the position in the epoch's
batch order, so a mid-epoch checkpoint continues with the next batch instead of replaying the epoch's first ones, and
(3) the training-loss history (the record's first/last training loss) and the last validation metrics, which no
logger keeps across a kill.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

STATE_KEY = "peftlab_resume"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file beside the checkpoint, then os.replace: a kill never leaves half a checkpoint.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the system temp folder; when
    that is another filesystem the final move is a copy, which a kill can cut short.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:  # a failed save leaves no partial file (a killed one leaves a hidden .tmp nobody reads)
            tmp.unlink(missing_ok=True)


class ResumeState(L.Callback):
    """Saves and restores the RNG state, the next batch's position and the loss history with every checkpoint.

    `datamodule.resume_at` (epoch, batches already trained in it) is set when a checkpoint is loaded, before Lightning
    builds the training loader, so the loader starts at the right batch of the right epoch.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.val_metrics: dict[str, float] = {}  # the last validation before the checkpoint this run resumed from
        self.rng: dict[str, Any] | None = None
        self._flush = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        if done >= trainer.num_training_batches:  # saved at the end of an epoch: continue with the next one
            epoch, done = epoch + 1, 0
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        checkpoint[STATE_KEY] = {"epoch": epoch, "batches_done": done, "rng": rng, "losses": list(self.losses),
                                 "val_metrics": val}
        self._save_logs(trainer)  # what was logged so far reaches the disk with the checkpoint
        self._flush = True  # and the checkpointed step's own row (Lightning logs it after saving) at the next batch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._flush:
            self._save_logs(trainer)
            self._flush = False

    @staticmethod
    def _save_logs(trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        self.losses = list(state["losses"])
        self.val_metrics = dict(state["val_metrics"])
        self.rng = state["rng"]
        if trainer.datamodule is not None and hasattr(trainer.datamodule, "resume_at"):
            trainer.datamodule.resume_at = (int(state["epoch"]), int(state["batches_done"]))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rng is None:
            return
        torch.set_rng_state(self.rng["torch"])
        if "cuda" in self.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng["cuda"])
        self.rng = None
