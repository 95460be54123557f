"""The LightningModule shared by every method: the method changes the model, never the training loop."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import nn

from peftlab.errors import check_fraction, check_positive
from peftlab.training.generation import exact_match, greedy_answers

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up (warmup_ratio of all steps) then linear decay to zero."""

    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_positive("optim.lr", self.lr)
        check_positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        check_fraction("optim.warmup_ratio", self.warmup_ratio)


def linear_schedule(total_steps: int, warmup_steps: int):
    """LambdaLR factor: 0 -> 1 over warmup_steps, then 1 -> 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class FineTuneModule(L.LightningModule):
    """Loss, metrics and the optimiser over trainable parameters only, for classification and causal LM."""

    def __init__(self, model: nn.Module, task: str, optim: OptimConfig):
        super().__init__()
        self.model, self.task, self.optim = model, task, optim
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it finds
        # Checkpoints hold only trainable weights (see on_save_checkpoint), so loading them is not strict.
        self.strict_loading = False

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self(batch)
        n = batch["input_ids"].shape[0]
        sync = stage != "train"  # under DDP, validation and test metrics average over every process's shard
        self.log(f"{stage}_loss", out.loss, prog_bar=True, batch_size=n, on_step=stage == "train", on_epoch=True,
                 sync_dist=sync)
        if self.task == "classification" and stage != "train":
            acc = (out.logits.argmax(-1) == batch["labels"]).float().mean()
            self.log(f"{stage}_acc", acc, prog_bar=True, batch_size=n, on_epoch=True, sync_dist=sync)
        return out.loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_perplexity(self, stage: str) -> None:
        loss = self.trainer.callback_metrics.get(f"{stage}_loss")
        if self.task == "causal_lm" and loss is not None:
            self.log(f"{stage}_ppl", math.exp(min(float(loss), 50.0)))

    def _log_exact_match(self, stage: str) -> None:
        """Greedy answers to the split's prompts against its responses, for prompt -> response pairs."""
        if self.task != "causal_lm" or self.trainer.sanity_checking:
            return
        dm = getattr(self.trainer, "datamodule", None)
        raw = dm.raw.get(stage) if dm is not None and dm.cfg.format == "pairs" else None
        if raw is None:
            return
        answers = greedy_answers(self.model, dm.tokenizer, list(raw["prompt"]), list(raw["response"]),
                                 batch_size=dm.cfg.eval_batch_size)
        self.log(f"{stage}_exact_match", exact_match(answers, list(raw["response"])))

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")
        self._log_exact_match("val")

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")
        self._log_exact_match("test")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                betas=tuple(o.betas), eps=o.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(total, int(o.warmup_ratio * total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable weights: a checkpoint is the method's parameters and the head, not the backbone."""
        keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
