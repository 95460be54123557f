"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): x + up(f(down(x))) on a sub-layer's output.

Registered as `adapter`; these are the serial bottleneck adapters of the LoRA paper's Adapter^H / Adapter^L rows, not
litgpt's "adapter" (a prefix method; see `prefix`). Placement `houlsby` puts two per block, on the attention output
projection and on the FFN output projection, so each acts before the residual add (and, in BERT/GPT-2, before the
LayerNorm). `pfeiffer` puts one per block, on the FFN output. The up-projection starts at zero, so at initialisation
the model computes exactly what the backbone computed; the down-projection starts small (normal, std 1e-2, as
Houlsby). Each adapter holds 2md + d + m parameters (two weight matrices and two bias vectors); with
train_layer_norms the block's layer norms train too (Houlsby did), adding their weights and biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftlab.backbones.families import Family, blocks, linear_shape
from peftlab.errors import ConfigError, check_choice, check_int
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig, freeze, unfreeze_heads

PLACEMENTS = {"houlsby": ("output", "ffn_down"), "pfeiffer": ("ffn_down",)}
NONLINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class AdapterConfig(MethodConfig):
    """placement: houlsby (after attention and FFN) or pfeiffer (after FFN); bottleneck_size: m; reduction_factor:
    m = d // reduction_factor instead (set exactly one of the two); nonlinearity: relu, gelu, tanh or silu;
    train_layer_norms: also train each block's layer norms."""

    placement: str = "houlsby"
    bottleneck_size: int | None = 64
    reduction_factor: int | None = None
    nonlinearity: str = "gelu"
    train_layer_norms: bool = False

    def __post_init__(self) -> None:
        check_choice("method.placement", self.placement, PLACEMENTS)
        check_choice("method.nonlinearity", self.nonlinearity, NONLINEARITIES)
        if (self.bottleneck_size is None) == (self.reduction_factor is None):
            raise ConfigError("method.bottleneck_size", self.bottleneck_size,
                              f"exactly one of bottleneck_size and reduction_factor (got reduction_factor="
                              f"{self.reduction_factor!r}); set the other to null")
        if self.bottleneck_size is not None:
            check_int("method.bottleneck_size", self.bottleneck_size)
        else:
            check_int("method.reduction_factor", self.reduction_factor)

    def size_for(self, d: int) -> int:
        """The bottleneck width m for a model width d."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        m = d // self.reduction_factor
        if m < 1:
            raise ConfigError("method.reduction_factor", self.reduction_factor, f"an integer <= d_model ({d})")
        return m


class BottleneckAdapter(nn.Module):
    """Wraps a frozen projection: y = h + up(f(down(h))) with h = base(x); up starts at zero (identity)."""

    def __init__(self, base: nn.Module, bottleneck: int, nonlinearity: str):
        super().__init__()
        self.base_layer = base
        d = linear_shape(base)[1]
        w = base.weight
        self.down = nn.Linear(d, bottleneck, device=w.device, dtype=w.dtype)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(bottleneck, d, device=w.device, dtype=w.dtype)
        if w.device.type != "meta":
            nn.init.normal_(self.down.weight, std=1e-2)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return h + self.up(self.act(self.down(h)))


@register
class Adapter(Method):
    name = "adapter"
    config_class = AdapterConfig
    formula = ("L_hat_Adpt * (2 * d * m + d + m) [+ layer-norm parameters with train_layer_norms]; "
               "L_hat_Adpt = 2 * L (houlsby) or L (pfeiffer)")

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        c = self.config
        freeze(model)
        for i, block in enumerate(blocks(model, family)):
            for role in PLACEMENTS[c.placement]:
                parent_path, _, child = family.roles[role].path.rpartition(".")
                parent = block.get_submodule(parent_path)
                base = getattr(parent, child)
                setattr(parent, child, BottleneckAdapter(base, c.size_for(linear_shape(base)[1]), c.nonlinearity))
            if c.train_layer_norms:
                for ln in family.layer_norms:
                    for p in block.get_submodule(ln).parameters():
                        p.requires_grad_(True)
        unfreeze_heads(model, family)
        return model


def adapters(model: nn.Module) -> list[BottleneckAdapter]:
    """Every bottleneck adapter in a model."""
    return [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
