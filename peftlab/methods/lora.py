"""LoRA (Hu et al. 2021): W x + (alpha / r) * B A x, with A random and B zero so training starts at the base model.

rsLoRA (Kalajdzievski 2023) scales by alpha / sqrt(r) instead. Works on nn.Linear and GPT-2's Conv1D; on GPT-2's fused
q/k/v projection each adapted role gets its own A and B on its slice of the output, as loralib's MergedLinear does.
Merging adds the scaled B A into the base weight so inference costs nothing extra; unmerging subtracts it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.backbones.families import ROLES, Family, blocks, is_linear, linear_names, linear_shape
from peftlab.errors import ConfigError, check_fraction, check_int, check_positive
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig, freeze, head_names, unfreeze_heads


@dataclass
class LoraConfig(MethodConfig):
    """r: rank; alpha: scaling numerator; dropout: on the LoRA branch's input; target_modules: roles
    (query, key, value, output, ffn_up, ffn_gate, ffn_down) or module names (e.g. c_attn, dense); null means the
    family's default (query and value); use_rslora: scale alpha/sqrt(r)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    use_rslora: bool = False

    def __post_init__(self) -> None:
        check_int("method.r", self.r)
        check_positive("method.alpha", self.alpha)
        check_fraction("method.dropout", self.dropout)
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise ConfigError("method.target_modules", self.target_modules, "a non-empty list of roles or module names")
            self.target_modules = list(self.target_modules)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoraLayer(nn.Module):
    """Wraps a frozen linear layer and adds a low-rank update to all of its output or to chosen equal parts of it."""

    def __init__(self, base: nn.Module, r: int, scaling: float, dropout: float,
                 parts: tuple[int, ...] | None = None, num_parts: int = 1):
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = linear_shape(base)
        self.parts, self.num_parts = parts, num_parts
        out = self.out_features // num_parts if parts else self.out_features
        k = len(parts) if parts else 1
        p = base.weight
        self.lora_A = nn.Parameter(torch.empty(k, r, self.in_features, device=p.device, dtype=p.dtype))
        self.lora_B = nn.Parameter(torch.zeros(k, out, r, device=p.device, dtype=p.dtype))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora()

    def reset_lora(self) -> None:
        """A as nn.Linear's default init (Kaiming-uniform, as loralib and peft), B zero: the update starts at 0."""
        if self.lora_A.device.type == "meta":
            return
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A laid out as a (out_features, in_features) matrix."""
        per_part = torch.bmm(self.lora_B, self.lora_A) * self.scaling  # (k, out_part, in)
        if not self.parts:
            return per_part[0]
        full = per_part.new_zeros(self.num_parts, self.out_features // self.num_parts, self.in_features)
        full[list(self.parts)] = per_part
        return full.reshape(self.out_features, self.in_features)

    def _add_to_base(self, sign: float) -> None:
        delta = self.delta_weight().to(self.base_layer.weight.dtype)
        w = self.base_layer.weight.data
        w += sign * (delta if isinstance(self.base_layer, nn.Linear) else delta.T)

    def merge(self) -> None:
        if not self.merged:
            self._add_to_base(1.0)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base(-1.0)
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)  # under autocast the matmuls cast anyway: no extra copy of the activations
        if not self.parts:  # flatten(0, 1) is a view with a free backward; indexing [0] would allocate in backward
            return result + F.linear(F.linear(x, self.lora_A.flatten(0, 1)), self.lora_B.flatten(0, 1)) * self.scaling
        update = torch.einsum("...i,kri->...kr", x, self.lora_A)
        update = torch.einsum("...kr,kor->...ko", update, self.lora_B) * self.scaling
        pieces = list(result.split(self.out_features // self.num_parts, dim=-1))
        for j, part in enumerate(self.parts):
            pieces[part] = pieces[part] + update[..., j, :].to(result.dtype)
        return torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        return f"r={self.lora_A.shape[1]}, scaling={self.scaling:g}, parts={self.parts}"


def resolve_targets(model: nn.Module, family: Family, targets: list[str]) -> dict[str, tuple[tuple[int, ...] | None, int]]:
    """Map target names to {module path: (parts, num_parts)}; parts is None for a whole module.

    A role (query, value, ...) is looked up in the family table in every block; any other name matches linear modules
    whose path ends with it. A name that matches nothing is an error listing what exists.
    """
    heads = tuple(head_names(model, family)) + ("lm_head",)
    found: dict[str, tuple[tuple[int, ...] | None, int]] = {}
    for target in targets:
        hits = 0
        if target in family.roles:
            proj = family.roles[target]
            for i in range(len(blocks(model, family))):
                path = f"{family.blocks}.{i}.{proj.path}"
                if proj.part is None:
                    found[path] = (None, 1)
                elif found.get(path, ((), 1))[0] is not None:
                    found[path] = (tuple(sorted(set(found.get(path, ((), 1))[0]) | {proj.part})), proj.parts)
                hits += 1
        else:
            for path, module in model.named_modules():
                if is_linear(module) and (path == target or path.endswith("." + target)) and not path.startswith(heads):
                    found[path] = (None, 1)
                    hits += 1
        if hits == 0:
            roles = [r for r in ROLES if r in family.roles]
            raise ConfigError("method.target_modules", target,
                              f"roles {', '.join(roles)} or linear layers {', '.join(linear_names(model))}")
    return found


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """Every LoRA layer in a model."""
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


@register
class Lora(Method):
    name = "lora"
    config_class = LoraConfig
    mergeable = True
    formula = "sum over adapted matrices of r * (d_in + d_out); 2 * L_hat * d_model * r for square W_q, W_v (LoRA paper 5.1)"

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        c = self.config
        targets = resolve_targets(model, family, c.target_modules or list(family.default_lora_targets))
        freeze(model)
        for path, (parts, num_parts) in targets.items():
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            base = getattr(parent, child)
            setattr(parent, child, LoraLayer(base, c.r, c.scaling, c.dropout, parts, num_parts))
        unfreeze_heads(model, family)
        return model

    def merge(self, model: nn.Module) -> None:
        for layer in lora_layers(model):
            layer.merge()

    def unmerge(self, model: nn.Module) -> None:
        for layer in lora_layers(model):
            layer.unmerge()
