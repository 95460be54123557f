"""Several LoRA adapters on one base model: switching A -> B -> A gives back A's outputs, merged or not."""

from __future__ import annotations

import pytest
import torch

from peftlab.adapters import AdapterError, base_fingerprint, save_adapter
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.methods import build_method
from peftlab.switching import load_switch, switch_time

MINILM = ModelConfig(name="minilm", source="minilm", num_layers=2)
IDS = torch.tensor([[101, 2023, 3185, 2001, 2307, 102], [101, 7592, 2088, 999, 102, 0]])
MASK = (IDS != 0).long()


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_backbone(MINILM, "classification").eval()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict:
    """Two trained-looking LoRA adapters (different weights, alpha and head) and the logits each gives alone."""
    out = {}
    for name, seed, alpha in (("A", 1, 8), ("B", 2, 32)):
        model = fresh()
        fp = base_fingerprint(model)
        method = build_method({"name": "lora", "r": 4, "alpha": alpha, "target_modules": ["query", "value"]})
        method.apply(model, family_for(model))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        path = tmp_path_factory.mktemp(name) / "adapter.safetensors"
        save_adapter(path, method, model, fp, MINILM, "classification", 2, 0)
        out[name] = (path, outputs(model))
    assert not torch.allclose(out["A"][1], out["B"][1], atol=1e-3)
    return out


@pytest.mark.parametrize("mode", ["merged", "unmerged"])
def test_switch_a_b_a_restores_a(adapters, mode):
    model = fresh()
    switch = load_switch(model, {k: v[0] for k, v in adapters.items()}, mode=mode)
    assert switch.active == "A"
    torch.testing.assert_close(outputs(model), adapters["A"][1], rtol=1e-5, atol=1e-5)
    switch.switch("B")
    torch.testing.assert_close(outputs(model), adapters["B"][1], rtol=1e-5, atol=1e-5)
    switch.switch("A")
    torch.testing.assert_close(outputs(model), adapters["A"][1], rtol=1e-5, atol=1e-5)
    for _ in range(10):  # many round trips through merge/unmerge do not drift
        switch.switch("B")
        switch.switch("A")
    torch.testing.assert_close(outputs(model), adapters["A"][1], rtol=1e-5, atol=1e-5)
    timing = switch_time(switch, ["A", "B"], repeats=3, warmup=1)
    assert timing.n == 3 and timing.median_s > 0


def test_adapter_with_other_shapes_is_refused(adapters, tmp_path):
    model = fresh()
    fp = base_fingerprint(model)
    method = build_method({"name": "lora", "r": 2, "alpha": 4, "target_modules": ["query", "value"]})
    method.apply(model, family_for(model))
    other = tmp_path / "adapter.safetensors"
    save_adapter(other, method, model, fp, MINILM, "classification", 2, 0)
    with pytest.raises(AdapterError, match="same target modules, rank"):
        load_switch(fresh(), {"A": adapters["A"][0], "C": other})
