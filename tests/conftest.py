"""Shared fixtures: tiny backbones and a way to run the real command-line entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftlab import ROOT
from peftlab.backbones.loader import ModelConfig, load_backbone

BIN = Path(sys.executable).parent
# A run small enough for tests: 2-layer MiniLM, a few dozen examples, short sequences.
TINY = ["model.num_layers=2", "data.train_size=48", "data.val_size=16", "data.test_size=16", "data.max_length=32",
        "data.batch_size=8", "data.eval_batch_size=16", "measure.latency_repeats=2", "measure.latency_warmup=1",
        "measure.latency_batch_size=2", "measure.latency_seq_len=16", "measure.train_warmup_steps=1",
        "trainer.enable_progress_bar=false"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # the CI machine has 2 cores; tests stay predictable and leave one free
    yield


def cli(tool: str, *args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """Run a console script (peftlab-train, peftlab-count, ...) from this venv and capture its output."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([str(BIN / tool), *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


@pytest.fixture(scope="session")
def minilm2() -> torch.nn.Module:
    """The pretrained MiniLM encoder cut to 2 blocks, as a sequence classifier (load once per session)."""
    torch.manual_seed(0)
    return load_backbone(ModelConfig(name="minilm", source="minilm", num_layers=2), "classification").eval()


def tiny_decoder(source: str, task: str = "causal_lm", **overrides) -> torch.nn.Module:
    """A random-init 2-block decoder of a known architecture (gpt2-medium or llama-135m layout), shrunk."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from peftlab.backbones.loader import build_config

    config = build_config(ModelConfig(name=source, source=source, pretrained=False, num_layers=2), task)
    small = {"gpt2": dict(n_embd=64, n_head=4, vocab_size=1000, n_positions=128),
             "llama": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, vocab_size=1000)}[config.model_type]
    for k, v in {**small, **overrides}.items():
        setattr(config, k, v)
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    return auto.from_config(config).eval()
