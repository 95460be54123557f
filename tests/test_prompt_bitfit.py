"""Prompt tuning (soft tokens in front of the input embeddings) and BitFit (biases only): behaviour and exact counts."""

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


def apply(model: torch.nn.Module, name: str, **hp):
    method = build_method({"name": name, **hp})
    method.apply(model, family_for(model))
    return method


def counts(model: torch.nn.Module):
    return count_parameters(model, head_names(model, family_for(model)))


# --- prompt tuning ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source,task", [("minilm", "classification"), ("llama-135m", "classification"),
                                         ("gpt2-medium", "classification"), ("llama-135m", "causal_lm")])
def test_prompt_outputs_do_not_depend_on_padding(minilm2, source, task):
    """Right padding: BERT pools [CLS], GPT-2/Llama classifiers the last real token, LM logits stay per real token."""
    model = copy.deepcopy(minilm2) if source == "minilm" else tiny_decoder(source, task, pad_token_id=0)
    ids = torch.tensor([[101, 523, 203, 137, 331, 102]])
    base = model(input_ids=ids).logits
    apply(model, "prompt", num_virtual_tokens=3)
    alone = model(input_ids=ids).logits
    batch = torch.tensor([[101, 523, 203, 137, 331, 102, 0, 0, 0], [101, 45, 67, 89, 12, 34, 56, 78, 102]])
    mask = torch.ones_like(batch)
    mask[0, 6:] = 0
    together = model(input_ids=batch, attention_mask=mask).logits
    assert alone.shape == base.shape  # one output per real token: the soft tokens are cut off again
    n = alone.shape[1] if task == "causal_lm" else None
    torch.testing.assert_close(together[0, :n] if n else together[0], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone, base, atol=1e-4)


def test_prompt_bert_pools_the_real_cls_token(minilm2):
    """BERT's pooler runs inside the base model: it must read [CLS], not the first soft token."""
    model = copy.deepcopy(minilm2)
    apply(model, "prompt", num_virtual_tokens=3)
    out = model.bert(input_ids=torch.tensor([[101, 523, 203, 102]]))
    assert out.last_hidden_state.shape[1] == 4
    torch.testing.assert_close(out.pooler_output, model.bert.pooler(out.last_hidden_state))


def test_prompt_causal_lm_loss_uses_unpadded_labels():
    """Labels line up with the real tokens (no -100 padding for the soft tokens is needed)."""
    model = tiny_decoder("llama-135m")
    apply(model, "prompt", num_virtual_tokens=4)
    ids = torch.randint(5, 900, (2, 8))
    labels = ids.clone()
    labels[1, :3] = -100
    out = model(input_ids=ids, labels=labels)
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    assert model.soft_prompt.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("source", ["llama-135m", "gpt2-medium"])
def test_prompt_generation_same_with_and_without_kv_cache(source):
    model = tiny_decoder(source, pad_token_id=0)
    apply(model, "prompt", num_virtual_tokens=3)
    ids = torch.randint(5, 900, (2, 6))
    ids[0, :2] = 0
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, use_cache=True, **kw), model.generate(ids, use_cache=False, **kw))


def test_prompt_counts_follow_the_formula_and_equal_peft(minilm2):
    """PreEmbed: d * l_p (l_i = 0), the same as peft's PromptEmbedding; peft's SEQ_CLS also trains the classifier."""
    from peft import PromptTuningConfig, get_peft_model

    for model, task, d in ((copy.deepcopy(minilm2), "SEQ_CLS", 384), (tiny_decoder("llama-135m"), "CAUSAL_LM", 64)):
        reference = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type=task, num_virtual_tokens=7))
        apply(model, "prompt", num_virtual_tokens=7)
        c = counts(model)
        assert c.method == d * 7
        # peft's SEQ_CLS trains the classifier; peftlab's BERT head also holds the pooler (same counts for the method)
        peft_head = sum(p.numel() for n, p in reference.named_parameters() if p.requires_grad and "prompt_encoder" not in n)
        assert c.method == reference.get_nb_trainable_parameters()[0] - peft_head


def test_prompt_logits_equal_peft_with_the_same_soft_tokens():
    """peft returns logits for the soft tokens too; on the real tokens they equal ours."""
    from peft import PromptTuningConfig, get_peft_model

    model = tiny_decoder("llama-135m")
    reference = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    apply(model, "prompt", num_virtual_tokens=3)
    with torch.no_grad():
        model.soft_prompt.embedding.copy_(reference.prompt_encoder["default"].embedding.weight)
    ids = torch.randint(5, 900, (2, 7))
    torch.testing.assert_close(model(input_ids=ids).logits, reference.eval()(input_ids=ids).logits[:, 3:],
                               rtol=1e-5, atol=1e-5)


def test_prompt_export_state_holds_the_soft_tokens_and_head_only(minilm2):
    model = copy.deepcopy(minilm2)
    method = apply(model, "prompt", num_virtual_tokens=2)
    assert set(method.export_state(model)) == {"soft_prompt.embedding", "classifier.weight", "classifier.bias",
                                               "bert.pooler.dense.weight", "bert.pooler.dense.bias"}


# --- BitFit ----------------------------------------------------------------------------------------------------------
def test_bitfit_counts_follow_the_formula(minilm2):
    """Per block q, k, v, o biases (4 d), FFN (d_ff + d), two LayerNorm biases (2 d): L (7 d + d_ff); plus the
    embedding LayerNorm bias (BERT; the pooler trains as part of the head) or the final LayerNorm bias (GPT-2)."""
    enc = copy.deepcopy(minilm2)
    apply(enc, "bitfit")
    L, d, d_ff = 2, 384, 1536
    assert counts(enc).method == L * (7 * d + d_ff) + d
    dec = tiny_decoder("gpt2-medium")  # d = 64, d_ff = 4 d
    apply(dec, "bitfit")
    d = 64
    assert counts(dec).method == L * (7 * d + 4 * d) + d


def test_bitfit_trains_only_biases(minilm2):
    model = copy.deepcopy(minilm2)
    apply(model, "bitfit")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(".bias") or n.startswith(("classifier.", "bert.pooler.")) for n in trainable)
    model(input_ids=torch.tensor([[101, 523, 102]]), labels=torch.tensor([1])).loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.bias.grad.abs().sum() > 0
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is None


def test_bitfit_on_a_backbone_without_biases_is_a_clear_error():
    with pytest.raises(ConfigError, match="method.name: got 'bitfit'.*llama backbones .*no bias terms"):
        apply(tiny_decoder("llama-135m"), "bitfit")


def test_bitfit_rejects_hyper_parameters():
    with pytest.raises(ConfigError, match="method.r: got 8; allowed: fields of method 'bitfit': none"):
        build_method({"name": "bitfit", "r": 8})
