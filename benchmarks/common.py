"""What every benchmark shares: the suites (quick, cpu, gpu), building a base model, memory probes in fresh
processes, the machine description, and writing results as JSON plus a markdown table."""

from __future__ import annotations

import argparse

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftlab.backbones.loader import ModelConfig, build_config, load_backbone
from peftlab.results.record import environment, write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    """One model at one batch shape. targets: LoRA target module names that peftlab and peft both accept.
    shrink: transformers-config overrides that make a tiny model of the same architecture (quick mode)."""

    name: str
    source: str
    task: str
    batch_size: int
    seq_len: int
    targets: tuple[str, ...]
    num_layers: int | None = None
    pretrained: bool = False
    shrink: dict[str, int] = field(default_factory=dict)
    tokenizer: str | None = None

    def model_config(self) -> ModelConfig:
        return ModelConfig(name=self.source, source=self.source, pretrained=self.pretrained, num_layers=self.num_layers,
                           tokenizer=self.tokenizer)

    def describe(self, batch: bool = True) -> str:
        layers = f", {self.num_layers} blocks" if self.num_layers else ""
        init = "pretrained" if self.pretrained else "random init"
        tiny = ", shrunk" if self.shrink else ""
        return f"{self.source} ({init}{layers}{tiny})" + (f", batch {self.batch_size} x {self.seq_len}" if batch else "")


@dataclass(frozen=True)
class Overhead:
    """The trainer-overhead job: model, data and trainer settings, steps per round, rounds per side."""

    model: Case
    data: dict[str, Any]
    steps: int
    warmup: int
    rounds: int
    precision: str = "32-true"


@dataclass(frozen=True)
class Suite:
    """A benchmark setting: device, autocast dtype (None: full precision), repeats, and the models."""

    name: str
    device: str
    dtype: str | None
    repeats: int
    warmup: int
    memory_steps: int
    cases: tuple[Case, ...]
    latency_cases: tuple[Case, ...]
    overhead: Overhead
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    latency_repeats: int = 20  # latency differences of 1-2% need more repeats than training steps

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return getattr(torch, self.dtype) if self.dtype else None


MINILM_MAIN = Case("minilm", "minilm", "classification", 32, 64, ("query", "value"), pretrained=True)
TINY_MINILM = Case("minilm-2l", "minilm", "classification", 2, 16, ("query", "value"), num_layers=2, pretrained=True)
TINY_GPT2 = Case("gpt2-tiny", "gpt2-medium", "causal_lm", 2, 16, ("c_attn",), num_layers=2,
                 shrink=dict(n_embd=64, n_head=4, vocab_size=1000, n_positions=64))
MINILM_SMALL = Case("minilm", "minilm", "classification", 8, 64, ("query", "value"), pretrained=True)
GPT2_2L = Case("gpt2-medium-2l", "gpt2-medium", "causal_lm", 2, 64, ("c_attn",), num_layers=2)
GPT2_MEDIUM = Case("gpt2-medium", "gpt2-medium", "causal_lm", 8, 512, ("c_attn",), tokenizer="minilm")

SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick", "cpu", None, repeats=3, warmup=1, memory_steps=1, cases=(TINY_MINILM, TINY_GPT2),
        latency_cases=(TINY_MINILM,),
        overhead=Overhead(TINY_MINILM, dict(train_size=24, val_size=8, test_size=8, batch_size=4, max_length=16),
                          steps=5, warmup=1, rounds=1),
        threads=1, latency_repeats=3),
    "cpu": Suite(
        "cpu", "cpu", None, repeats=20, warmup=2, memory_steps=2,
        cases=(MINILM_SMALL, GPT2_2L), latency_cases=(MINILM_SMALL, GPT2_2L),
        overhead=Overhead(MINILM_MAIN, dict(batch_size=32, max_length=64), steps=10, warmup=2, rounds=2),
        threads=1, latency_repeats=40),
    "gpu": Suite(
        "gpu", "cuda", "bfloat16", repeats=20, warmup=5, memory_steps=3, cases=(GPT2_MEDIUM,),
        latency_cases=(GPT2_MEDIUM,),
        overhead=Overhead(GPT2_MEDIUM, dict(name="shakespeare", task="causal_lm", source="shakespeare",
                                            batch_size=8, max_length=512, train_size=256, val_size=8, test_size=8),
                          steps=30, warmup=5, rounds=2, precision="bf16-mixed"),
        latency_repeats=50),
}


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes when run alone (run_all has its own)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="tiny models, a few repeats: checks the script runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def suite_for(quick: bool, device: str | None) -> Suite:
    """quick: the tiny CPU suite for tests; otherwise the GPU suite on cuda, the CPU suite on cpu. Sets the threads."""
    if quick:
        suite = SUITES["quick"]
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        suite = SUITES["gpu" if device == "cuda" else "cpu"]
    use_threads(suite)
    return suite


