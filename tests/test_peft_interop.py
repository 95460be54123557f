"""peft round trips: a peftlab LoRA exported in peft's format loads in peft with the same logits, and a peft LoRA
adapter imported into peftlab gives peft's logits."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_decoder
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.interop.peft_format import PeftFormatError, export_adapter, export_lora, import_lora
from peftlab.methods import build_method

peft = pytest.importorskip("peft")

IDS = torch.tensor([[101, 2023, 3185, 2001, 2307, 102, 0], [101, 7592, 2088, 999, 102, 0, 0]])
MASK = (IDS != 0).long()


def minilm() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_backbone(ModelConfig(name="minilm", source="minilm", num_layers=2), "classification").eval()


def base(kind: str, task: str = "causal_lm") -> torch.nn.Module:
    return minilm() if kind == "minilm" else tiny_decoder(kind, task)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS % model.config.vocab_size, attention_mask=MASK).logits


def randomize(model: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Non-zero adapter weights, as after training."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in names):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


CASES = [  # (backbone, task, peftlab LoRA config)
    ("minilm", "classification", {"r": 4, "alpha": 8, "target_modules": ["query", "value", "ffn_down"]}),
    ("llama-135m", "causal_lm", {"r": 4, "alpha": 16, "target_modules": ["query", "value", "ffn_gate"], "use_rslora": True}),
    ("gpt2-medium", "causal_lm", {"r": 2, "alpha": 4, "target_modules": ["query", "value", "output"]}),  # fused c_attn
]


@pytest.mark.parametrize("kind,task,cfg", CASES, ids=[c[0] for c in CASES])
def test_export_loads_in_peft_with_equal_logits(tmp_path, kind, task, cfg):
    model = base(kind)
    method = build_method({"name": "lora", **cfg})
    method.apply(model, family_for(model))
    randomize(model, ("lora_", "classifier"))
    expected = logits(model)
    export_lora(model, method, tmp_path, task)
    loaded = peft.PeftModel.from_pretrained(base(kind), tmp_path).eval()
    assert not torch.allclose(logits(base(kind)), expected, atol=1e-3)  # the adapter changes the outputs
    torch.testing.assert_close(logits(loaded), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,task,targets", [("minilm", "SEQ_CLS", ["query", "value"]),
                                                ("llama-135m", "CAUSAL_LM", ["q_proj", "v_proj", "down_proj"]),
                                                ("gpt2-medium", "CAUSAL_LM", ["c_attn"])])
def test_peft_adapter_imports_with_equal_logits(tmp_path, kind, task, targets):
    config = peft.LoraConfig(task_type=task, r=4, lora_alpha=8, target_modules=targets,
                             fan_in_fan_out=kind.startswith("gpt2"))
    reference = peft.get_peft_model(base(kind), config).eval()
    randomize(reference, ("lora_", "modules_to_save"))
    reference.save_pretrained(tmp_path)
    model = base(kind)
    method = import_lora(tmp_path, model)
    assert method.name == "lora" and method.config.r == 4
    torch.testing.assert_close(logits(model.eval()), logits(reference), rtol=1e-4, atol=1e-5)


def test_unsupported_peft_features_are_refused(tmp_path):
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query"], use_dora=True)
    peft.get_peft_model(minilm(), config).save_pretrained(tmp_path)
    with pytest.raises(PeftFormatError, match="use_dora"):
        import_lora(tmp_path, minilm())


@pytest.mark.parametrize("kind", ["llama-135m", "gpt2-medium"])
def test_prompt_tuning_export_loads_in_peft_with_equal_logits(tmp_path, kind):
    model = base(kind)
    method = build_method({"name": "prompt", "num_virtual_tokens": 3})
    method.apply(model, family_for(model))
    randomize(model, ("soft_prompt",))
    expected = logits(model)
    export_adapter(model, method, tmp_path, "causal_lm")
    loaded = peft.PeftModel.from_pretrained(base(kind), tmp_path).eval()
    # peft's logits include the 3 soft tokens' positions; the real tokens' logits are peftlab's
    torch.testing.assert_close(logits(loaded)[:, 3:], expected, rtol=1e-4, atol=1e-5)


def peft_logits(loaded: torch.nn.Module) -> torch.Tensor:
    """peft's logits. For SEQ_CLS prefix tuning peft 0.21.2 looks for a `past_key_values` parameter, which
    transformers 5 renamed `cache`, and raises; then this makes the call it makes when it finds one (prefixes as a
    KV cache, mask extended)."""
    try:
        return logits(loaded)
    except ValueError as err:
        if "does not support past key values" not in str(err):
            raise
    l_p = loaded.active_peft_config.num_virtual_tokens
    mask = torch.cat([torch.ones(len(IDS), l_p, dtype=MASK.dtype), MASK], 1)
    with torch.no_grad():
        cache = loaded.get_prompt(len(IDS))
        return loaded.base_model(input_ids=IDS % loaded.config.vocab_size, attention_mask=mask,
                                 past_key_values=cache).logits


PREFIX_CASES = [("minilm", "classification", True), ("llama-135m", "causal_lm", True),
                ("gpt2-medium", "causal_lm", False), ("llama-135m", "classification", False)]


@pytest.mark.parametrize("kind,task,projection", PREFIX_CASES, ids=[f"{c[0]}-{c[1]}" for c in PREFIX_CASES])
def test_prefix_export_loads_in_peft_with_equal_logits(tmp_path, kind, task, projection):
    """position_offset (the default) puts real tokens where peft does; the reparameterisation MLP is folded away."""
    model = base(kind, task)
    method = build_method({"name": "prefix", "num_virtual_tokens": 3, "projection": projection,
                           "projection_hidden_size": 8})
    method.apply(model, family_for(model))
    randomize(model, ("prefix_encoder", "classifier", "score"))
    expected = logits(model)
    export_adapter(model, method, tmp_path, task)
    loaded = peft.PeftModel.from_pretrained(base(kind, task), tmp_path).eval()
    assert not torch.allclose(logits(base(kind, task)), expected, atol=1e-3)
    torch.testing.assert_close(peft_logits(loaded), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,name,task,hp,match", [
    ("llama-135m", "prefix", "causal_lm", {"position_offset": False}, "method.position_offset: got False"),
    ("minilm", "prompt", "classification", {}, "causal_lm"),  # peft pools the first soft token
    ("llama-135m", "prompt", "classification", {}, "causal_lm")])  # peft pools the last position, a pad if right-padded
def test_methods_peft_computes_differently_are_refused(tmp_path, kind, name, task, hp, match):
    model = base(kind, task)
    method = build_method({"name": name, "num_virtual_tokens": 2, **hp})
    method.apply(model, family_for(model))
    with pytest.raises(PeftFormatError, match=match):
        export_adapter(model, method, tmp_path, task)
