"""Prefix tuning (Li & Liang 2021): every self-attention layer attends to l_p learned key/value vectors first.

How it plugs in: transformers' BERT, GPT-2 and Llama attention modules compute q, k, v and then call the attention
function named by `config._attn_implementation`. This module registers one more, `peftlab_prefix`, which prepends the
layer's prefix keys and values and the matching "attend" columns to the mask, then runs PyTorch SDPA. The KV cache
holds only real tokens and the mask is built by transformers' own SDPA mask function, so padded batches, causal
decoding, generation with or without the cache and grouped-query attention (prefixes have num_key_value_heads heads)
all behave as without a prefix.

Positions (`position_offset`, default true): Li & Liang's GPT-2 code and HF peft pass the prefixes as a pre-filled
KV cache, so the prefixes hold positions 0..l_p-1 and real tokens l_p, l_p + 1, ... With position_offset a forward
pre-hook on the base model does the same: every real token's position id is what the model would give it without a
prefix, plus l_p (absolute embeddings for BERT/GPT-2, the RoPE angle for Llama; RoBERTa counts non-pad tokens from
padding_idx + 1 and pads keep padding_idx, as transformers does with a cache of length l_p). Then the logits equal
peft's for the same prefixes, which is what lets an adapter be exported to peft's format. position_offset: false
keeps positions 0, 1, ...: a prefix that attends to nothing then leaves the backbone exactly unchanged, but peft
computes other logits, so such an adapter is not exported. With the offset, models with absolute position embeddings
(BERT, RoBERTa, GPT-2) take l_p fewer real tokens.

Parameters, laid out as HF peft's PrefixEncoder so counts agree: kv = num_key_value_heads * head_dim (= d without
GQA). Without projection: one table of l_p x (L * 2 * kv), i.e. 2 * L * kv * l_p. With the reparameterisation MLP
(projection: true, hidden size h; the paper used 512) training learns l_p x kv embeddings and an MLP
kv -> h -> L * 2 * kv: l_p * kv + (kv * h + h) + (h * 2 * L * kv + 2 * L * kv). After training `fold` replaces
embeddings and MLP by the prefixes they produce, and `export_state` always saves the folded prefixes only.
Relation to the LoRA paper's PreLayer L * d * (l_p + l_i): it counts one d-vector per layer and virtual token
(activations); prefix tuning learns a key and a value per layer and token, 2 * L * kv * l_p, with l_i = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from peftlab.backbones.families import Family, blocks
from peftlab.errors import check_int
from peftlab.methods import register
from peftlab.methods.base import Method, MethodConfig, freeze, unfreeze_heads

ATTENTION_NAME = "peftlab_prefix"
ENCODER_NAME = "prefix_encoder"


@dataclass
class PrefixConfig(MethodConfig):
    """num_virtual_tokens: l_p; projection: train through the reparameterisation MLP; projection_hidden_size: its
    hidden width (Li & Liang used 512); position_offset: real tokens' positions start at l_p (Li & Liang, peft)."""

    num_virtual_tokens: int = 10
    projection: bool = False
    projection_hidden_size: int = 512
    position_offset: bool = True

    def __post_init__(self) -> None:
        check_int("method.num_virtual_tokens", self.num_virtual_tokens)
        check_int("method.projection_hidden_size", self.projection_hidden_size)


def kv_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a transformers model's self-attention."""
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    return c.num_hidden_layers, kv_heads, head_dim


