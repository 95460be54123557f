"""Adapter files: the trained tensors in safetensors (never pickle) and a small JSON config beside them.

`<name>.safetensors` holds the method's trainable tensors (and the task head); `<name>.json` says which method and
hyper-parameters made them, which base model they belong to (a fingerprint of its frozen weights, so a file trained on
another base model, or another random initialisation, is refused), the tensors' SHA-256 (a file changed afterwards is
refused) and the peftlab version. Loading checks all of this before a single weight is touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

import peftlab
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig
from peftlab.errors import ConfigError
from peftlab.measure import save_safetensors
from peftlab.methods import Method, build_method
from peftlab.methods.base import head_names
from peftlab.results.record import write_json_atomic

FORMAT = "peftlab-adapter"
FORMAT_VERSION = 1
SAMPLE = 256  # values per tensor that enter the fingerprint


class AdapterError(ConfigError):
    """An adapter file that cannot be used with this model: one line naming what does not match."""


def config_path(path: Path) -> Path:
    """The JSON config beside an adapter's .safetensors file."""
    return Path(path).with_suffix(".json")


def base_fingerprint(model: nn.Module) -> str:
    """Identity of a base model before any method is applied: names, shapes and a sample of every frozen weight.

    Task heads are left out (they are trained and saved in the adapter). Values are compared at bfloat16 precision,
    so the same model loaded in float32, bfloat16 or float16 has the same fingerprint.
    """
    family = family_for(model)
    skip = tuple(f"{h}." for h in head_names(model, family))
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if name.startswith(skip):
            continue
        h.update(f"{name}:{tuple(p.shape)};".encode())
        if p.device.type != "meta":
            sample = p.detach().reshape(-1)[:SAMPLE].to(torch.bfloat16).float().cpu()
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_adapter(path: Path, method: Method, model: nn.Module, fingerprint: str, model_cfg: ModelConfig | None = None,
                 task: str | None = None, num_labels: int | None = None, seed: int | None = None) -> int:
    """Write <path> (.safetensors) and its JSON config, both atomically; returns the tensor file's bytes.

    fingerprint is base_fingerprint() of the backbone before the method was applied. model_cfg, task, num_labels and
    seed let `peftlab-adapter` rebuild the same base model later (seed matters for random-init backbones).
    """
    path = Path(path)
    state = method.export_state(model)
    nbytes = save_safetensors(state, path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "peftlab": peftlab.__version__,
        "method": method.hparams(),
        "base_model": {"fingerprint": fingerprint, "model_type": model.config.model_type,
                       "config": asdict(model_cfg) if model_cfg else None, "task": task, "num_labels": num_labels,
                       "seed": seed},
        "tensors": {name: list(t.shape) for name, t in state.items()},
        "sha256": _sha256(path),
    }
    write_json_atomic(config_path(path), meta)
    return nbytes


def read_adapter_config(path: Path) -> dict[str, Any]:
    """The JSON config of an adapter file, checked to be one (AdapterError otherwise)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AdapterError("adapter", str(path), "a .safetensors file (pickle formats such as .bin, .pt, .ckpt are never loaded)")
    if not path.is_file():
        raise AdapterError("adapter", str(path), "an existing .safetensors file")
    cfg = config_path(path)
    try:
        meta = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AdapterError("adapter config", str(cfg), f"the JSON file save_adapter writes beside the tensors ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AdapterError("adapter config", str(cfg), f"a {FORMAT} config")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise AdapterError("adapter format_version", meta.get("format_version"),
                           f"<= {FORMAT_VERSION} (written by a newer peftlab {meta.get('peftlab')})")
    return meta


def read_tensors(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapter's tensors, after checking the file is unchanged since it was saved and is safetensors."""
    path = Path(path)
    if _sha256(path) != meta.get("sha256"):
        raise AdapterError("adapter", str(path), "the file as saved (its SHA-256 differs from the one in its JSON config: changed or truncated)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterError("adapter", str(path), f"a valid safetensors file ({err})") from None
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    if shapes != meta.get("tensors"):
        raise AdapterError("adapter tensors", str(path), "the names and shapes listed in its JSON config")
    return tensors


def load_adapter(path: Path, model: nn.Module, method_overrides: dict[str, Any] | None = None) -> Method:
    """Apply the adapter's method to a fresh base model and load its tensors; returns the method.

    Refuses (AdapterError) a tampered or non-safetensors file, a method that is not installed or whose
    hyper-parameters are invalid, another base model (fingerprint) and any tensor name or shape mismatch.
    """
    meta = read_adapter_config(path)
    tensors = read_tensors(path, meta)
    expected_fp = meta["base_model"]["fingerprint"]
    found_fp = base_fingerprint(model)
    if found_fp != expected_fp:
        raise AdapterError("adapter base model", f"{model.config.model_type} fingerprint {found_fp}",
                           f"the base model it was trained on ({meta['base_model']['model_type']} fingerprint {expected_fp}"
                           f"{', ' + meta['base_model']['config']['source'] if meta['base_model'].get('config') else ''})")
    method = build_method({**meta["method"], **(method_overrides or {})})
    method.apply(model, family_for(model))
    method.fold(model)  # methods that train through a reparameterisation save (and load) the folded form
    check_tensors(tensors, method.export_state(model), meta["method"]["name"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    return method


def check_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], method: str) -> None:
    """Same names, same shapes, or an AdapterError naming the first difference."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise AdapterError("adapter tensors", f"missing {missing[:3]} unexpected {extra[:3]}",
                           f"exactly the tensors method '{method}' has on this model ({len(expected)})")
    for name, t in found.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise AdapterError(f"adapter tensor {name}", f"shape {tuple(t.shape)}", f"shape {tuple(expected[name].shape)}")
