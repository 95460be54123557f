"""BitFit (Ben Zaken et al. 2022): only the backbone's bias terms train, every weight matrix stays frozen.

Every bias counts: attention and FFN projections, layer norms, the embedding layer norm and a pooler if present.
A backbone with no bias terms at all (Llama-style models such as SmolLM2) cannot use it; that is a config error, not
a run that silently trains nothing but the head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftlab.backbones.families import Family
from peftlab.errors import ConfigError
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig, freeze, head_names, unfreeze_heads


@dataclass
class BitFitConfig(MethodConfig):
    """No hyper-parameters."""


def backbone_biases(model: nn.Module, family: Family) -> list[nn.Parameter]:
    """Bias parameters outside the task heads."""
    heads = tuple(h + "." for h in [*head_names(model, family), "lm_head"])
    return [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias" and not n.startswith(heads)]


@register
class BitFit(Method):
    name = "bitfit"
    config_class = BitFitConfig
    formula = "sum of the backbone's bias vectors; BERT/GPT-2: L * (7 d + d_ff) + embedding/final LN (+ pooler) biases"

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        biases = backbone_biases(model, family)
        if not biases:
            raise ConfigError("method.name", self.name,
                              f"a method other than bitfit for {family.name} backbones (they have no bias terms)")
        freeze(model)
        for p in biases:
            p.requires_grad_(True)
        unfreeze_heads(model, family)
        return model
