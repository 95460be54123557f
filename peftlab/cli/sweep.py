"""Sweep-level behaviour of peftlab-train -m: the resolvers the configs use (`lora_alpha`, `run_dirname`), and a Hydra
callback that refuses a sweep of multi-process runs on a local launcher and ends every multirun with the report and a
list of the runs that failed (the sweep then exits 1).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from peftlab.errors import ConfigError


def lora_alpha(rule: Any, r: int) -> int | float:
    """alpha from a rule: `r` -> r, `2r` -> 2*r, a number -> that number. Lets a sweep say alpha = r as one value."""
    text = str(rule).strip()
    try:
        value = float(text[:-1] or 1) * r if text.endswith("r") else float(text)
    except ValueError:
        raise ConfigError("alpha_rule", rule, "r, <k>r (e.g. 2r) or a number (e.g. 16)") from None
    return int(value) if value.is_integer() else value


MAX_DIRNAME = 200  # bytes; file systems allow 255 per path component


def run_dirname(overrides: str) -> str:
    """The overrides as one directory name: `/` (a path in an override) escaped as %2F, and the name cut and suffixed
    with a hash when too long. Stable across relaunches, so a relaunch finds its finished runs."""
    overrides = overrides.replace("%", "%25").replace("/", "%2F")
    if len(overrides.encode()) <= MAX_DIRNAME:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:12]
    return f"{overrides.encode()[:MAX_DIRNAME - 13].decode(errors='ignore')}-{digest}"


def register_resolvers() -> None:
    """Register peftlab's OmegaConf resolvers once per process (Hydra composes configs in every launcher worker)."""
    for name, fn in (("lora_alpha", lora_alpha), ("run_dirname", run_dirname)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def check_multiprocess_sweep(config: DictConfig) -> None:
    """Lightning starts DDP/FSDP workers by running the command line again, which in a local multirun would run the
    whole sweep again: a multi-process run in a sweep needs a job of its own (the SLURM launcher)."""
    trainer = config.get("trainer") or {}
    strategy, devices = str(trainer.get("strategy") or ""), trainer.get("devices", 1)
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if strategy.startswith(("ddp", "fsdp")) and "spawn" not in strategy and devices not in (1, "1") \
            and not launcher.endswith("SlurmLauncher"):
        raise ConfigError("trainer.strategy", strategy, "ddp/fsdp with several devices in a sweep only with "
                          "hydra/launcher=slurm (one job per run); or run it alone, without -m")


class SweepReport(Callback):
    """After a multirun: write the report of the sweep directory, list this launch's failed runs, exit 1 if any.

    A run counts as this launch's when its record was written after the launch started: runs skipped because they
    had finished before are ok; a record still `running` means its process died before it could record anything.
    """

    def __init__(self, report: bool = True):
        self.report = report
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        try:
            check_multiprocess_sweep(config)
        except ConfigError as err:
            print(f"peftlab: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from peftlab.results.aggregate import load_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        if self.report and next(sweep_dir.rglob("metrics.json"), None) is not None:
            from peftlab.results.report import write_report

            paths = write_report(sweep_dir)
            print(next(p for p in paths if p.suffix == ".md").read_text())
            print(f"peftlab: report of {sweep_dir}:")
            for path in paths:
                print(f"  {path}")
        problems = [p for p in load_sweep(sweep_dir).problems if p.mtime >= self.started - 1.0]
        if problems:
            print(f"peftlab: {len(problems)} run(s) of this sweep did not finish:", file=sys.stderr)
            for p in problems:
                print(f"  [{p.status}] {p.run_dir}: {p.error}", file=sys.stderr)
            sys.exit(1)
