"""Prompt tuning (Lester et al. 2021): l_p learned soft-token embeddings prepended to the input embeddings only.

This is the LoRA paper's PreEmbed with l_i = 0: d * (l_p + l_i) = d * l_p parameters, the same as HF peft's
PromptEmbedding. The soft tokens start as randomly sampled rows of the vocabulary embedding (Lester et al.'s
best-performing initialisation).

How it plugs in: hooks on the base model (model.base_model: `bert`, `transformer`, `model`). Before it runs, input ids
become embeddings with the soft tokens in front, the attention mask gains l_p ones and explicit position ids shift by
l_p (the soft tokens hold positions 0..l_p-1). After it runs, the soft tokens' hidden states are cut off again, so
the task model sees one hidden state per real token: causal-LM labels need no padding, GPT-2/Llama classifiers still
pool the last non-pad token found from input_ids, and BERT's pooler is re-run on the real first token ([CLS]).
With a KV cache the soft tokens enter on the first forward only; later steps just extend the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftlab.backbones.families import Family
from peftlab.errors import check_int
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig, freeze, unfreeze_heads

PROMPT_NAME = "soft_prompt"


@dataclass
class PromptConfig(MethodConfig):
    """num_virtual_tokens: l_p, the number of soft tokens."""

    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        check_int("method.num_virtual_tokens", self.num_virtual_tokens)


class SoftPrompt(nn.Module):
    """The soft tokens and the hooks that put them in front of every input of the base model."""

    def __init__(self, num_tokens: int, word_embeddings: nn.Embedding, pooler: nn.Module | None):
        super().__init__()
        w = word_embeddings.weight
        self.embedding = nn.Parameter(torch.empty(num_tokens, w.shape[1], device=w.device, dtype=w.dtype))
        if w.device.type != "meta":
            with torch.no_grad():
                self.embedding.copy_(w[torch.randint(0, w.shape[0], (num_tokens,), device=w.device)])
        # Plain attributes (a tuple), so these frozen backbone modules are not registered twice.
        self._backbone_parts = (word_embeddings, pooler)
        self._prepended: list[bool] = []

    @property
    def num_tokens(self) -> int:
        return self.embedding.shape[0]

    def before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Forward pre-hook: soft tokens in front (first forward of a sequence), mask and positions extended."""
        kwargs = dict(kwargs)
        if args:  # GPT-2's task models pass input_ids positionally
            kwargs["input_ids"], args = args[0], args[1:]
        input_ids, embeds = kwargs.pop("input_ids", None), kwargs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = self._backbone_parts[0](input_ids)
        batch, n = embeds.shape[0], self.num_tokens
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        first = cache is None or cache.get_seq_length() == 0
        if first:
            embeds = torch.cat([self.embedding.to(embeds.dtype).expand(batch, -1, -1), embeds], dim=1)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            kwargs["attention_mask"] = torch.cat([mask.new_ones(batch, n), mask], dim=1)
        positions = kwargs.get("position_ids")
        if positions is not None:
            positions = positions + n
            if first:
                soft = torch.arange(n, device=positions.device).expand(positions.shape[0], -1)
                positions = torch.cat([soft, positions], dim=1)
            kwargs["position_ids"] = positions
        types = kwargs.get("token_type_ids")
        if types is not None and first:
            kwargs["token_type_ids"] = torch.cat([types.new_zeros(batch, n), types], dim=1)
        kwargs["inputs_embeds"] = embeds
        self._prepended.append(first)
        return args, kwargs

    def after(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        """Forward hook: drop the soft tokens' hidden states; re-pool BERT-style models on the real first token."""
        if not self._prepended.pop():
            return output
        n = self.num_tokens
        output.last_hidden_state = output.last_hidden_state[:, n:]
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, n:] for h in output.hidden_states)
        pooler = self._backbone_parts[1]
        if pooler is not None and getattr(output, "pooler_output", None) is not None:
            output.pooler_output = pooler(output.last_hidden_state)
        return output


@register
class Prompt(Method):
    name = "prompt"
    config_class = PromptConfig
    formula = "d * l_p (the LoRA paper's PreEmbed d * (l_p + l_i) with l_i = 0)"

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        freeze(model)
        pooler = None
        if family.pooler is not None:
            try:
                pooler = model.get_submodule(family.pooler)
            except AttributeError:  # e.g. RoBERTa's classifier reads token 0 itself and has no pooler
                pooler = None
        prompt = SoftPrompt(self.config.num_virtual_tokens, model.get_submodule(family.embeddings), pooler)
        model.add_module(PROMPT_NAME, prompt)
        base = model.base_model
        base.register_forward_pre_hook(prompt.before, with_kwargs=True)
        base.register_forward_hook(prompt.after, with_kwargs=True)
        unfreeze_heads(model, family)
        return model
