"""LoRA (Hu et al. 2021) Table 1: inference latency of one forward pass of GPT-2 medium, FT/LoRA vs adapters.

GPT-2 medium is built from its public config with random weights (latency does not depend on their values).
Three models share the batch and are timed interleaved round by round (peftlab.measure.compare_latency), so load from
other processes falls on all of them alike: FT/LoRA is LoRA (r = 4 on Wq, Wv) merged into the weights, which runs
exactly the base model's computation; Adapter^H is peftlab's `adapter` with placement houlsby (two per block);
Adapter^L is placement pfeiffer (one per block, on the FFN output). Lin et al.'s Adapter^L differs from it in two
ways: it sits after the block's residual sum instead of on the FFN projection's output, and it normalises its input
with its own LayerNorm, a little more work that peftlab's pfeiffer adapter does not do. The bottleneck m of each
adapter is the one whose parameter count is nearest the paper's |Θ| for the setting (0.5M or 11M).
The paper reports the mean of 100 trials (± std) on an NVIDIA Quadro RTX8000; we report the median and p90.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from peftlab.backbones.families import family_for
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.errors import ConfigError
from peftlab.measure import compare_latency, count_parameters, random_tokens
from peftlab.methods import build_method
from peftlab.methods.base import head_names
from peftlab.papers.params import Shape, adapter_count
from peftlab.papers.published import millions, table

ARCH = "gpt2-medium"
PAPER_SETTINGS = ((32, 512, "0.5M"), (16, 256, "11M"), (1, 128, "11M"))
PLACEMENTS = {"Adapter^L": ("pfeiffer", 1), "Adapter^H": ("houlsby", 2)}


@dataclass(frozen=True)
class Setting:
    """A batch size, a sequence length and the adapters' parameter budget |Θ|."""

    batch: int
    seq_len: int
    budget: str  # as the paper prints it, e.g. "11M"

    @property
    def name(self) -> str:
        return f"{self.batch}x{self.seq_len}"


def parse_settings(text: str) -> list[Setting]:
    """'32x512,1x128' -> the paper's settings of those shapes; a shape the paper lacks takes the 11M budget."""
    known = {f"{b}x{s}": Setting(b, s, p) for b, s, p in PAPER_SETTINGS}
    out = []
    for item in text.split(","):
        item = item.strip()
        if item in known:
            out.append(known[item])
            continue
        try:
            b, s = (int(v) for v in item.split("x"))
        except ValueError:
            raise ConfigError("--settings", item, "BATCHxSEQ items, e.g. 32x512,16x256,1x128") from None
        out.append(Setting(b, s, "11M"))
    return out


def bottleneck_for(shape: Shape, per_block: int, budget: str) -> int:
    """The bottleneck m whose adapter count L_hat * (2dm + m + d) is nearest the budget."""
    target = millions(budget) * 1e6
    return min(range(1, shape.d + 1), key=lambda m: abs(adapter_count(per_block, m)(shape) - target))


def full_shape() -> Shape:
    """GPT-2 medium's shape, all 24 blocks (the paper's |Θ| is for the whole model, also when timing fewer blocks)."""
    return Shape.of(load_backbone(ModelConfig(name=ARCH, source=ARCH, pretrained=False), "causal_lm", device="meta"))


def build_variants(base: torch.nn.Module, budget: str) -> dict[str, dict[str, Any]]:
    """FT/LoRA (merged), Adapter^L and Adapter^H copies of one random-weight base model, with their |Θ| and m."""
    shape = full_shape()
    variants: dict[str, dict[str, Any]] = {}
    lora_model = copy.deepcopy(base)
    family = family_for(lora_model)
    lora = build_method({"name": "lora", "r": 4, "target_modules": ["query", "value"]})
    lora.apply(lora_model, family)
    theta = count_parameters(lora_model, head_names(lora_model, family)).method
    lora.merge(lora_model)
    variants["FT/LoRA"] = {"model": lora_model, "m": None, "params": theta}
    for label, (placement, per_block) in PLACEMENTS.items():
        m = bottleneck_for(shape, per_block, budget)
        model = copy.deepcopy(base)
        build_method({"name": "adapter", "placement": placement, "bottleneck_size": m,
                      "train_layer_norms": False}).apply(model, family)
        variants[label] = {"model": model, "m": m,
                           "params": count_parameters(model, head_names(model, family)).method}
    return variants


