"""peftlab's LoRA against HF peft (test-only reference): the same counts, and the same logits for the same weights."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_decoder
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.measure import count_parameters
from peftlab.methods import build_method
from peftlab.methods.base import head_names
from peftlab.methods.lora import lora_layers

peft = pytest.importorskip("peft")

# (model builder, peftlab targets, peft targets, peft fan_in_fan_out)
CASES = {
    "bert": (lambda m: copy.deepcopy(m), ["query", "value"], ["query", "value"], False),
    "gpt2": (lambda m: tiny_decoder("gpt2-medium", task="classification"), ["c_attn"], ["c_attn"], True),
    "llama": (lambda m: tiny_decoder("llama-135m", task="classification"), ["query", "value"], ["q_proj", "v_proj"], False),
}


def _peft_model(base, targets, fan_in_fan_out, r=4, alpha=8):
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                          fan_in_fan_out=fan_in_fan_out, init_lora_weights=False)
    return peft.get_peft_model(base, cfg)


def test_roberta_base_count_is_2_L_d_r():
    model = load_backbone(ModelConfig(name="rb", source="roberta-base", pretrained=False), "classification", device="meta")
    build_method({"name": "lora", "r": 8}).apply(model, family_for(model))
    counts = count_parameters(model, head_names(model, family_for(model)))
    L, d, r = model.config.num_hidden_layers, model.config.hidden_size, 8
    l_hat = 2 * L  # W_q and W_v in every layer
    assert counts.method == 2 * l_hat * d * r == 294_912  # LoRA paper 5.1: |Θ| = 2 * L_hat * d_model * r
    assert counts.head == sum(p.numel() for p in model.classifier.parameters())


@pytest.mark.parametrize("family", list(CASES))
def test_counts_match_peft(family, minilm2):
    build, ours_t, peft_t, fifo = CASES[family]
    ours = build(minilm2)
    theirs = copy.deepcopy(ours)
    build_method({"name": "lora", "r": 4, "alpha": 8, "target_modules": ours_t}).apply(ours, family_for(ours))
    pm = _peft_model(theirs, peft_t, fifo)
    peft_lora = sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)
    assert count_parameters(ours, head_names(ours, family_for(ours))).method == peft_lora > 0


@pytest.mark.parametrize("family", list(CASES))
@torch.no_grad()
def test_same_weights_same_logits(family, minilm2):
    build, ours_t, peft_t, fifo = CASES[family]
    ours = build(minilm2)
    theirs = copy.deepcopy(ours)
    build_method({"name": "lora", "r": 4, "alpha": 8, "target_modules": ours_t}).apply(ours, family_for(ours))
    pm = _peft_model(theirs, peft_t, fifo)  # init_lora_weights=False: A and B both random, so the update is non-zero
    peft_params = dict(pm.named_parameters())
    names = {n for n, m in ours.named_modules() if m in lora_layers(ours)}
    assert names
    for name in names:
        layer = ours.get_submodule(name)
        a = peft_params[f"base_model.model.{name}.lora_A.default.weight"]
        b = peft_params[f"base_model.model.{name}.lora_B.default.weight"]
        layer.lora_A.data.copy_(a.unsqueeze(0))
        layer.lora_B.data.copy_(b.unsqueeze(0))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, ours.config.vocab_size, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    ours_logits = ours(input_ids=ids, attention_mask=mask).logits
    peft_logits = pm(input_ids=ids, attention_mask=mask).logits
    with pm.disable_adapter():
        base_logits = pm(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(peft_logits, base_logits, atol=1e-4)  # the adapters really change the output
    torch.testing.assert_close(ours_logits, peft_logits, rtol=1e-5, atol=1e-6)
