"""One run, start to finish: validate the config, build backbone + method + data, train with the shared trainer,
measure, and write the run record. Every failure is recorded; a finished run is never redone or overwritten silently.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from peftlab.backbones.families import Family, family_for
from peftlab.backbones.loader import ModelConfig, load_backbone, load_tokenizer
from peftlab.data import DataConfig, TextDataModule
from peftlab.errors import ConfigError, check_int
from peftlab.measure import count_parameters, latency, random_tokens, save_safetensors
from peftlab.methods import Method, build_method
from peftlab.methods.base import head_names
from peftlab.results.record import RECORD_NAME, environment, read_record, RecordError, write_json_atomic, write_record
from peftlab.training.callbacks import DivergenceGuard, Diverged, TrainCost
from peftlab.training.module import FineTuneModule, OptimConfig

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

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSpec":
        c = OmegaConf.to_container(cfg, resolve=True)
        method = build_method(c["method"])
        check_int("seed", c.get("seed"), minimum=0)
        trainer = c.get("trainer") or {}
        check_int("trainer.max_epochs", trainer.get("max_epochs", 1), minimum=-1)
        return cls(model=_dataclass(ModelConfig, c["model"], "model"), data=_dataclass(DataConfig, c["data"], "data"),
                   method=method, optim=_dataclass(OptimConfig, c.get("optim") or {}, "optim"),
                   measure=_dataclass(MeasureConfig, c.get("measure") or {}, "measure"), trainer=trainer,
                   logger=c.get("logger"), seed=c["seed"], name=c.get("name", "default"))


def finished(run_dir: Path) -> bool:
    """A run directory whose record says ok: relaunching skips it."""
    try:
        return read_record(Path(run_dir) / RECORD_NAME).get("status") == "ok"
    except RecordError:
        return False


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

    logger = instantiate(spec.logger) if spec.logger else False
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0)
    kwargs = {k: v for k, v in spec.trainer.items() if k != "_target_"}
    try:
        return L.Trainer(default_root_dir=str(run_dir), logger=logger, callbacks=[*callbacks, ckpt], **kwargs)
    except TypeError as err:
        raise ConfigError("trainer", err.args[0], "arguments of lightning.Trainer") from None
    except (ValueError, MisconfigurationException) as err:
        raise ConfigError("trainer", str(err).splitlines()[0], "settings lightning.Trainer accepts") from None


class EpochReseed(L.Callback):
    """Reseed torch at each epoch start from (seed, epoch): dropout is the same whether or not the run was resumed."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 100_003 + trainer.current_epoch)


def execute(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Build, train, test and measure; returns the record's result fields."""
    wall_start = time.perf_counter()
    L.seed_everything(spec.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(spec.model)
    if tokenizer is None:
        raise ConfigError("model.tokenizer", None, "a tokenizer source (e.g. minilm) for a config-only architecture")
    dm = TextDataModule(spec.data, tokenizer, seed=spec.seed)
    dm.setup()
    model = load_backbone(spec.model, spec.data.task, num_labels=dm.num_labels)
    family: Family = family_for(model)
    base_counts = count_parameters(model)
    spec.method.apply(model, family)
    counts = count_parameters(model, head_names(model, family))

    module = FineTuneModule(model, spec.data.task, spec.optim)
    cost = TrainCost(spec.measure.train_warmup_steps)
    trainer = build_trainer(spec, run_dir, [cost, DivergenceGuard(), EpochReseed(spec.seed)])
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.exists()
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resumed else None)
    fit_s = time.perf_counter() - fit_start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics |= {k: float(v) for k, v in tested.items()}
    metrics["train_loss_first"], metrics["train_loss_last"] = module_losses(run_dir)

    adapter_bytes = save_safetensors(spec.method.export_state(model), run_dir / ADAPTER_FILE,
                                     metadata={"method": spec.method.hparams(), "model": asdict(spec.model)})
    inference = measure_inference(model, spec.method, spec.measure, AUTOCAST.get(str(spec.trainer.get("precision"))))
    device = next(model.parameters()).device
    params = {**counts.as_record(), "params_backbone": base_counts.total}
    costs = {**cost.result(device), **inference, "checkpoint_bytes": adapter_bytes, "fit_time_s": fit_s,
             "wall_time_s": time.perf_counter() - wall_start, "global_steps": trainer.global_step}
    log_costs(trainer, params, costs)
    return {"params": params, "metrics": metrics, "cost": costs, "resumed": resumed}


def module_losses(run_dir: Path) -> tuple[float | None, float | None]:
    """First and last logged training-step loss, from the CSV log (None without a CSV logger)."""
    import pandas as pd

    files = sorted(Path(run_dir).glob("**/metrics.csv"))
    if not files:
        return None, None
    df = pd.read_csv(files[-1])
    if "train_loss_step" not in df:
        return None, None
    losses = df["train_loss_step"].dropna()
    return (float(losses.iloc[0]), float(losses.iloc[-1])) if len(losses) else (None, None)


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
