"""Build a task model and its tokenizer from a model config: packaged asset, hub name, local path, or config only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftlab.backbones.assets import ASSETS, MODELS, asset_path, smollm2_dir
from peftlab.backbones.families import blocks, family_for
from peftlab.errors import ConfigError, check_choice, check_int

TASKS = ("classification", "causal_lm")

# Public configurations of architectures we build without weights (random init, or on the meta device to count).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "roberta-base": dict(model_type="roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
    "roberta-large": dict(model_type="roberta", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
    "gpt2-medium": dict(model_type="gpt2", n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024),
    "gpt2-large": dict(model_type="gpt2", n_embd=1280, n_layer=36, n_head=20, vocab_size=50257, n_positions=1024),
    # GPT-3 175B (Brown et al. 2020, Table 2.1) has GPT-2's block layout: d=12288, 96 layers, 96 heads, context 2048.
    "gpt3-175b": dict(model_type="gpt2", n_embd=12288, n_layer=96, n_head=96, vocab_size=50257, n_positions=2048),
    # SmolLM2-135M's public config, a small Llama-style decoder.
    "llama-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=0,
                       eos_token_id=0, pad_token_id=0),
}


@dataclass
class ModelConfig:
    """What backbone to build.

    source: a packaged asset (minilm, smollm2-135m), an architecture name from ARCHITECTURES, a hub id with its
    organisation (FacebookAI/roberta-base) or a local path.
    pretrained: load weights (false: random init from the config).
    num_layers: keep only the first N transformer blocks (small test and demo runs).
    tokenizer: where the tokenizer comes from when it is not beside the weights (config-only architectures).
    """

    name: str
    source: str
    pretrained: bool = True
    num_layers: int | None = None
    tokenizer: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.num_layers is not None:
            check_int("model.num_layers", self.num_layers)
        check_choice("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if self.pretrained and self.source in ARCHITECTURES:
            raise ConfigError("model.pretrained", True, f"false for {self.source} (no weights ship offline; it builds from its config)")


def _resolve(source: str) -> str:
    """A loadable path or hub name for a source."""
    if source == "smollm2-135m":
        return str(smollm2_dir())
    if source in ASSETS:
        return str(asset_path(source))
    return source


def build_config(cfg: ModelConfig, task: str, num_labels: int = 2):
    """The transformers config for a model config (no weights read)."""
    from transformers import AutoConfig

    if cfg.source in ARCHITECTURES:
        arch = dict(ARCHITECTURES[cfg.source])
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    else:
        try:
            config = AutoConfig.from_pretrained(_resolve(cfg.source))
        except OSError as err:
            raise ConfigError("model.source", cfg.source,
                              f"a packaged asset ({', '.join(MODELS)}), "
                              f"an architecture ({', '.join(ARCHITECTURES)}), a local path, or a hub name when online [{type(err).__name__}]") from None
    if cfg.num_layers is not None:
        for key in ("num_hidden_layers", "n_layer"):
            if hasattr(config, key):
                setattr(config, key, min(cfg.num_layers, getattr(config, key)))
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = config.layer_types[: cfg.num_layers]
    config.num_labels = num_labels
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id if config.eos_token_id is not None else 0
    return config


def load_backbone(cfg: ModelConfig, task: str, num_labels: int = 2, device: str | torch.device = "cpu") -> nn.Module:
    """The task model: AutoModelForSequenceClassification or AutoModelForCausalLM, weights loaded or random.

    With device="meta" nothing is allocated: parameter counting on any size of model is free.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    check_choice("data.task", task, TASKS)
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    config = build_config(cfg, task, num_labels)
    dtype = getattr(torch, cfg.dtype)
    if cfg.pretrained and str(device) != "meta":
        with quiet_transformers():  # its load report lists the blocks num_layers cut and the new task head, every run
            model = auto.from_pretrained(_resolve(cfg.source), config=config, dtype=dtype)
    else:
        with torch.device(device):
            model = auto.from_config(config, dtype=dtype)
    family_for(model)  # fail early on an unsupported family
    return model


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Errors only, no progress bars, from transformers while loading weights."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def load_tokenizer(cfg: ModelConfig):
    """The tokenizer beside the weights, or cfg.tokenizer for config-only architectures (None when there is none)."""
    from transformers import AutoTokenizer

    source = cfg.tokenizer or (None if cfg.source in ARCHITECTURES else cfg.source)
    if source is None:
        return None
    tok = AutoTokenizer.from_pretrained(_resolve(source))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def num_blocks(model: nn.Module) -> int:
    """How many transformer blocks the model has."""
    return len(blocks(model, family_for(model)))
