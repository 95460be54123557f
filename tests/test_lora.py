"""LoRA behaviour: identity at init, merge == unmerge, exact unmerge, what trains, gradients, rsLoRA scaling."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import tiny_decoder
from peftlab.backbones.families import family_for
from peftlab.errors import ConfigError
from peftlab.methods import build_method
from peftlab.methods.lora import LoraLayer, lora_layers


def _inputs(vocab: int, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def _lora(model, **hp):
    method = build_method({"name": "lora", **hp})
    method.apply(model, family_for(model))
    return method


def _randomise_b(model) -> None:
    g = torch.Generator().manual_seed(2)
    for layer in lora_layers(model):
        layer.lora_B.data.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(params=["minilm", "gpt2", "llama"])
def model(request, minilm2):
    if request.param == "minilm":
        return copy.deepcopy(minilm2)
    return tiny_decoder("gpt2-medium" if request.param == "gpt2" else "llama-135m", task="classification")


@torch.no_grad()
def test_b_zero_is_identity(model):
    inputs = _inputs(model.config.vocab_size)
    before = model(**inputs).logits
    _lora(model, r=4, alpha=8)
    assert torch.equal(model(**inputs).logits, before)


@torch.no_grad()
def test_merged_equals_unmerged_and_unmerge_restores_base(model):
    inputs = _inputs(model.config.vocab_size)
    method = _lora(model, r=4, alpha=8, target_modules=["query", "key", "value", "output"])
    _randomise_b(model)
    base_weights = {id(l): l.base_layer.weight.clone() for l in lora_layers(model)}
    unmerged = model(**inputs).logits
    method.merge(model)
    assert all(l.merged for l in lora_layers(model))
    merged = model(**inputs).logits
    assert _rel_err(merged, unmerged) < 1e-5
    assert any(_rel_err(l.base_layer.weight, base_weights[id(l)]) > 1e-4 for l in lora_layers(model))
    method.unmerge(model)
    for layer in lora_layers(model):
        assert _rel_err(layer.base_layer.weight, base_weights[id(layer)]) < 1e-5
    assert _rel_err(model(**inputs).logits, unmerged) < 1e-5


def test_only_lora_and_head_train_and_gradients_reach_a_and_b(minilm2):
    model = copy.deepcopy(minilm2).train()
    _lora(model, r=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A" in n or ".lora_B" in n or n.startswith(("classifier.", "bert.pooler.")) for n in trainable)
    # The head: the classifier and, in BERT-style models, the pooler before it (as RoBERTa's classifier.dense).
    assert {n for n in trainable if ".lora_" not in n} == {"classifier.weight", "classifier.bias",
                                                           "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    inputs = _inputs(model.config.vocab_size)
    labels = torch.tensor([0, 1, 1])
    model(**inputs, labels=labels).loss.backward()
    layers = lora_layers(model)
    assert all(l.lora_B.grad is not None and l.lora_B.grad.abs().sum() > 0 for l in layers)
    # With B = 0 the gradient of A is exactly zero; once B moves it flows into A too.
    _randomise_b(model)
    model.zero_grad()
    model(**inputs, labels=labels).loss.backward()
    assert all(l.lora_A.grad is not None and l.lora_A.grad.abs().sum() > 0 for l in layers)


def test_gpt2_fused_qkv_adapts_only_chosen_slices():
    model = tiny_decoder("gpt2-medium")
    _lora(model, r=2, alpha=4, target_modules=["query", "value"])
    layer = model.transformer.h[0].attn.c_attn
    assert isinstance(layer, LoraLayer) and layer.parts == (0, 2)
    _randomise_b(model)
    delta = layer.delta_weight()
    d = model.config.n_embd
    assert delta[d:2 * d].abs().sum() == 0 and delta[:d].abs().sum() > 0 and delta[2 * d:].abs().sum() > 0


def test_rslora_scaling():
    assert build_method({"name": "lora", "r": 16, "alpha": 8}).config.scaling == 0.5
    assert build_method({"name": "lora", "r": 16, "alpha": 8, "use_rslora": True}).config.scaling == 8 / math.sqrt(16)


@pytest.mark.parametrize("hp, field", [({"r": 0}, "method.r"), ({"r": -2}, "method.r"), ({"alpha": 0}, "method.alpha"),
                                       ({"dropout": 1.0}, "method.dropout"), ({"rank": 4}, "method.rank"),
                                       ({"target_modules": []}, "method.target_modules")])
def test_bad_hyperparameters(hp, field):
    with pytest.raises(ConfigError) as err:
        build_method({"name": "lora", **hp})
    assert err.value.field == field


def test_unknown_target_lists_linear_layers(minilm2):
    with pytest.raises(ConfigError) as err:
        _lora(copy.deepcopy(minilm2), target_modules=["q_proj"])
    assert "query" in str(err.value) and "dense" in str(err.value) and "q_proj" in str(err.value)
