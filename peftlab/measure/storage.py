"""Checkpoint size: bytes of the saved trainable weights (safetensors), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, object] | None = None) -> int:
    """Write tensors to path via a temporary file and a rename; returns the file's size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return file_bytes(path)


def file_bytes(path: Path) -> int:
    """Size of a file in bytes."""
    return Path(path).stat().st_size
