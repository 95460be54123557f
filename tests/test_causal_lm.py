"""The causal-LM task's exact-match metric, and every method trained from the command line on both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, cli, tiny_decoder

from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_tokenizer
from peftlab.data.datamodule import prompt_text
from peftlab.methods import build_method
from peftlab.training.generation import exact_match, greedy_answers, normalize

RUN = [*TINY, "data.train_size=16", "data.val_size=8", "data.test_size=8", "data.eval_batch_size=8",
       "trainer.log_every_n_steps=1"]


def test_exact_match_ignores_only_case_and_whitespace():
    assert normalize("  I am\n a  Bot. ") == "i am a bot."
    assert exact_match(["I am a bot.", "yes", "no!"], ["i am  a bot.", "Yes", "no"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])


@pytest.mark.parametrize("method", [None, "prefix", "prompt"])
def test_greedy_answers_match_a_plain_argmax_loop(method):
    """Batched, left-padded, cached generation gives what one-prompt-at-a-time argmax decoding gives."""
    tok = load_tokenizer(ModelConfig(name="smollm2-135m", source="smollm2-135m"))
    model = tiny_decoder("llama-135m", vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if method:
        build_method({"name": method, "num_virtual_tokens": 3}).apply(model, family_for(model))
    prompts, refs = ["What is your name?", "Hi", "Do you like the weather today?"], ["Bot.", "Hello there.", "Yes."]
    answers = greedy_answers(model, tok, prompts, refs, batch_size=2)
    for prompt, ref, answer in zip(prompts, refs, answers):
        ids = torch.tensor([tok(prompt_text(prompt), add_special_tokens=False)["input_ids"]])
        steps = len(tok(" " + ref, add_special_tokens=False)["input_ids"]) + 1
        new: list[int] = []
        with torch.no_grad():
            for _ in range(steps):
                nxt = int(model(input_ids=ids).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        assert answer == tok.decode(new, skip_special_tokens=True)


def epoch_losses(run_dir: Path) -> list[float]:
    """Mean training loss of each epoch, from the run's CSV log."""
    log = sorted(run_dir.glob("**/metrics.csv"))[-1]
    return pd.read_csv(log)["train_loss_epoch"].dropna().tolist()


def sweep(tmp_path: Path, *overrides: str) -> list[dict]:
    """One Hydra multirun; returns the records of its runs with their run directories, in launch order."""
    result = cli("peftlab-train", "-m", *overrides, *RUN, f"hydra.sweep.dir={tmp_path}",
                 "hydra.sweep.subdir=${hydra.job.num}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text()) | {"dir": p.parent} for p in runs]


def check_trained(records: list[dict], expected: list[tuple[str, str]]) -> None:
    assert [(r["method"]["name"], r["data"]) for r in records] == expected
    for r in records:
        assert r["status"] == "ok", r.get("error")
        assert r["params"]["params_method"] > 0
        losses = epoch_losses(r["dir"])
        assert len(losses) >= 2 and losses[-1] < losses[0], (r["method"], r["data"], losses)
        assert (r["dir"] / "adapter.safetensors").exists()


def test_every_method_trains_from_the_cli_on_classification(tmp_path):
    records = sweep(tmp_path, "method=adapter,adapter_pfeiffer,prefix,prompt,bitfit", "trainer.max_epochs=3")
    check_trained(records, [(m, "rotten_tomatoes") for m in ("adapter", "adapter", "prefix", "prompt", "bitfit")])
    assert records[1]["method"]["placement"] == "pfeiffer"
    assert all("test_acc" in r["metrics"] for r in records)


def test_every_method_trains_from_the_cli_on_causal_lm(tmp_path):
    """SmolLM2 cut to 2 blocks on plain text and on prompt -> response pairs (with exact match); BitFit on a
    GPT-2-layout decoder, since Llama-style models have no biases."""
    methods = ("adapter", "adapter_pfeiffer", "prefix", "prompt")
    small = ("data.train_size=8", "data.batch_size=4", "data.val_size=4", "data.test_size=4", "trainer.max_epochs=2")
    records = sweep(tmp_path / "smollm2", "model=smollm2-135m", "data=shakespeare,chatterbot",
                    f"method={','.join(methods)}", *small)
    names = [m.split("_")[0] for m in methods]
    check_trained(records, [(m, d) for d in ("shakespeare", "chatterbot") for m in names])
    for r in records:
        assert r["metrics"]["test_ppl"] > 1
        assert ("test_exact_match" in r["metrics"]) == (r["data"] == "chatterbot")
    bitfit = sweep(tmp_path / "gpt2", "model=gpt2-medium", "data=chatterbot", "method=bitfit", *small,
                   "model.num_layers=1")
    check_trained(bitfit, [("bitfit", "chatterbot")])
    assert 0 <= bitfit[0]["metrics"]["val_exact_match"] <= 1
