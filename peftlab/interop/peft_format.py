"""HF peft's adapter format: `adapter_config.json` + `adapter_model.safetensors`, written and read without peft.

Export: a peftlab LoRA model becomes a peft LoRA adapter that `peft.PeftModel.from_pretrained(base, dir)` loads with
the same outputs. GPT-2's fused q/k/v projection, where peftlab trains one A and B per adapted slice, is written as
one LoRA of rank k*r on the whole `c_attn` (A stacked, B block-diagonal over the slices, zeros elsewhere) with a
matching alpha in `rank_pattern`/`alpha_pattern`: the same update, in the layout peft knows.
Prefix tuning exports as peft's PREFIX_TUNING (the folded prefixes as `prompt_embeddings`, the same l_p x L*2*kv
layout) when it was trained with `position_offset: true`: peft passes prefixes as a KV cache, which puts real tokens at
positions l_p, l_p + 1, ..., and with the offset peftlab does the same, so the logits are equal; without it they
differ and the export is refused.
Prompt tuning on a causal LM exports as peft's PROMPT_TUNING (`prompt_embeddings`); peft's logits then include the
soft tokens' positions, and the rest equal peftlab's. Prompt tuning for classification is refused: peft's model
pools the first soft token (BERT) or the last position, a pad in a right-padded batch (GPT-2, Llama), where
peftlab pools the real [CLS] or the last real token.
Import: a peft LoRA adapter (plain LoRA: no DoRA, no LoRA bias, no per-layer patterns) becomes a peftlab LoRA.
Task heads travel as peft's `modules_to_save`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from peftlab.backbones.families import family_for, is_linear
from peftlab.errors import ConfigError
from peftlab.measure import save_safetensors
from peftlab.methods import Method, build_method
from peftlab.methods.base import head_names
from peftlab.methods.lora import LoraLayer
from peftlab.results.record import write_json_atomic

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
PROMPT_LEARNING_PREFIX = "base_model."  # peft's prompt-learning models wrap the transformers model one level less
TASK_TYPES = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}


class PeftFormatError(ConfigError):
    """A peft adapter peftlab cannot represent, or a model it cannot export: one line saying what and why."""


def _lora_paths(model: nn.Module) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _fused(layer: LoraLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of one plain LoRA equal to this layer's update; for sliced layers A is stacked and B block-diagonal."""
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    if not layer.parts:
        return a[0], b[0]
    k, r, _ = a.shape
    out_part = layer.out_features // layer.num_parts
    big_b = b.new_zeros(layer.out_features, k * r)
    for j, part in enumerate(layer.parts):
        big_b[part * out_part:(part + 1) * out_part, j * r:(j + 1) * r] = b[j]
    return a.reshape(k * r, -1), big_b


def _trainable_heads(model: nn.Module) -> list[str]:
    """Task heads that train with the adapter (peft's modules_to_save)."""
    heads = head_names(model, family_for(model))
    return [h for h in heads if all(p.requires_grad for p in model.get_submodule(h).parameters())]


def export_lora(model: nn.Module, method: Method, out_dir: Path, task: str, base_model: str | None = None) -> Path:
    """Write a peftlab LoRA model as a peft LoRA adapter directory; returns it."""
    if method.name != "lora":
        raise PeftFormatError("method.name", method.name, "lora")
    layers = _lora_paths(model)
    if not layers:
        raise PeftFormatError("model", type(model).__name__, "a model LoRA was applied to")
    if any(layer.merged for layer in layers.values()):
        raise PeftFormatError("model", "merged LoRA weights", "an unmerged model (call method.unmerge first)")
    c = method.config
    scale_of = (lambda r: math.sqrt(r)) if c.use_rslora else (lambda r: r)
    tensors: dict[str, torch.Tensor] = {}
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for path, layer in layers.items():
        a, b = _fused(layer)
        tensors[f"{PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{PREFIX}{path}.lora_B.weight"] = b
        if a.shape[0] != c.r:  # a fused slice layer: rank k*r, alpha chosen so the scaling stays the same
            rank_pattern[re.escape(path)] = a.shape[0]
            alpha_pattern[re.escape(path)] = layer.scaling * scale_of(a.shape[0])
    trainable_heads = _trainable_heads(model)
    for head in trainable_heads:
        for name, p in model.get_submodule(head).named_parameters():
            tensors[f"{PREFIX}{head}.{name}"] = p.detach()
    conv1d = any(not isinstance(layer.base_layer, nn.Linear) for layer in layers.values())
    config = {
        "peft_type": "LORA", "task_type": TASK_TYPES[task], "base_model_name_or_path": base_model,
        "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout, "use_rslora": c.use_rslora,
        "target_modules": sorted(layers), "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "modules_to_save": trainable_heads or None, "fan_in_fan_out": conv1d, "bias": "none",
        "init_lora_weights": True, "inference_mode": True, "use_dora": False,
    }
    out_dir = Path(out_dir)
    save_safetensors(tensors, out_dir / WEIGHTS_NAME)
    write_json_atomic(out_dir / CONFIG_NAME, config)
    return out_dir


