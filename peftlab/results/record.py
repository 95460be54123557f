"""The run record: one metrics.json per run, written atomically. Field names are stable; see docs/run_record.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import peftlab

SCHEMA_VERSION = 1
RECORD_NAME = "metrics.json"
STATUSES = ("running", "ok", "failed", "diverged", "interrupted")


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON via a temporary file and os.replace, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write <run_dir>/metrics.json atomically; the status must be one of STATUSES."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {record.get('status')!r}")
    path = Path(run_dir) / RECORD_NAME
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, **record})
    return path


class RecordError(ValueError):
    """A metrics.json that cannot be read (half-written, corrupt, or not a run record)."""


def read_record(path: Path) -> dict[str, Any]:
    """Read one run record; RecordError if it is corrupt or lacks a status."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable run record ({err})") from None
    if not isinstance(record, dict) or "status" not in record:
        raise RecordError(f"{path}: not a run record (no status)")
    return record


def environment() -> dict[str, Any]:
    """Versions and device, so a number is never quoted without the machine it came from."""
    import lightning
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "peftlab": peftlab.__version__,
        "git_commit": _git_commit(),
        "hostname": platform.node(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=peftlab.ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
