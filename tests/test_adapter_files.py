"""Adapter files: safetensors + JSON, loaded only onto the base model they came from, never unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from peftlab.adapters import AdapterError, base_fingerprint, config_path, load_adapter, save_adapter
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.methods import build_method

MINILM = ModelConfig(name="minilm", source="minilm", num_layers=2)
INPUTS = {"input_ids": torch.tensor([[101, 2023, 3185, 2001, 2307, 102]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}


def fresh(cfg: ModelConfig = MINILM) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_backbone(cfg, "classification").eval()


@pytest.fixture
def saved(tmp_path) -> tuple[Path, torch.Tensor]:
    """A LoRA adapter with non-zero B (as after training) and the logits it gives."""
    model = fresh()
    fp = base_fingerprint(model)
    method = build_method({"name": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value", "ffn_up"]})
    method.apply(model, family_for(model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
        logits = model(**INPUTS).logits
    path = tmp_path / "adapter.safetensors"
    save_adapter(path, method, model, fp, MINILM, "classification", 2, 0)
    return path, logits


def test_round_trip_gives_the_same_outputs(saved):
    path, logits = saved
    meta = json.loads(config_path(path).read_text())
    assert meta["method"]["name"] == "lora" and meta["base_model"]["model_type"] == "bert" and meta["peftlab"]
    model = fresh()
    method = load_adapter(path, model)
    assert method.config.r == 4
    with torch.no_grad():
        torch.testing.assert_close(model(**INPUTS).logits, logits)


def test_tampered_tensor_file_is_refused(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one weight changed after saving
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="SHA-256"):
        load_adapter(path, fresh())


def test_tampered_config_is_refused(saved):
    path, _ = saved
    meta = json.loads(config_path(path).read_text())
    meta["method"]["r"] = 8  # claims another rank than the tensors have
    config_path(path).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="shape"):
        load_adapter(path, fresh())


def test_adapter_of_another_base_model_is_refused(saved):
    path, _ = saved
    other = fresh(ModelConfig(name="minilm", source="minilm", num_layers=2, pretrained=False))  # same shapes, other weights
    with pytest.raises(AdapterError, match="adapter base model.*fingerprint"):
        load_adapter(path, other)
    deeper = fresh(ModelConfig(name="minilm", source="minilm", num_layers=3))
    with pytest.raises(AdapterError, match="adapter base model"):
        load_adapter(path, deeper)


class _Payload:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["adapter.bin", "adapter.pt", "adapter.ckpt"])
def test_pickle_files_are_refused_by_name(tmp_path, name):
    path = tmp_path / name
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(AdapterError, match="pickle formats .* are never loaded"):
        load_adapter(path, fresh())


def test_pickle_disguised_as_safetensors_is_never_unpickled(saved, tmp_path):
    path, _ = saved
    marker = tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    meta = json.loads(config_path(path).read_text())
    import hashlib

    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # a consistent forgery: only the format can stop it
    config_path(path).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="a valid safetensors file"):
        load_adapter(path, fresh())
    assert not marker.exists()


def test_missing_config_is_refused(saved):
    path, _ = saved
    config_path(path).unlink()
    with pytest.raises(AdapterError, match="adapter config"):
        load_adapter(path, fresh())