def export_prompt(model: nn.Module, method: Method, out_dir: Path, task: str, base_model: str | None = None) -> Path:
    """Write a peftlab prompt-tuning causal LM as a peft PROMPT_TUNING adapter directory; returns it."""
    from peftlab.methods.prompt import PROMPT_NAME

    if method.name != "prompt":
        raise PeftFormatError("method.name", method.name, "prompt")
    if task != "causal_lm":
        raise PeftFormatError("data.task", task, "causal_lm (for classification peft pools the first soft token or "
                              "the last position, peftlab the real [CLS] or last real token: the logits would differ)")
    embedding = model.get_submodule(PROMPT_NAME).embedding.detach()
    c = model.config
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": TASK_TYPES[task], "base_model_name_or_path": base_model,
        "num_virtual_tokens": embedding.shape[0], "token_dim": embedding.shape[1], "num_transformer_submodules": 1,
        "num_attention_heads": c.num_attention_heads, "num_layers": c.num_hidden_layers,
        "prompt_tuning_init": "RANDOM", "inference_mode": True,
    }
    out_dir = Path(out_dir)
    save_safetensors({"prompt_embeddings": embedding}, out_dir / WEIGHTS_NAME)
    write_json_atomic(out_dir / CONFIG_NAME, config)
    return out_dir


def export_prefix(model: nn.Module, method: Method, out_dir: Path, task: str, base_model: str | None = None) -> Path:
    """Write a peftlab prefix-tuning model (trained with position_offset) as a peft PREFIX_TUNING adapter directory."""
    from peftlab.methods.prefix import encoder, kv_shape

    if method.name != "prefix":
        raise PeftFormatError("method.name", method.name, "prefix")
    if not method.config.position_offset:
        raise PeftFormatError("method.position_offset", False, "true (peft puts real tokens at positions l_p, l_p + 1, "
                              "...; an adapter trained at positions 0, 1, ... would give other logits)")
    with torch.no_grad():
        table = encoder(model).prefixes().detach()
    num_layers, kv_heads, head_dim = kv_shape(model)
    tensors = {"prompt_embeddings": table}
    heads = _trainable_heads(model)
    for head in heads:
        for name, p in model.get_submodule(head).named_parameters():
            tensors[f"{PROMPT_LEARNING_PREFIX}{head}.{name}"] = p.detach()
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": TASK_TYPES[task], "base_model_name_or_path": base_model,
        "num_virtual_tokens": table.shape[0], "token_dim": kv_heads * head_dim, "num_attention_heads": kv_heads,
        "num_layers": num_layers, "num_transformer_submodules": 1, "encoder_hidden_size": kv_heads * head_dim,
        "prefix_projection": False, "modules_to_save": heads or None, "inference_mode": True,
    }
    out_dir = Path(out_dir)
    save_safetensors(tensors, out_dir / WEIGHTS_NAME)
    write_json_atomic(out_dir / CONFIG_NAME, config)
    return out_dir


