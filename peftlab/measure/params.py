"""Parameter counts, read off requires_grad after a method is applied (works on the meta device)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


@dataclass(frozen=True)
class ParamCounts:
    """method: trainable parameters the method owns (the LoRA paper's |Θ|); head: the task head, trained under every
    method and counted apart; total: every distinct parameter of the model after the method is applied."""

    method: int
    head: int
    total: int

    @property
    def trainable(self) -> int:
        return self.method + self.head

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def as_record(self) -> dict[str, float]:
        return {**{f"params_{k}": v for k, v in asdict(self).items()}, "params_trainable": self.trainable,
                "trainable_pct": self.trainable_pct}


def count_parameters(model: nn.Module, heads: list[str] | tuple[str, ...] = ()) -> ParamCounts:
    """Count distinct parameters (tied weights once); trainable ones under a module path in heads count as head."""
    prefixes = tuple(f"{h}." for h in heads)
    method = head = total = 0
    for name, p in model.named_parameters():  # named_parameters() yields each shared tensor once
        n = p.numel()
        total += n
        if p.requires_grad:
            if name.startswith(prefixes):
                head += n
            else:
                method += n
    return ParamCounts(method=method, head=head, total=total)
