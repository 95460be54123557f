"""The inference latency each method adds to its base model: LoRA merged (should cost nothing) and unmerged,
Houlsby and Pfeiffer bottleneck adapters, and prefix tuning, each a copy of the same base model with the method's
default hyper-parameters, all timed interleaved with the base model on one fixed batch (see compare_latency)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from benchmarks.common import arg_parser, RESULTS, Case, Suite, build_base, ratio, suite_for, write_result
from peftlab.backbones.families import family_for
from peftlab.measure import compare_latency, count_parameters, random_tokens
from peftlab.methods import build_method

# name -> (method config, merge before timing)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "lora_merged": ({"name": "lora"}, True),
    "lora_unmerged": ({"name": "lora"}, False),
    "adapter_houlsby": ({"name": "adapter", "placement": "houlsby"}, False),
    "adapter_pfeiffer": ({"name": "adapter", "placement": "pfeiffer"}, False),
    "prefix": ({"name": "prefix"}, False),
}
TARGETS = {"lora_merged": "<= 1.02"}


def bench_case(suite: Suite, case: Case) -> dict[str, Any]:
    pristine = build_base(case, suite.device)
    base = copy.deepcopy(pristine)  # every contender, the base included, is a copy made the same way
    models, methods = {"base": base}, {}
    for name, (config, merge) in VARIANTS.items():
        model = copy.deepcopy(pristine)
        method = build_method(config)
        method.apply(model, family_for(model))
        if merge:
            method.merge(model)
        models[name], methods[name] = model, method.hparams()
    del pristine
    inputs = random_tokens(base.config.vocab_size, case.batch_size, case.seq_len, suite.device)
    timings = compare_latency(models, inputs, suite.latency_repeats, suite.warmup, suite.autocast_dtype)
    return {"case": case.name, "model": case.describe(), "methods": methods,
            "params_total": {n: count_parameters(m).total for n, m in models.items()},
            "latency_median_ms": {n: t.median_ms for n, t in timings.items()},
            "latency_p90_ms": {n: t.p90_ms for n, t in timings.items()}}


def main(quick: bool = False, device: str | None = None, out: Path = RESULTS) -> str:
    suite = suite_for(quick, device)
    results = [bench_case(suite, case) for case in suite.latency_cases]
    rows = []
    for r in results:
        med, p90, base = r["latency_median_ms"], r["latency_p90_ms"], r["latency_median_ms"]["base"]
        for name in med:
            rows.append([r["model"], name, med[name], p90[name], ratio(med[name], base), TARGETS.get(name, "")])
    notes = [f"Forward pass in eval mode under inference_mode, "
             f"{'autocast ' + suite.dtype if suite.dtype else 'float32'} on {suite.device}; {suite.warmup} warm-up "
             f"calls, then medians (p90) of {suite.latency_repeats} calls, every model interleaved call by call.",
             "Methods use their default hyper-parameters (LoRA r=8 on query and value; adapters bottleneck 64; "
             "prefix its default length); see the JSON for each one's exact settings."]
    return write_result(out, "inference_latency", suite, {"results": results},
                        ["model", "variant", "median (ms)", "p90 (ms)", "vs base", "target"], rows, notes)


if __name__ == "__main__":
    parser = arg_parser(__doc__)
    args = parser.parse_args()
    print(main(args.quick, args.device, args.out))