def measure(settings: list[Setting], trials: int, warmup: int, device: str, num_layers: int | None = None,
            seed: int = 0) -> list[dict[str, Any]]:
    """Median and p90 latency (ms) of each variant at each setting; % increase over FT/LoRA."""
    torch.manual_seed(seed)
    cfg = ModelConfig(name=ARCH, source=ARCH, pretrained=False, num_layers=num_layers)
    base = load_backbone(cfg, "causal_lm", device=device).eval()
    rows = []
    for setting in settings:
        variants = build_variants(base, setting.budget)
        inputs = random_tokens(base.config.vocab_size, setting.batch, setting.seq_len, device=device, seed=seed)
        timings = compare_latency({k: v["model"] for k, v in variants.items()}, inputs, repeats=trials, warmup=warmup)
        ref = timings["FT/LoRA"].median_ms
        for label, v in variants.items():
            t = timings[label]
            rows.append({"setting": setting, "method": label, "m": v["m"], "params": v["params"],
                         "median_ms": t.median_ms, "p90_ms": t.p90_ms, "trials": t.n,
                         "increase_pct": None if label == "FT/LoRA" else 100 * (t.median_ms / ref - 1)})
        del variants
    return rows


def render(rows: list[dict[str, Any]], device_name: str, num_layers: int | None) -> str:
    """Ours beside the paper's Table 1 (mean ± std ms on a Quadro RTX8000, % increase over FT/LoRA)."""
    paper = table("lora_table1_latency").set_index(["method", "batch", "seq_len"])
    layers = "" if num_layers is None else f", first {num_layers} blocks only"
    lines = [f"LoRA (Hu et al. 2021) Table 1: one forward pass of GPT-2 medium (random weights{layers}) on {device_name}",
             "ours: median / p90 of interleaved trials after warm-up; paper: mean ± std of 100 trials, Quadro RTX8000",
             ""]
    header = (f"{'batch x seq':<12} {'method':<10} {'m':>4} {'|Θ| ours':>11} {'|Θ| paper':>10} {'median ms':>10} "
              f"{'p90 ms':>9} {'+% ours':>8} {'paper ms':>14} {'+% paper':>9}")
    lines += [header, "-" * len(header)]
    for r in rows:
        s = r["setting"]
        key = (r["method"], str(s.batch), str(s.seq_len))
        p = paper.loc[key] if key in paper.index else None
        paper_ms = f"{p['latency_ms']} ± {p['latency_std_ms']}" if p is not None else "-"
        paper_inc = (p["increase_pct"] or "-") if p is not None else "-"
        inc = "-" if r["increase_pct"] is None else f"{r['increase_pct']:+.1f}"
        lines.append(f"{s.name:<12} {r['method']:<10} {r['m'] or '-':>4} {r['params'] / 1e6:>10.2f}M "
                     f"{s.budget:>10} {r['median_ms']:>10.1f} {r['p90_ms']:>9.1f} {inc:>8} {paper_ms:>14} "
                     f"{paper_inc:>9}")
    lines += ["", "FT/LoRA is LoRA r = 4 on Wq, Wv merged into the weights (its |Θ| is LoRA's; the computation is the "
                  "base model's). Adapter^L here is peftlab's pfeiffer placement: Lin et al.'s adapter also has its own "
                  "LayerNorm and sits after the residual sum (see peftlab/papers/latency.py).",
              "Absolute times depend on the device; compare the % increase columns."]
    return "\n".join(lines)