def use_threads(suite: Suite) -> None:
    """One torch thread on the CPU suites: on a shared machine, OpenMP threads waiting on a busy core made single
    operations of small models up to 100x slower and the timings meaningless (see benchmarks/README.md)."""
    if suite.threads:
        torch.set_num_threads(suite.threads)


def build_base(case: Case, device: str, num_labels: int = 2) -> nn.Module:
    """The case's backbone on the device, seeded so every process builds the same weights."""
    torch.manual_seed(0)
    if not case.shrink:
        on = "cpu" if case.pretrained else device  # random init straight on the device; weights load on CPU
        return load_backbone(case.model_config(), case.task, num_labels, device=on).to(device)
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = build_config(case.model_config(), case.task, num_labels)
    for key, value in case.shrink.items():
        setattr(config, key, value)
    auto = AutoModelForCausalLM if case.task == "causal_lm" else AutoModelForSequenceClassification
    return auto.from_config(config).to(device)


def train_batch(model: nn.Module, case: Case, device: str) -> dict[str, torch.Tensor]:
    """A fixed batch of random tokens with labels (class ids, or the tokens themselves for a causal LM)."""
    from peftlab.measure import random_tokens

    batch = random_tokens(model.config.vocab_size, case.batch_size, case.seq_len, device)
    if case.task == "causal_lm":
        batch["labels"] = batch["input_ids"].clone()
    else:
        g = torch.Generator().manual_seed(1)
        batch["labels"] = torch.randint(0, model.config.num_labels, (case.batch_size,), generator=g).to(device)
    return batch


def probe(module: str, args: list[str], timeout: int = 900) -> dict[str, Any]:
    """Run `python -m <module> --probe <args>` in a fresh process and return the JSON object it prints last.

    glibc's malloc is pinned to mmap every block of 64 KiB or more (a fixed MALLOC_MMAP_THRESHOLD_ turns off its
    dynamic threshold), so a freed tensor leaves the resident set at once: the peak RSS then follows the peak of live
    tensors, repeatable to about 1 MB, where the dynamic threshold made it vary by a whole logits buffer between runs.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(RESULTS.parent.parent), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", module, "--probe", *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"probe {module} {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """Where and when the figures were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = environment()
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else None, **{k: env[k] for k in ("torch", "transformers", "lightning", "peftlab", "git_commit")}}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def write_result(out_dir: Path, name: str, suite: Suite, data: dict[str, Any], header: list[str],
                 rows: list[list[Any]], notes: list[str]) -> str:
    """Write <out_dir>/<name>.json (everything measured) and <name>.md (the ratio table); returns the markdown."""
    info = machine()
    record = {"benchmark": name, "suite": asdict(suite), "machine": info, **data}
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / f"{name}.json", record)
    where = info["gpu"] or f"{info['cpu_model']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"
    lines = [f"### {name} ({suite.name} suite)", "",
             f"{where}, {info['date_utc']} UTC, torch {info['torch']}, commit {str(info['git_commit'])[:7]}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    md = "\n".join(lines)
    (out_dir / f"{name}.md").write_text(md)
    return md
