"""peftlab's LoRA vs HF peft's LoRA on the same model, targets, r/alpha, batch and precision.

Training step (forward, backward, AdamW step on a fixed batch) and inference latency, unmerged and merged, are timed
interleaved in one process (see peftlab.measure.compare_calls). Peak memory of training is measured for each side in
its own fresh process (both import the same libraries), so the figures never share a baseline.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.common import (RESULTS, arg_parser, SUITES, Case, Suite, build_base, probe, ratio, suite_for, train_batch,
                               use_threads, write_result)
from peftlab.backbones.families import family_for
from peftlab.measure import (autocast, compare_calls, compare_latency, count_parameters, current_memory, peak_memory,
                             random_tokens, reset_peak_memory)
from peftlab.methods import build_method
from peftlab.methods.base import head_names

R, ALPHA = 8, 16.0
IMPLS = ("peftlab", "peft")


def with_lora(base: nn.Module, case: Case, impl: str) -> tuple[nn.Module, Callable[[], None]]:
    """A copy of base with LoRA from peftlab or peft, and a function that merges it."""
    model = copy.deepcopy(base)
    if impl == "peftlab":
        method = build_method({"name": "lora", "r": R, "alpha": ALPHA, "target_modules": list(case.targets)})
        method.apply(model, family_for(model))
        return model, lambda: method.merge(model)
    from peft import LoraConfig, get_peft_model

    # The same task head as peftlab trains (the classifier, and a BERT-style pooler), so both sides train alike.
    heads = head_names(model, family_for(model))
    config = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(case.targets),
                        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores W transposed
                        modules_to_save=heads or None,
                        task_type="SEQ_CLS" if case.task == "classification" else "CAUSAL_LM")
    model = get_peft_model(model, config)
    return model, model.merge_adapter


def trainer_step(model: nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None) -> Callable[[], None]:
    """One optimisation step on a fixed batch: forward under autocast, backward, AdamW step, gradients cleared."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = batch["input_ids"].device
    model.train()

    def step() -> None:
        with autocast(device, dtype):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def memory_probe(suite: Suite, case: Case, impl: str) -> dict[str, Any]:
    """Peak training memory of one side, run in a fresh process (called through --probe)."""
    import peft  # noqa: F401  both sides load the same libraries, so resident memory starts alike

    base = build_base(case, suite.device)
    model, _ = with_lora(base, case, impl)
    del base
    step = trainer_step(model, train_batch(model, case, suite.device), suite.autocast_dtype)
    reset_peak_memory(suite.device)
    at_reset = current_memory(suite.device)
    for _ in range(suite.memory_steps):
        step()
    peak, kind = peak_memory(suite.device)
    return {"peak_memory_bytes": peak, "peak_memory_kind": kind, "memory_at_reset_bytes": at_reset,
            "step_memory_bytes": peak - at_reset}


def bench_case(suite: Suite, case: Case) -> dict[str, Any]:
    pristine = build_base(case, suite.device)
    base = copy.deepcopy(pristine)  # every contender, the base included, is a copy made the same way
    models, merges = {}, {}
    for impl in IMPLS:
        models[impl], merges[impl] = with_lora(pristine, case, impl)
    params = {impl: count_parameters(m).trainable for impl, m in models.items()}
    steps = {impl: trainer_step(m, train_batch(m, case, suite.device), suite.autocast_dtype) for impl, m in models.items()}
    train = compare_calls(steps, suite.repeats, suite.warmup, suite.device)
    inputs = random_tokens(base.config.vocab_size, case.batch_size, case.seq_len, suite.device)
    unmerged = compare_latency({"base": base, **models}, inputs, suite.latency_repeats, suite.warmup,
                               suite.autocast_dtype)
    for merge in merges.values():
        merge()
    merged = compare_latency({"base": base, **models}, inputs, suite.latency_repeats, suite.warmup,
                             suite.autocast_dtype)
    memory = {impl: probe("benchmarks.lora_vs_peft", [suite.name, case.name, impl]) for impl in IMPLS}
    return {
        "case": case.name, "model": case.describe(), "targets": list(case.targets), "r": R, "alpha": ALPHA,
        "params_trainable": params,
        "train_step_median_ms": {k: t.median_ms for k, t in train.items()},
        "train_step_p90_ms": {k: t.p90_ms for k, t in train.items()},
        "latency_unmerged_median_ms": {k: t.median_ms for k, t in unmerged.items()},
        "latency_unmerged_p90_ms": {k: t.p90_ms for k, t in unmerged.items()},
        "latency_merged_median_ms": {k: t.median_ms for k, t in merged.items()},
        "latency_merged_p90_ms": {k: t.p90_ms for k, t in merged.items()},
        "memory": memory,
    }


