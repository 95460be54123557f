"""The benchmark scripts in quick mode (tiny models, a few repeats): they run, write JSON and a markdown table, and
compare like with like. No timing is asserted; speed is measured by running them in full mode."""

from __future__ import annotations

import json

from benchmarks import run_all
from benchmarks.trainer_overhead import pooled
from peftlab.measure import StepTimer


def test_quick_benchmarks_write_json_and_tables(tmp_path):
    summary = run_all.main(quick=True, out=tmp_path)
    for name in run_all.BENCHMARKS:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["benchmark"] == name and record["suite"]["name"] == "quick"
        assert record["machine"]["cpu_model"] and record["machine"]["date_utc"]
        assert (tmp_path / f"{name}.md").read_text() in summary

    lora = json.loads((tmp_path / "lora_vs_peft.json").read_text())["results"]
    assert [r["case"] for r in lora] == ["minilm-2l", "gpt2-tiny"]  # an encoder, and GPT-2's Conv1D as on the GPU
    for r in lora:
        assert r["params_trainable"]["peftlab"] == r["params_trainable"]["peft"]  # the same LoRA on both sides
        for key in ("train_step_median_ms", "latency_unmerged_median_ms", "latency_merged_median_ms"):
            assert set(r[key]) >= {"peftlab", "peft"} and min(r[key].values()) > 0
        kinds = {r["memory"][side]["peak_memory_kind"] for side in ("peftlab", "peft")}
        assert len(kinds) == 1 and min(r["memory"][s]["peak_memory_bytes"] for s in ("peftlab", "peft")) > 0

    overhead = json.loads((tmp_path / "trainer_overhead.json").read_text())["results"]
    for side in ("peftlab", "plain"):
        assert overhead[side]["timed_steps"] == 4  # 5 steps, 1 warm-up
        assert overhead[side]["iteration_time_median_s"] > 0

    latency = json.loads((tmp_path / "inference_latency.json").read_text())["results"][0]
    assert set(latency["latency_median_ms"]) == {"base", "lora_merged", "lora_unmerged", "adapter_houlsby",
                                                 "adapter_pfeiffer", "prefix"}
    params = latency["params_total"]
    assert params["lora_merged"] > params["base"] and params["adapter_houlsby"] > params["adapter_pfeiffer"] > params["base"]


def test_pooled_rounds_concatenate_samples():
    a, b = StepTimer(warmup=0), StepTimer(warmup=0)
    a.step_times, a.samples, a.tokens = [1.0, 3.0], 8, 80
    b.step_times, b.samples, b.tokens = [2.0], 4, 40
    r = pooled([a, b])
    assert r["timed_steps"] == 3 and r["step_time_median_s"] == 2.0 and r["train_samples_per_s"] == 12 / 6.0
