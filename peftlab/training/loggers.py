"""Weights & Biases for runs and sweeps: offline unless the user is logged in (or WANDB_MODE says otherwise), the runs
of a sweep grouped under the sweep's name, and at the end of each run its config, parameter counts, metrics and costs.

Offline runs are written to <run dir>/wandb/offline-run-*; `wandb sync <run dir>/wandb/offline-run-*` uploads them.
"""

from __future__ import annotations

import netrc
import os
import sys
from typing import Any

from lightning.pytorch.loggers import WandbLogger

WANDB_HOST = "api.wandb.ai"


def wandb_mode() -> str:
    """WANDB_MODE when set; else `online` when an API key is available (WANDB_API_KEY or ~/.netrc), else `offline`."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators(WANDB_HOST):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def wandb_logger(project: str, group: str, save_dir: str, name: str | None = None, tags: list[str] | None = None,
                 **kwargs: Any) -> WandbLogger:
    """A Lightning WandbLogger for one run; group = the sweep's name, name = the run's overrides (its directory)."""
    return WandbLogger(project=project, group=group, name=name or None, save_dir=save_dir, tags=tags,
                       mode=wandb_mode(), job_type="train", **kwargs)


def record_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The run record's numbers as wandb summary keys: params/..., metrics/..., cost/..., plus status."""
    out: dict[str, Any] = {"status": record.get("status")}
    for section in ("params", "metrics", "cost"):
        out |= {f"{section}/{k}": v for k, v in (record.get(section) or {}).items() if v is not None}
    return out


def finish_wandb(record: dict[str, Any] | None) -> None:
    """Log the run's config and results to the active wandb run, then close it (the next run of a sweep in the same
    process starts its own). Does nothing when no wandb run is active."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    if record:
        wandb.run.config.update(record.get("config") or {}, allow_val_change=True)
        wandb.run.summary.update(record_summary(record))
    wandb.finish(exit_code=0 if record and record.get("status") == "ok" else 1)