def table(results: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows: case, measure, peftlab, peft, peftlab / peft, target."""
    rows = []
    for r in results:
        mem = r["memory"]
        for label, key, target in (("train step median (ms)", "train_step_median_ms", "<= 1.0"),
                                   ("train step p90 (ms)", "train_step_p90_ms", ""),
                                   ("latency unmerged median (ms)", "latency_unmerged_median_ms", ""),
                                   ("latency merged median (ms)", "latency_merged_median_ms", "")):
            a, b = r[key]["peftlab"], r[key]["peft"]
            rows.append([r["case"], label, a, b, ratio(a, b), target])
        merged, base = r["latency_merged_median_ms"], r["latency_merged_median_ms"]["base"]
        rows.append([r["case"], "merged latency / base model", merged["peftlab"] / base, merged["peft"] / base,
                     ratio(merged["peftlab"], merged["peft"]), "<= 1.02 (each)"])
        for label, key, target in (("peak memory (MiB)", "peak_memory_bytes", "<= 1.0"),
                                   ("step memory above reset (MiB)", "step_memory_bytes", "")):
            a, b = mem["peftlab"][key] / 2**20, mem["peft"][key] / 2**20
            rows.append([r["case"], label, a, b, ratio(a, b), target])
        rows.append([r["case"], "trainable parameters", r["params_trainable"]["peftlab"], r["params_trainable"]["peft"],
                     ratio(r["params_trainable"]["peftlab"], r["params_trainable"]["peft"]), "= 1"])
    return rows


def main(quick: bool = False, device: str | None = None, out: Path = RESULTS) -> str:
    suite = suite_for(quick, device)
    results = [bench_case(suite, case) for case in suite.cases]
    kind = results[0]["memory"]["peftlab"]["peak_memory_kind"] if results else None
    notes = [f"LoRA r={R}, alpha={ALPHA:g}, dropout 0, same target modules on both sides; "
             f"{'autocast ' + suite.dtype if suite.dtype else 'float32'} on {suite.device}.",
             f"Times: {suite.warmup} warm-up calls, then medians (p90) of {suite.repeats} train steps and "
             f"{suite.latency_repeats} forward passes, the sides interleaved call by call. A train step is forward + "
             "backward + AdamW step on a fixed batch.",
             f"Peak memory ({kind}): each side trains {suite.memory_steps} steps in its own fresh process; "
             "'step memory' is the peak minus what was in use when the window started (model loaded)."]
    return write_result(out, "lora_vs_peft", suite, {"results": results},
                        ["case", "measure", "peftlab", "peft", "peftlab / peft", "target"], table(results), notes)


if __name__ == "__main__":
    parser = arg_parser(__doc__)
    parser.add_argument("--probe", nargs=3, metavar=("SUITE", "CASE", "IMPL"))
    args = parser.parse_args()
    if args.probe:
        suite = SUITES[args.probe[0]]
        use_threads(suite)
        case = next(c for c in suite.cases if c.name == args.probe[1])
        print(json.dumps(memory_probe(suite, case, args.probe[2])))
    else:
        print(main(args.quick, args.device, args.out))
