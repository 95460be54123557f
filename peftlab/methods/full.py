"""Full fine-tuning: every backbone weight trains. The reference point for every other method."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftlab.backbones.families import Family
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig


@dataclass
class FullConfig(MethodConfig):
    """No hyper-parameters."""


@register
class Full(Method):
    name = "full"
    config_class = FullConfig
    formula = "all backbone parameters"

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
