"""One run, start to finish: validate the config, build backbone + method + data, train with the shared trainer,
measure, and write the run record. Every failure is recorded; a finished run is never redone or overwritten silently.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from peftlab.adapters import base_fingerprint, save_adapter
from peftlab.backbones.families import Family, family_for
from peftlab.backbones.loader import load_backbone, load_tokenizer
from peftlab.data import TextDataModule
from peftlab.errors import ConfigError
from peftlab.measure import count_parameters, latency, random_tokens
from peftlab.methods import Method
from peftlab.methods.base import head_names
from peftlab.spec import MeasureConfig, RunSpec, check_structure
from peftlab.results.record import RECORD_NAME, environment, read_record, RecordError, write_record
from peftlab.training.callbacks import DivergenceGuard, Diverged, EpochReseed, TrainCost
from peftlab.training.module import FineTuneModule
from peftlab.training.resume import AtomicCheckpointIO, ResumeState

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"


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
