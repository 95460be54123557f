"""The small interface every method plugin meets.

A method (1) freezes what must stay fixed, (2) adds or wraps modules, and where it makes sense (3) merges its weights
into the base and back. Which parameters it trains is read off `requires_grad`, so counting, the optimiser and saving
need nothing method-specific. Task heads (a classifier) are trained under every method and counted apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from peftlab.backbones.families import Family
from peftlab.errors import ConfigError


@dataclasses.dataclass
class MethodConfig:
    """Hyper-parameters of a method; subclasses validate their fields in __post_init__."""


class Method:
    """A fine-tuning method: a name, a config class and how it changes a backbone."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    mergeable: ClassVar[bool] = False
    # The paper's formula for this method's parameter count, shown by `peftlab-count` and the docs.
    formula: ClassVar[str] = ""

    def __init__(self, config: MethodConfig):
        self.config = config

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Method":
        """Build from a config mapping; an unknown field is a one-line error naming the allowed ones."""
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        for key in values:
            if key not in fields:
                raise ConfigError(f"method.{key}", values[key], f"fields of method '{cls.name}': {', '.join(sorted(fields)) or 'none'}")
        return cls(cls.config_class(**values))

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        """Freeze the backbone and inject this method's trainable parts; returns the same model."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> None:
        """Fold the method's weights into the base weights (inference costs nothing extra)."""
        raise NotImplementedError(f"method '{self.name}' cannot merge")

    def unmerge(self, model: nn.Module) -> None:
        """Undo merge()."""
        raise NotImplementedError(f"method '{self.name}' cannot merge")

    def fold(self, model: nn.Module) -> None:
        """After training, drop training-only reparameterisations (prefix tuning's MLP) so that the saved adapter and
        inference use the final form. Outputs do not change. Most methods have nothing to fold."""

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors an adapter file holds: every trainable parameter (method and head), by name."""
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def hparams(self) -> dict[str, Any]:
        """The method's hyper-parameters, for run records."""
        return {"name": self.name, **dataclasses.asdict(self.config)}


def freeze(model: nn.Module) -> None:
    """Make every parameter of the model non-trainable."""
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_heads(model: nn.Module, family: Family) -> list[str]:
    """Make the task heads trainable (a classifier is trained under every method); returns their paths."""
    found = head_names(model, family)
    for name in found:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return found


def head_names(model: nn.Module, family: Family) -> list[str]:
    """Paths of the task-head modules present in the model (never the language-model head, which is pretrained).

    For BERT-style classifiers the pooler (dense + tanh on [CLS]) counts as head, as RoBERTa's classifier.dense does:
    it is a sentence-level layer that the task trains, and a frozen one from a model pretrained without it (MiniLM
    sentence embeddings use mean pooling) leaves every parameter-efficient method stuck at the majority class.
    """
    paths = [h for h in (*family.heads, family.pooler) if h and h != "lm_head"]
    return [p for p in paths if _has(model, p)]


def _has(model: nn.Module, path: str) -> bool:
    """Whether the model has a submodule at path."""
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False
