"""peftlab-train: one run, or a sweep with -m, composed by Hydra from conf/ and experiments/.

Bad input prints one line (`peftlab: error: <field>: got <value>; allowed: <...>`) and exits 2; HYDRA_FULL_ERROR=1
shows the traceback. In a sweep, a failing run is recorded and the others go on; the sweep exits 1 at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from peftlab import ROOT
from peftlab.cli import check_group_choices, check_override_keys
from peftlab.cli.sweep import register_resolvers
from peftlab.errors import ConfigError

CONF_DIR = ROOT / "conf"
os.environ.setdefault("PEFTLAB_ROOT", str(ROOT))
# Known-harmless warnings that every run would print: a torch/Lightning deprecation inside Lightning, and the hint
# about tiny epochs having fewer batches than the logging interval.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
register_resolvers()  # at import: launcher workers (joblib, submitit) import this module to run a job


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit non-zero."""
    print(f"peftlab: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from peftlab.run import is_global_zero, run
    from peftlab.training.loggers import finish_wandb

    for name in ("lightning.pytorch", "lightning.fabric"):  # start-up chatter (GPU available..., tips) on every run
        logging.getLogger(name).setLevel(logging.WARNING)

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    record = None
    try:
        record = run(cfg, Path(hc.runtime.output_dir), force=bool(cfg.get("force", False)))
    except ConfigError as err:
        if multirun:  # recorded as failed in its run directory; the sweep goes on and reports it at the end
            print(f"peftlab: error: {err}", file=sys.stderr)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(err))
    finally:
        finish_wandb(record)  # closes this run's wandb run (if any), so the sweep's next run gets its own
    if not is_global_zero():  # a DDP worker: rank 0 prints and records the run
        return None
    status = record.get("status")
    print(summary_line(record))
    if status != "ok" and not multirun:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and record.get("traceback"):
            print(record["traceback"], file=sys.stderr)
        fail(f"run {status}: {record.get('error')}", code=1)
    return (record.get("metrics") or {}).get("val_acc")


def summary_line(record: dict) -> str:
    """One line per run for the console."""
    m, p, c = record.get("metrics") or {}, record.get("params") or {}, record.get("cost") or {}
    method = record.get("method") or {}
    hp = ",".join(f"{k}={v}" for k, v in method.items() if k not in ("name", "target_modules")) or "-"
    acc = m.get("test_acc", m.get("test_ppl"))
    return (f"[{record.get('status')}] {method.get('name')} ({hp}) trainable={p.get('params_method', '?')}"
            f"+head {p.get('params_head', '?')} test={acc if acc is None else round(acc, 4)} "
            f"wall={c.get('wall_time_s', 0):.1f}s -> {record.get('run_dir')}")


def main() -> None:
    """Console entry point: unknown config-group options fail in one line before Hydra starts."""
    try:
        check_group_choices(sys.argv[1:])
        check_override_keys(sys.argv[1:])
    except ConfigError as err:
        fail(str(err))
    _main()


if __name__ == "__main__":
    main()
