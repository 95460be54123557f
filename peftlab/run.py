"""One run, start to finish: validate the config, build backbone + method + data, train with the shared trainer,
measure, and write the run record. Every failure is recorded; a finished run is never redone or overwritten silently.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from peftlab.adapters import base_fingerprint, save_adapter
from peftlab.backbones.assets import ASSETS, MODELS
from peftlab.backbones.families import Family, family_for
from peftlab.backbones.loader import ARCHITECTURES, ModelConfig, load_backbone, load_tokenizer
from peftlab.data import DataConfig, TextDataModule
from peftlab.data.datamodule import PACKAGED
from peftlab.errors import ConfigError, check_int, check_positive
from peftlab.measure import count_parameters, latency, random_tokens
from peftlab.methods import Method, build_method
from peftlab.methods.base import head_names
from peftlab.results.record import RECORD_NAME, environment, read_record, RecordError, write_json_atomic, write_record
from peftlab.training.callbacks import DivergenceGuard, Diverged, TrainCost
from peftlab.training.module import FineTuneModule, OptimConfig
from peftlab.training.resume import AtomicCheckpointIO, ResumeState

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"


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


def is_global_zero() -> bool:
    """False in the worker processes of DDP/FSDP (rank > 0). Lightning reads the rank from the launcher's environment
    at import and sets the global rank once a trainer is set up."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def finished(run_dir: Path) -> bool:
    """A run directory whose record says ok: relaunching skips it."""
    try:
        return read_record(Path(run_dir) / RECORD_NAME).get("status") == "ok"
    except RecordError:
        return False


def discard_checkpoint(run_dir: Path) -> None:
    """A forced rerun starts from scratch: its last checkpoint is renamed (last.previous-<time>.ckpt), not resumed."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if last.exists():
        last.replace(last.with_name(f"last.previous-{time.strftime('%Y%m%d-%H%M%S')}.ckpt"))


def keep_previous(run_dir: Path) -> Path | None:
    """Move an existing record aside (metrics.previous-<time>.json) so a forced rerun loses nothing."""
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    dest = path.with_name(f"metrics.previous-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.replace(dest)
    return dest


def latency_inputs(model: torch.nn.Module, m: MeasureConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed batch of random non-special tokens, full attention, for latency timing."""
    return random_tokens(model.config.vocab_size, m.latency_batch_size, m.latency_seq_len, device)


# Latency is timed in the precision the run trained in: autocast for mixed precision, the weights' dtype otherwise.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def measure_inference(model: torch.nn.Module, method: Method, m: MeasureConfig,
                      dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Inference latency median/p90 (ms), autocast to dtype if given; also merged for methods that merge."""
    device = next(model.parameters()).device
    inputs = latency_inputs(model, m, device)
    out: dict[str, Any] = {"latency_batch_size": m.latency_batch_size, "latency_seq_len": m.latency_seq_len,
                           "latency_repeats": m.latency_repeats, "latency_autocast": str(dtype) if dtype else None}
    t = latency(model, inputs, repeats=m.latency_repeats, warmup=m.latency_warmup, dtype=dtype)
    out |= {"latency_median_ms": t.median_ms, "latency_p90_ms": t.p90_ms}
    if method.mergeable:
        method.merge(model)
        try:
            t = latency(model, inputs, repeats=m.latency_repeats, warmup=m.latency_warmup, dtype=dtype)
        finally:
            method.unmerge(model)
        out |= {"latency_merged_median_ms": t.median_ms, "latency_merged_p90_ms": t.p90_ms}
    return out


def log_costs(trainer: L.Trainer, params: dict[str, Any], cost: dict[str, Any]) -> None:
    """Send parameter counts and costs (numbers only) to every Lightning logger too, at the last step."""
    values = {name: float(v) for name, v in [*params.items(), *((f"cost/{k}", v) for k, v in cost.items())]
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)
        logger.save()


def build_trainer(spec: RunSpec, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning Trainer from the trainer and logger config groups."""
    from hydra.utils import instantiate

    try:
        logger = instantiate(spec.logger) if spec.logger else False
    except Exception as err:  # hydra wraps import and argument errors; the first line names the problem
        raise ConfigError("logger", str(err).splitlines()[0], "a logger config (conf/logger/*.yaml)") from None
    every = spec.checkpoint.every_n_steps or None
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                               every_n_train_steps=every)
    kwargs = {k: v for k, v in spec.trainer.items() if k != "_target_"}
    try:
        return L.Trainer(default_root_dir=str(run_dir), logger=logger, callbacks=[*callbacks, ckpt],
                         plugins=[AtomicCheckpointIO()], **kwargs)
    except TypeError as err:
        raise ConfigError("trainer", err.args[0], "arguments of lightning.Trainer") from None
    except (ValueError, MisconfigurationException, ImportError) as err:  # ImportError: e.g. accelerator=tpu without torch_xla
        raise ConfigError("trainer", str(err).splitlines()[0], "settings lightning.Trainer accepts on this machine") from None


class EpochReseed(L.Callback):
    """Reseed torch before each epoch's first batch from (seed, epoch): dropout is the same whether or not the run was
    resumed. (Not in on_train_epoch_start: Lightning skips that hook for the epoch after a checkpoint saved on an
    epoch's last batch; a run resumed mid-epoch gets its RNG state back from peftlab.training.resume.ResumeState.)"""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            torch.manual_seed(self.seed * 100_003 + trainer.current_epoch)


