"""Prefix tuning: padding-invariant outputs, generation with and without the KV cache, folding, exact counts (= peft's)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_decoder

from peftlab.backbones.families import family_for
from peftlab.errors import ConfigError
from peftlab.measure import count_parameters
from peftlab.methods import build_method
from peftlab.methods.base import head_names


def with_prefix(model: torch.nn.Module, **hp):
    method = build_method({"name": "prefix", **hp})
    method.apply(model, family_for(model))
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial values everywhere (peft's zero-free default init, but seeded here)
        for p in model.prefix_encoder.parameters():
            p.normal_(0, 0.5)
    return method


def method_count(model: torch.nn.Module) -> int:
    return count_parameters(model, head_names(model, family_for(model))).method


def padded_pair(ids: torch.Tensor, pad_id: int, extra: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two: ids right-padded by `extra`, and a longer unrelated row with no padding."""
    n = ids.shape[1]
    other = torch.randint(5, 900, (1, n + extra))
    batch = torch.cat([torch.cat([ids, torch.full((1, extra), pad_id)], 1), other])
    mask = torch.ones_like(batch)
    mask[0, n:] = 0
    return batch, mask


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_outputs_do_not_depend_on_padding_encoder(minilm2, projection):
    model = copy.deepcopy(minilm2)
    base = model(input_ids=torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])).logits
    with_prefix(model, num_virtual_tokens=4, projection=projection, projection_hidden_size=16)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    alone = model(input_ids=ids).logits
    batch, mask = padded_pair(ids, pad_id=0)
    together = model(input_ids=batch, attention_mask=mask).logits
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone, base, atol=1e-4)  # the prefix does take part


@pytest.mark.parametrize("source", ["llama-135m", "gpt2-medium"])
def test_prefix_outputs_do_not_depend_on_padding_decoder(source):
    model = tiny_decoder(source, pad_token_id=0)
    ids = torch.randint(5, 900, (1, 7))
    base = model(input_ids=ids).logits
    with_prefix(model, num_virtual_tokens=3)
    alone = model(input_ids=ids).logits
    batch, mask = padded_pair(ids, pad_id=0)
    together = model(input_ids=batch, attention_mask=mask).logits
    torch.testing.assert_close(together[0, :7], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone, base, atol=1e-4)


@pytest.mark.parametrize("source,offset", [("llama-135m", True), ("gpt2-medium", True), ("llama-135m", False)])
def test_prefix_generation_same_with_and_without_kv_cache(source, offset):
    """Left-padded batch, greedy: the cached decode (prefix prepended at every step) equals full recomputation."""
    model = tiny_decoder(source, pad_token_id=0)
    with_prefix(model, num_virtual_tokens=3, projection=True, projection_hidden_size=16, position_offset=offset)
    ids = torch.randint(5, 900, (2, 6))
    ids[0, :2] = 0
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kw)
    recomputed = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(cached, recomputed)
    # and the first generated token is the argmax of a plain forward pass
    first = model(input_ids=ids[1:]).logits[0, -1].argmax()
    assert cached[1, 6] == first


def test_prefix_fold_keeps_outputs_and_drops_the_mlp(minilm2):
    model = copy.deepcopy(minilm2)
    method = with_prefix(model, num_virtual_tokens=4, projection=True, projection_hidden_size=16)
    ids = torch.tensor([[101, 2023, 2003, 102]])
    before = model(input_ids=ids).logits
    exported = method.export_state(model)
    L, d, l_p = 2, 384, 4
    assert exported["prefix_encoder.embedding.weight"].shape == (l_p, 2 * L * d)
    assert {k for k in exported if not k.startswith(("classifier.", "bert.pooler."))} == {"prefix_encoder.embedding.weight"}
    method.fold(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-6)
    assert method_count(model) == 2 * L * d * l_p
    torch.testing.assert_close(model.prefix_encoder.embedding.weight, exported["prefix_encoder.embedding.weight"])


def test_prefix_counts_follow_the_formula(minilm2):
    """kv = num_key_value_heads * head_dim; 2 L kv l_p plain, l_p kv + kv h + h + 2 L kv (h + 1) with projection."""
    l_p, h = 5, 32
    enc = copy.deepcopy(minilm2)
    with_prefix(enc, num_virtual_tokens=l_p)
    assert method_count(enc) == 2 * 2 * 384 * l_p
    dec = tiny_decoder("llama-135m")  # 4 heads of 16, 2 key/value heads: kv = 32, not d = 64
    with_prefix(dec, num_virtual_tokens=l_p, projection=True, projection_hidden_size=h)
    kv, L = 2 * 16, 2
    assert method_count(dec) == l_p * kv + kv * h + h + 2 * L * kv * (h + 1)


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_counts_equal_peft(minilm2, projection):
    from peft import PrefixTuningConfig, get_peft_model

    hp = dict(num_virtual_tokens=6, projection=projection, projection_hidden_size=24)
    for model, task in ((copy.deepcopy(minilm2), "SEQ_CLS"), (tiny_decoder("llama-135m"), "CAUSAL_LM")):
        reference = get_peft_model(copy.deepcopy(model), PrefixTuningConfig(
            task_type=task, num_virtual_tokens=6, prefix_projection=projection, encoder_hidden_size=24))
        peft_trainable = reference.get_nb_trainable_parameters()[0]
        with_prefix(model, **hp)
        counts = count_parameters(model, head_names(model, family_for(model)))
        # peft's SEQ_CLS trains the classifier too; peftlab's BERT head also holds the pooler
        peft_head = sum(p.numel() for n, p in reference.named_parameters() if p.requires_grad and "prompt_encoder" not in n)
        assert counts.method == peft_trainable - peft_head
        assert counts.method > 0


