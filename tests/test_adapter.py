"""Bottleneck adapters: identity at initialisation, change after training, exact counts, placement, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import cli, tiny_decoder

from peftlab.backbones.families import family_for
from peftlab.errors import ConfigError
from peftlab.measure import count_parameters
from peftlab.methods import build_method
from peftlab.methods.adapter import BottleneckAdapter, adapters
from peftlab.methods.base import head_names


def apply(model: torch.nn.Module, **hp):
    method = build_method({"name": "adapter", **hp})
    method.apply(model, family_for(model))
    return method


def method_count(model: torch.nn.Module) -> int:
    return count_parameters(model, head_names(model, family_for(model))).method


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("source", ["minilm", "gpt2-medium", "llama-135m"])
def test_adapters_start_as_identity_then_change_with_training(minilm2, source, placement):
    model = copy.deepcopy(minilm2) if source == "minilm" else tiny_decoder(source, "classification", pad_token_id=0)
    ids = torch.tensor([[101, 523, 203, 137, 331, 102], [101, 759, 102, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [3]])).long()
    before = model(input_ids=ids, attention_mask=mask).logits.detach()
    apply(model, placement=placement, bottleneck_size=8)
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)

    head = head_names(model, family_for(model))[0]
    frozen_head = copy.deepcopy(getattr(model, head))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    setattr(model, head, frozen_head)  # only the adapters' effect is compared
    after = model(input_ids=ids, attention_mask=mask).logits.detach()
    assert not torch.allclose(after, before, atol=1e-4)


def test_houlsby_wraps_attention_output_and_ffn_output_pfeiffer_only_the_ffn(minilm2):
    houlsby, pfeiffer = copy.deepcopy(minilm2), copy.deepcopy(minilm2)
    apply(houlsby, placement="houlsby", bottleneck_size=4)
    apply(pfeiffer, placement="pfeiffer", bottleneck_size=4)
    wrapped = sorted(n for n, m in houlsby.named_modules() if isinstance(m, BottleneckAdapter))
    assert wrapped == [f"bert.encoder.layer.{i}.{p}" for i in (0, 1) for p in ("attention.output.dense", "output.dense")]
    assert sorted(n for n, m in pfeiffer.named_modules() if isinstance(m, BottleneckAdapter)) == [
        f"bert.encoder.layer.{i}.output.dense" for i in (0, 1)]
    trainable = {n for n, p in houlsby.named_parameters() if p.requires_grad}
    assert all(".down." in n or ".up." in n or n.startswith(("classifier.", "bert.pooler.")) for n in trainable)


def test_adapter_counts_follow_the_formula(minilm2):
    """Per adapter 2 m d + d + m; Houlsby 2 per block (+ 2 LayerNorms of 2 d each with train_layer_norms), Pfeiffer 1."""
    L, m = 2, 16
    enc = copy.deepcopy(minilm2)
    apply(enc, placement="houlsby", bottleneck_size=m, train_layer_norms=True)
    d = 384
    assert method_count(enc) == 2 * L * (2 * m * d + d + m) + L * 2 * (2 * d)
    enc2 = copy.deepcopy(minilm2)
    apply(enc2, placement="pfeiffer", bottleneck_size=None, reduction_factor=16)
    assert method_count(enc2) == L * (2 * (d // 16) * d + d + d // 16)
    dec = tiny_decoder("llama-135m")  # d = 64; RMSNorm has a weight only: d per norm
    apply(dec, placement="houlsby", bottleneck_size=m, train_layer_norms=True)
    d = 64
    assert method_count(dec) == 2 * L * (2 * m * d + d + m) + L * 2 * d
    gpt2 = tiny_decoder("gpt2-medium")
    apply(gpt2, placement="pfeiffer", bottleneck_size=m)
    assert method_count(gpt2) == L * (2 * m * d + d + m)
    assert len(adapters(gpt2)) == L


def test_adapter_roundtrip_through_export_state(minilm2, tmp_path):
    from safetensors.torch import load_file

    from peftlab.measure import save_safetensors

    model = copy.deepcopy(minilm2)
    method = apply(model, bottleneck_size=4)
    with torch.no_grad():
        for a in adapters(model):
            a.up.weight.normal_(0, 0.1)
    state = method.export_state(model)
    assert all(".down." in k or ".up." in k or k.startswith(("classifier.", "bert.pooler.")) for k in state)
    save_safetensors(state, tmp_path / "a.safetensors")
    fresh = copy.deepcopy(minilm2)
    apply(fresh, bottleneck_size=4)
    missing, unexpected = fresh.load_state_dict(load_file(str(tmp_path / "a.safetensors")), strict=False)
    assert not unexpected
    ids = torch.tensor([[101, 2023, 102]])
    torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize("hp,field", [
    (dict(bottleneck_size=0), "method.bottleneck_size: got 0"),
    (dict(bottleneck_size=-8), "method.bottleneck_size: got -8"),
    (dict(placement="middle"), "method.placement: got 'middle'; allowed: houlsby, pfeiffer"),
    (dict(nonlinearity="swish7"), "method.nonlinearity"),
    (dict(bottleneck_size=8, reduction_factor=16), "exactly one of bottleneck_size and reduction_factor"),
    (dict(bottleneck_size=None, reduction_factor=0), "method.reduction_factor: got 0"),
])
def test_adapter_rejects_bad_hyper_parameters(hp, field):
    with pytest.raises(ConfigError, match=field):
        build_method({"name": "adapter", **hp})


@pytest.mark.parametrize("args,expected", [
    (["method=adapter", "method.bottleneck_size=0"], "method.bottleneck_size: got 0"),
    (["method=adapter", "method.placement=middle"], "method.placement: got 'middle'; allowed: houlsby, pfeiffer"),
    (["method=prefix", "method.num_virtual_tokens=0"], "method.num_virtual_tokens: got 0"),
])
def test_bad_method_hyper_parameters_exit_2_with_one_line(tmp_path, args, expected):
    result = cli("peftlab-train", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftlab: error: ") and expected in lines[0], result.stderr[-2000:]