def execute(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Build, train, test and measure; returns the record's result fields."""
    wall_start = time.perf_counter()
    check_structure(spec)  # target modules, on the meta device: before any weights or data are read
    tokenizer = load_tokenizer(spec.model)
    dm = TextDataModule(spec.data, tokenizer, seed=spec.seed)
    dm.setup()
    cost, resume = TrainCost(spec.measure.train_warmup_steps), ResumeState()
    trainer = build_trainer(spec, run_dir, [cost, DivergenceGuard(), EpochReseed(spec.seed), resume])
    # Seeded right before the backbone: a random-init base is rebuilt from the seed alone (peftlab-adapter does).
    L.seed_everything(spec.seed, workers=True, verbose=False)
    model = load_backbone(spec.model, spec.data.task, num_labels=dm.num_labels)
    family: Family = family_for(model)
    fingerprint = base_fingerprint(model)  # the adapter file's base-model identity
    base_counts = count_parameters(model)
    spec.method.apply(model, family)
    counts = count_parameters(model, head_names(model, family))

    module = FineTuneModule(model, spec.data.task, spec.optim)
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.exists()
    logged_before = read_csv_logs(trainer) if resumed else {}
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resumed else None)
    fit_s = time.perf_counter() - fit_start
    # A run resumed from its final checkpoint trains no more and validates no more: the saved values stand.
    metrics = dict(resume.val_metrics)
    metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics |= {k: float(v) for k, v in tested.items()}
    losses = resume.losses  # every training step's loss, across a kill and resume
    metrics["train_loss_first"], metrics["train_loss_last"] = (losses[0], losses[-1]) if losses else (None, None)

    if not is_global_zero():  # DDP workers: rank 0 alone saves the adapter and measures inference
        return {"metrics": metrics, "resumed": resumed}
    spec.method.fold(model)  # inference and the saved adapter use the final form (no prefix MLP)
    adapter_bytes = save_adapter(run_dir / ADAPTER_FILE, spec.method, model, fingerprint, spec.model, spec.data.task,
                                 dm.num_labels, spec.seed)
    inference = measure_inference(model, spec.method, spec.measure, AUTOCAST.get(str(spec.trainer.get("precision"))))
    device = next(model.parameters()).device
    params = {**counts.as_record(), "params_backbone": base_counts.total}
    costs = {**cost.result(device), **inference, "checkpoint_bytes": adapter_bytes, "fit_time_s": fit_s,
             "wall_time_s": time.perf_counter() - wall_start, "global_steps": trainer.global_step}
    log_costs(trainer, params, costs)
    restore_csv_rows(logged_before)
    return {"params": params, "metrics": metrics, "cost": costs, "resumed": resumed}


def read_csv_logs(trainer: L.Trainer) -> dict[Path, Any]:
    """The CSV logs a killed run left; Lightning's CSV logger deletes them when the resumed run starts logging."""
    import pandas as pd
    from lightning.pytorch.loggers import CSVLogger

    paths = [Path(lg.log_dir) / "metrics.csv" for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    return {p: pd.read_csv(p) for p in paths if p.is_file() and p.stat().st_size}


def restore_csv_rows(before: dict[Path, Any]) -> None:
    """Put the killed run's rows (those before the first step the resumed run logged) back in front of its CSV log."""
    import pandas as pd

    for path, old in before.items():
        new = pd.read_csv(path) if path.is_file() else pd.DataFrame({"step": []})
        first = new["step"].min() if len(new) else float("inf")
        merged = pd.concat([old[old["step"] < first], new], ignore_index=True)
        tmp = path.with_name(f".{path.name}.tmp")
        merged[sorted(merged.columns)].to_csv(tmp, index=False)
        tmp.replace(path)


def run(cfg: DictConfig, run_dir: Path, force: bool = False) -> dict[str, Any]:
    """Run one configuration in run_dir and write its record. Raises ConfigError for bad input (after recording it)."""
    run_dir = Path(run_dir)
    base = {"name": cfg.get("name"), "run_dir": str(run_dir), "config": OmegaConf.to_container(cfg, resolve=True)}
    try:
        spec = RunSpec.from_config(cfg)
    except ConfigError as err:
        write_record(run_dir, {**base, "status": "failed", "error": str(err), "error_type": "ConfigError"})
        raise
    base |= {"method": spec.method.hparams(), "model": spec.model.source, "data": spec.data.source,
             "task": spec.data.task, "seed": spec.seed}
    if finished(run_dir):
        if not force:
            log.info("%s already finished (status ok): skipped; set force=true to rerun", run_dir)
            return read_record(run_dir / RECORD_NAME)
        log.info("force=true: previous record kept as %s", keep_previous(run_dir))
        discard_checkpoint(run_dir)
    if not is_global_zero():  # a DDP worker process: trains with rank 0, which alone writes files and the record
        return {**base, **execute(spec, run_dir), "status": "ok"}
    write_record(run_dir, {**base, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    record = {**base, "environment": environment()}
    try:
        record |= execute(spec, run_dir) | {"status": "ok"}
    except Diverged as err:
        record |= {"status": "diverged", "error": str(err)}
    except KeyboardInterrupt:
        record |= {"status": "interrupted", "error": "KeyboardInterrupt"}
        write_record(run_dir, record)
        raise
    except ConfigError as err:
        record |= {"status": "failed", "error": str(err), "error_type": "ConfigError"}
        write_record(run_dir, record)
        raise
    except Exception as err:  # a crashed run is recorded as failed, never as a success
        record |= {"status": "failed", "error": f"{type(err).__name__}: {err}", "error_type": type(err).__name__,
                   "traceback": traceback.format_exc()}
    write_record(run_dir, record)
    return record
