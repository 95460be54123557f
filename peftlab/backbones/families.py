"""Per-family facts: where the attention projections, the FFN and the task head live.

Method plugins never hard-code module names; they ask this table. Roles (query, key, value, output, ffn_up,
ffn_down) name a projection inside one transformer block. GPT-2 fuses q, k and v into one Conv1D (`c_attn`), so its
roles point at a slice of that module's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from peftlab.errors import ConfigError

ROLES = ("query", "key", "value", "output", "ffn_up", "ffn_gate", "ffn_down")


@dataclass(frozen=True)
class Projection:
    """A role's module path relative to its block, and for fused modules which third of the output it is."""

    path: str
    part: int | None = None  # index into a fused output (GPT-2 c_attn: 0=q, 1=k, 2=v)
    parts: int = 1  # how many equal parts the fused output has


@dataclass(frozen=True)
class Family:
    """Where things are in one model family."""

    name: str
    blocks: str  # path to the ModuleList of transformer blocks, from the task model's root
    roles: dict[str, Projection]
    attention: str  # the self-attention module inside a block (prefix tuning hooks it)
    embeddings: str  # the input token embedding module, from the task model's root
    heads: tuple[str, ...]  # task-head module names at the root (classifier, score, lm_head)
    layer_norms: tuple[str, ...] = ()  # layer-norm modules inside a block (trained by Houlsby adapters)
    pooler: str | None = None  # a pooler inside the base model that reads token 0 (prompt tuning re-pools after its soft tokens)
    default_lora_targets: tuple[str, ...] = ("query", "value")
    model_types: tuple[str, ...] = field(default=())


def _bert_like(name: str, prefix: str, model_types: tuple[str, ...]) -> Family:
    return Family(
        name=name,
        blocks=f"{prefix}.encoder.layer",
        roles={
            "query": Projection("attention.self.query"),
            "key": Projection("attention.self.key"),
            "value": Projection("attention.self.value"),
            "output": Projection("attention.output.dense"),
            "ffn_up": Projection("intermediate.dense"),
            "ffn_down": Projection("output.dense"),
        },
        attention="attention.self",
        embeddings=f"{prefix}.embeddings.word_embeddings",
        heads=("classifier",),
        layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
        pooler=f"{prefix}.pooler",
        model_types=model_types,
    )


FAMILIES: dict[str, Family] = {
    "bert": _bert_like("bert", "bert", ("bert",)),
    "roberta": _bert_like("roberta", "roberta", ("roberta", "xlm-roberta")),
    "gpt2": Family(
        name="gpt2",
        blocks="transformer.h",
        roles={
            "query": Projection("attn.c_attn", 0, 3),
            "key": Projection("attn.c_attn", 1, 3),
            "value": Projection("attn.c_attn", 2, 3),
            "output": Projection("attn.c_proj"),
            "ffn_up": Projection("mlp.c_fc"),
            "ffn_down": Projection("mlp.c_proj"),
        },
        attention="attn",
        embeddings="transformer.wte",
        heads=("score", "lm_head"),
        layer_norms=("ln_1", "ln_2"),
        model_types=("gpt2",),
    ),
    "llama": Family(
        name="llama",
        blocks="model.layers",
        roles={
            "query": Projection("self_attn.q_proj"),
            "key": Projection("self_attn.k_proj"),
            "value": Projection("self_attn.v_proj"),
            "output": Projection("self_attn.o_proj"),
            "ffn_gate": Projection("mlp.gate_proj"),
            "ffn_up": Projection("mlp.up_proj"),
            "ffn_down": Projection("mlp.down_proj"),
        },
        attention="self_attn",
        embeddings="model.embed_tokens",
        heads=("score", "lm_head"),
        layer_norms=("input_layernorm", "post_attention_layernorm"),
        model_types=("llama", "mistral", "qwen2"),
    ),
}


def family_for(model: nn.Module) -> Family:
    """The family of a transformers model, from its config's model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ConfigError("model (model_type)", model_type, ", ".join(known))


def blocks(model: nn.Module, family: Family) -> nn.ModuleList:
    """The transformer blocks of a model."""
    return model.get_submodule(family.blocks)


def linear_names(model: nn.Module) -> list[str]:
    """Distinct leaf names of the linear-like modules (nn.Linear, GPT-2 Conv1D), for error messages."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_linear(m)}
    return sorted(names)


def is_linear(module: nn.Module) -> bool:
    """nn.Linear or transformers' Conv1D (GPT-2), which stores its weight transposed."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of nn.Linear or Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    in_f, out_f = module.weight.shape  # Conv1D: weight is (in, out)
    return in_f, out_f