def export_adapter(model: nn.Module, method: Method, out_dir: Path, task: str, base_model: str | None = None) -> Path:
    """Export in peft's format whatever method peft computes the same way (LoRA; prefix tuning with position_offset;
    prompt tuning for causal LMs)."""
    exporters = {"lora": export_lora, "prefix": export_prefix, "prompt": export_prompt}
    if method.name not in exporters:
        raise PeftFormatError("method.name", method.name, ", ".join(exporters))
    return exporters[method.name](model, method, out_dir, task, base_model)


# peft LoRA features that change the computation and have no peftlab equivalent: refused rather than ignored.
UNSUPPORTED = {"use_dora": False, "lora_bias": False, "layers_to_transform": None, "layers_pattern": None,
               "target_parameters": None, "trainable_token_indices": None, "layer_replication": None,
               "use_qalora": False, "use_bdlora": None, "alora_invocation_tokens": None}


def read_peft_config(adapter_dir: Path) -> dict[str, Any]:
    """A peft LoRA adapter's config, refused (PeftFormatError) when it uses something peftlab's LoRA does not have."""
    path = Path(adapter_dir) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PeftFormatError("peft adapter", str(path), f"a readable {CONFIG_NAME} ({type(err).__name__})") from None
    if config.get("peft_type") != "LORA":
        raise PeftFormatError("peft_type", config.get("peft_type"), "LORA (only LoRA adapters are imported)")
    for key, plain in UNSUPPORTED.items():
        if config.get(key, plain) not in (plain, {}, []):
            raise PeftFormatError(key, config[key], f"{plain} (peftlab's LoRA has no equivalent)")
    if config.get("bias", "none") != "none":
        raise PeftFormatError("bias", config["bias"], "none")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise PeftFormatError("rank_pattern/alpha_pattern", "per-module ranks", "one r and lora_alpha for every module")
    if not isinstance(config.get("target_modules"), list):
        raise PeftFormatError("target_modules", config.get("target_modules"), "a list of module names (not a regex)")
    return config


def import_lora(adapter_dir: Path, model: nn.Module) -> Method:
    """Apply a peft LoRA adapter to a fresh base model as a peftlab LoRA; returns the method."""
    config = read_peft_config(adapter_dir)
    path = Path(adapter_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise PeftFormatError("peft adapter", str(path), f"{WEIGHTS_NAME} (pickled adapter_model.bin files are never loaded)")
    tensors = load_file(str(path))
    targets = [name for name, m in model.named_modules() if is_linear(m)
               and any(name == t or name.endswith("." + t) for t in config["target_modules"])]
    heads = tuple(head_names(model, family_for(model))) + ("lm_head",)
    targets = [t for t in targets if not t.startswith(heads)]
    if not targets:
        raise PeftFormatError("target_modules", config["target_modules"], "module names present in this model")
    method = build_method({"name": "lora", "r": config["r"], "alpha": config["lora_alpha"],
                           "dropout": config.get("lora_dropout", 0.0), "target_modules": targets,
                           "use_rslora": bool(config.get("use_rslora", False))})
    method.apply(model, family_for(model))
    params = dict(model.named_parameters())
    expected: dict[str, str] = {}
    for t in targets:
        expected[f"{PREFIX}{t}.lora_A.weight"] = f"{t}.lora_A"
        expected[f"{PREFIX}{t}.lora_B.weight"] = f"{t}.lora_B"
    for head in config.get("modules_to_save") or []:
        if head in dict(model.named_children()):
            for name, _ in model.get_submodule(head).named_parameters():
                expected[f"{PREFIX}{head}.{name}"] = f"{head}.{name}"
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise PeftFormatError("peft adapter tensors", f"missing {missing[:2]} unexpected {extra[:2]}",
                              "one lora_A and lora_B per target module, plus the modules_to_save")
    with torch.no_grad():
        for key, name in expected.items():
            target = params[name]
            value = tensors[key].unsqueeze(0) if name.endswith(("lora_A", "lora_B")) else tensors[key]
            if tuple(value.shape) != tuple(target.shape):
                raise PeftFormatError(f"peft tensor {key}", f"shape {tuple(tensors[key].shape)}",
                                      f"a shape that fits this model ({tuple(target.shape)})")
            target.copy_(value.to(target.dtype))
    return method