class PrefixEncoder(nn.Module):
    """The learned prefixes: a plain table, or embeddings fed through an MLP while training (peft's layout)."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, num_tokens: int, projection: bool,
                 hidden: int, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.num_layers, self.kv_heads, self.head_dim, self.num_tokens = num_layers, kv_heads, head_dim, num_tokens
        kv = kv_heads * head_dim
        self.projection = projection
        kw = dict(device=device, dtype=dtype)
        if projection:
            self.embedding = nn.Embedding(num_tokens, kv, **kw)
            self.transform = nn.Sequential(nn.Linear(kv, hidden, **kw), nn.Tanh(),
                                           nn.Linear(hidden, num_layers * 2 * kv, **kw))
        else:
            self.embedding = nn.Embedding(num_tokens, num_layers * 2 * kv, **kw)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's prefix keys and values, each (kv_heads, l_p, head_dim)."""
        width = 2 * self.kv_heads * self.head_dim
        rows = slice(i * width, (i + 1) * width)
        if self.projection:  # only layer i's rows of the last linear: the MLP costs what it costs once per forward
            hidden = self.transform[1](self.transform[0](self.embedding.weight))
            last = self.transform[2]
            flat = nn.functional.linear(hidden, last.weight[rows], last.bias[rows])
        else:
            flat = self.embedding.weight[:, rows]
        kv = flat.view(self.num_tokens, 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
        return kv[0], kv[1]

    def prefixes(self) -> torch.Tensor:
        """Every layer's prefixes as one (l_p, L * 2 * kv) table, the MLP applied."""
        if not self.projection:
            return self.embedding.weight
        return self.transform(self.embedding.weight)

    def fold(self) -> None:
        """Replace embeddings + MLP by the prefixes they produce; outputs are unchanged, the MLP is gone."""
        if not self.projection:
            return
        with torch.no_grad():
            table = self.prefixes().detach().clone()
        trainable = self.embedding.weight.requires_grad
        self.embedding = nn.Embedding.from_pretrained(table, freeze=not trainable)
        del self.transform
        self.projection = False


@dataclass
class _Slot:
    """What the attention function needs from an attention module: the encoder and the block index. A plain object,
    so the encoder is not registered a second time as a submodule of every attention module."""

    encoder: PrefixEncoder
    layer: int


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA over [prefix; keys] and [prefix; values]; the mask (boolean, True = attend, or None) gains l_p True columns."""
    slot: _Slot | None = getattr(module, "peftlab_prefix", None)
    if slot is None:  # an attention module without a prefix (e.g. cross-attention)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    is_causal = kwargs.pop("is_causal", None)
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    pk, pv = slot.encoder.layer(slot.layer)
    batch, q_len, kv_len, l_p = query.shape[0], query.shape[2], key.shape[2], pk.shape[1]
    mask = attention_mask
    if mask is None and is_causal and q_len > 1:  # transformers skipped the mask for SDPA's is_causal fast path
        rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
        mask = (torch.arange(kv_len, device=query.device)[None, :] <= rows)[None, None]
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"prefix attention expects a boolean mask, got {mask.dtype}")
        mask = torch.cat([mask.new_ones(*mask.shape[:-1], l_p), mask], dim=-1)
    key = torch.cat([pk.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([pv.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
    return sdpa_attention_forward(module, query, key, value, mask, is_causal=False, **kwargs)


class PositionOffset:
    """Forward pre-hook on the base model: real tokens' position ids shifted by l_p, as if the prefixes were a KV cache
    of length l_p in front of them (what peft and Li & Liang do). Explicit position ids are shifted too."""

    def __init__(self, num_tokens: int, embeddings: nn.Module):
        self.num_tokens = num_tokens
        # RoBERTa-style embeddings number non-pad tokens from padding_idx + 1; their own function does it here too.
        self.from_ids = getattr(embeddings, "create_position_ids_from_input_ids", None)
        self.padding_idx = embeddings.padding_idx if self.from_ids is not None else None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        kwargs = dict(kwargs)
        positions = kwargs.get("position_ids")
        if positions is not None:
            kwargs["position_ids"] = positions + self.num_tokens
            return args, kwargs
        ids = args[0] if args else kwargs.get("input_ids")  # GPT-2's task models pass input_ids positionally
        embeds = kwargs.get("inputs_embeds")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        start = (cache.get_seq_length() if cache is not None else 0) + self.num_tokens
        if self.from_ids is not None and ids is not None:
            kwargs["position_ids"] = self.from_ids(ids, self.padding_idx, start)
            return args, kwargs
        tokens = ids if ids is not None else embeds
        first = start + (self.padding_idx + 1 if self.padding_idx is not None else 0)
        kwargs["position_ids"] = torch.arange(first, first + tokens.shape[1], device=tokens.device)[None]
        return args, kwargs


AttentionInterface.register(ATTENTION_NAME, prefix_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@register
class Prefix(Method):
    name = "prefix"
    config_class = PrefixConfig
    formula = ("2 * L * kv * l_p (kv = d without GQA); with projection while training: "
               "l_p * kv + kv * h + h + 2 * L * kv * (h + 1)")

    def apply(self, model: nn.Module, family: Family) -> nn.Module:
        c = self.config
        freeze(model)
        num_layers, kv_heads, head_dim = kv_shape(model)
        ref = next(model.parameters())
        encoder = PrefixEncoder(num_layers, kv_heads, head_dim, c.num_virtual_tokens, c.projection,
                                c.projection_hidden_size, ref.device, ref.dtype)
        model.add_module(ENCODER_NAME, encoder)
        for i, block in enumerate(blocks(model, family)):
            block.get_submodule(family.attention).peftlab_prefix = _Slot(encoder, i)
        model.config._attn_implementation = ATTENTION_NAME
        if c.position_offset:
            embeddings = model.get_submodule(family.embeddings.rpartition(".")[0])
            offset = PositionOffset(c.num_virtual_tokens, embeddings)
            model.base_model.register_forward_pre_hook(offset, with_kwargs=True)
        unfreeze_heads(model, family)
        return model

    def fold(self, model: nn.Module) -> None:
        """Drop the reparameterisation MLP, keeping the prefixes it produces (after training)."""
        encoder(model).fold()

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The folded prefixes (never the MLP) and the trainable head."""
        state = {n: p.detach() for n, p in model.named_parameters()
                 if p.requires_grad and not n.startswith(ENCODER_NAME + ".")}
        with torch.no_grad():
            state[f"{ENCODER_NAME}.embedding.weight"] = encoder(model).prefixes().detach()
        return state


def encoder(model: nn.Module) -> PrefixEncoder:
    """The prefix encoder of a model prefix tuning was applied to."""
    return model.get_submodule(ENCODER_NAME)