def peft_reference(model: torch.nn.Module, task: str, num_tokens: int) -> torch.nn.Module:
    """HF peft's prefix tuning on a copy of `model`, with peftlab's prefix table layout."""
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(task_type=task, num_virtual_tokens=num_tokens)
    return get_peft_model(copy.deepcopy(model), config).eval()


def peft_classifier_logits(reference, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """peft's SEQ_CLS prefix forward. peft 0.21.2 looks for a `past_key_values` parameter, which transformers 5 renamed
    `cache`, and gives up; this is the call it makes when it finds one: prefixes as a KV cache, mask extended."""
    l_p = reference.active_peft_config.num_virtual_tokens
    full = torch.cat([mask.new_ones(mask.shape[0], l_p), mask], dim=1)
    cache = reference.get_prompt(len(ids))
    return reference.base_model(input_ids=ids, attention_mask=full, past_key_values=cache).logits


def tiny_roberta() -> torch.nn.Module:
    """A random-init 2-block RoBERTa classifier: absolute positions counted from padding_idx + 1."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=40, pad_token_id=1, num_labels=2)
    return RobertaForSequenceClassification(config).eval()


@pytest.mark.parametrize("source", ["llama-135m", "gpt2-medium"])
def test_prefix_logits_equal_peft_with_the_same_prefixes(source):
    """Same table layout, same attention: equal logits on a padded batch. With position_offset (default) real tokens
    sit at l_p, l_p + 1, ... as in peft, which pre-fills the KV cache; without it at 0, 1, ..., so peft's positions
    must then be passed explicitly to agree."""
    base = tiny_decoder(source)
    reference = peft_reference(base, "CAUSAL_LM", 3)
    table = reference.prompt_encoder["default"].embedding.weight
    ids, mask = padded_pair(torch.randint(5, 900, (1, 7)), pad_id=0)
    expected = reference(input_ids=ids, attention_mask=mask).logits
    shifted, plain = copy.deepcopy(base), base
    for model, offset in ((shifted, True), (plain, False)):
        with_prefix(model, num_virtual_tokens=3, position_offset=offset)
        with torch.no_grad():
            model.prefix_encoder.embedding.weight.copy_(table)
    torch.testing.assert_close(shifted(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)
    positions = torch.arange(3, 3 + ids.shape[1])[None]
    torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask, position_ids=positions).logits, expected,
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-3)


@pytest.mark.parametrize("source", ["minilm", "roberta"])
def test_prefix_encoder_logits_equal_peft_with_the_same_prefixes(minilm2, source):
    """BERT: positions l_p, l_p + 1, ...; RoBERTa: non-pad tokens counted from padding_idx + 1 + l_p, pads at
    padding_idx."""
    base = copy.deepcopy(minilm2) if source == "minilm" else tiny_roberta()
    pad = base.config.pad_token_id
    reference = peft_reference(base, "SEQ_CLS", 3)
    with torch.no_grad():
        reference.prompt_encoder["default"].embedding.weight.normal_(0, 0.5)
        reference.base_model.classifier.modules_to_save["default"].load_state_dict(base.classifier.state_dict())
    ids, mask = padded_pair(torch.tensor([[101, 223, 203, 137, 331, 102]]), pad_id=pad)  # ids < 1000 for RoBERTa
    expected = peft_classifier_logits(reference, ids, mask)
    with_prefix(base, num_virtual_tokens=3)
    with torch.no_grad():
        base.prefix_encoder.embedding.weight.copy_(reference.prompt_encoder["default"].embedding.weight)
    torch.testing.assert_close(base(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)
    alone = base(input_ids=ids[:1, :6]).logits  # and padding still changes nothing
    torch.testing.assert_close(alone[0], expected[0], rtol=1e-5, atol=1e-5)


def test_prefix_trains_only_the_prefix(minilm2):
    model = copy.deepcopy(minilm2)
    with_prefix(model, num_virtual_tokens=2, projection=True, projection_hidden_size=8)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad and not n.startswith("bert.pooler.")}
    assert trainable == {"prefix_encoder", "classifier"}
    out = model(input_ids=torch.tensor([[101, 2023, 102]]), labels=torch.tensor([1]))
    out.loss.backward()
    assert model.prefix_encoder.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("field,value", [("num_virtual_tokens", 0), ("num_virtual_tokens", -3),
                                         ("projection_hidden_size", 0)])
def test_prefix_rejects_bad_hyper_parameters(field, value):
    with pytest.raises(ConfigError, match=f"method.{field}: got {value}"):
        build_method({"name": "prefix", field: value})


def test_prefix_position_offset_must_be_a_bool():
    from peftlab.spec import check_types

    with pytest.raises(ConfigError, match="method.position_offset: got 'yes'"):
        check_types(build_method({"name": "prefix", "position_offset": "yes"}).config, "method")
