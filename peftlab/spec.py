"""What a run is: its config groups as validated dataclasses (RunSpec), checked before any model or data is loaded.

Each check raises ConfigError naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from peftlab.backbones.assets import ASSETS, MODELS
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ARCHITECTURES, ModelConfig, load_backbone
from peftlab.data import DataConfig
from peftlab.data.datamodule import PACKAGED
from peftlab.errors import ConfigError, check_int, check_positive
from peftlab.methods import Method, build_method
from peftlab.training.module import OptimConfig


@dataclass
class MeasureConfig:
    """Inference latency is timed on a fixed batch of random tokens; training steps after train_warmup_steps."""

    latency_batch_size: int = 8
    latency_seq_len: int = 64
    latency_repeats: int = 20
    latency_warmup: int = 3
    train_warmup_steps: int = 3

    def __post_init__(self) -> None:
        for key in ("latency_batch_size", "latency_seq_len", "latency_repeats"):
            check_int(f"measure.{key}", getattr(self, key))
        check_int("measure.latency_warmup", self.latency_warmup, minimum=0)
        check_int("measure.train_warmup_steps", self.train_warmup_steps, minimum=0)


@dataclass
class CheckpointConfig:
    """every_n_steps: also write checkpoints/last.ckpt every n optimiser steps, so a killed run loses at most n steps
    (0: only at the end of each epoch). Resuming mid-epoch continues with the next batch, as if never stopped."""

    every_n_steps: int = 0

    def __post_init__(self) -> None:
        check_int("checkpoint.every_n_steps", self.every_n_steps, minimum=0)


def _dataclass(cls: type, values: Any, group: str):
    """Build a config dataclass; an unknown key is a one-line error naming the allowed ones."""
    values = dict(values)
    fields = cls.__dataclass_fields__
    for key in values:
        if key not in fields:
            raise ConfigError(f"{group}.{key}", values[key], f"fields of {group}: {', '.join(fields)}")
    return cls(**values)


@dataclass
class RunSpec:
    """Everything a run needs, validated before any model or data is loaded."""

    model: ModelConfig
    data: DataConfig
    method: Method
    optim: OptimConfig
    measure: MeasureConfig
    trainer: dict[str, Any]
    logger: dict[str, Any] | None
    seed: int
    name: str
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSpec":
        """Validate every group (names, hyper-parameters, trainer settings) without loading a model or data.

        Target modules need the model's structure: `check_structure` builds it on the meta device at the start of the
        run, still before any weights or data are read.
        """
        c = OmegaConf.to_container(cfg, resolve=True)
        for group in ("model", "data", "method"):
            if not isinstance(c.get(group), dict):
                raise ConfigError(group, c.get(group), f"a {group} config group (conf/{group}/*.yaml)")
        method = build_method(c["method"])
        check_int("seed", c.get("seed"), minimum=0)
        trainer = c.get("trainer") or {}
        check_trainer(trainer)
        model = _dataclass(ModelConfig, c["model"], "model")
        data = _dataclass(DataConfig, c["data"], "data")
        check_sources(model, data)
        optim = _dataclass(OptimConfig, c.get("optim") or {}, "optim")
        check_optim(optim)
        measure = _dataclass(MeasureConfig, c.get("measure") or {}, "measure")
        checkpoint = _dataclass(CheckpointConfig, c.get("checkpoint") or {}, "checkpoint")
        for group, values in (("method", method.config), ("model", model), ("data", data), ("optim", optim),
                              ("measure", measure), ("checkpoint", checkpoint)):
            check_types(values, group)
        return cls(model=model, data=data, method=method, optim=optim, measure=measure, trainer=trainer,
                   logger=c.get("logger"), seed=c["seed"], name=c.get("name", "default"), checkpoint=checkpoint)


SIMPLE_TYPES = {"bool": ((bool,), "true or false"), "int": ((int,), "an integer"),
                "float": ((int, float), "a number"), "str": ((str,), "a string")}


def check_types(values: Any, group: str) -> None:
    """Fields declared bool, int, float or str (optionally `| None`) hold that type: `use_rslora: maybe` is an error,
    not a truthy string."""
    for f in dataclasses.fields(values):
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        base = declared.removesuffix(" | None")
        value = getattr(values, f.name)
        if base not in SIMPLE_TYPES or (value is None and declared.endswith("| None")):
            continue
        types, allowed = SIMPLE_TYPES[base]
        if not isinstance(value, types) or (base != "bool" and isinstance(value, bool)):
            raise ConfigError(f"{group}.{f.name}", value, allowed)


# Trainer arguments a run sets itself; the rest of lightning.Trainer's arguments may come from the trainer group.
RUN_OWNED = ("self", "logger", "callbacks", "default_root_dir", "plugins", "enable_checkpointing")


def check_trainer(trainer: dict[str, Any]) -> None:
    """Unknown trainer keys and out-of-range counts, named in one line (Lightning checks the rest when built)."""
    allowed = [k for k in inspect.signature(L.Trainer.__init__).parameters if k not in RUN_OWNED]
    for key, value in trainer.items():
        if key != "_target_" and key not in allowed:
            raise ConfigError(f"trainer.{key}", value, "an argument of lightning.Trainer (see conf/trainer/default.yaml)")
    for key, minimum in (("max_epochs", -1), ("max_steps", -1), ("accumulate_grad_batches", 1),
                         ("log_every_n_steps", 1), ("num_sanity_val_steps", -1)):
        if trainer.get(key) is not None:
            check_int(f"trainer.{key}", trainer[key], minimum=minimum)
    if trainer.get("gradient_clip_val") is not None:
        check_positive("trainer.gradient_clip_val", trainer["gradient_clip_val"], allow_zero=True)


def check_sources(model: ModelConfig, data: DataConfig) -> None:
    """Model, tokenizer and data sources that exist (a hub name is checked when its config is read, offline-safe)."""
    for key, source in (("model.source", model.source), ("model.tokenizer", model.tokenizer)):
        if source is None or source in ARCHITECTURES or source in ASSETS or "/" in source or Path(source).exists():
            continue
        raise ConfigError(key, source, f"a packaged model ({', '.join(MODELS)}), "
                          f"an architecture ({', '.join(ARCHITECTURES)}), a local path or a hub name (org/name)")
    if model.source in ARCHITECTURES and model.tokenizer is None:
        raise ConfigError("model.tokenizer", None, f"a tokenizer source (e.g. minilm) for the config-only {model.source}")
    if data.source not in PACKAGED and not data.source.startswith("hf:") and not Path(data.source).is_file():
        raise ConfigError("data.source", data.source, f"{', '.join(PACKAGED)}, an existing CSV/JSONL file, or hf:<name>")


def check_optim(optim: OptimConfig) -> None:
    """AdamW's betas and eps (lr, weight decay and warm-up are checked by OptimConfig)."""
    betas = optim.betas
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
        raise ConfigError("optim.betas", betas, "two numbers in [0, 1)")
    check_positive("optim.eps", optim.eps)


def check_structure(spec: RunSpec) -> None:
    """Settings that need the model's structure (target modules, layer counts): build it on the meta device, where no
    weights are read or allocated, and apply a fresh copy of the method to it."""
    model = load_backbone(spec.model, spec.data.task, num_labels=2, device="meta")
    build_method(spec.method.hparams()).apply(model, family_for(model))
