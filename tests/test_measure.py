"""The measurement functions on cases with known answers, and the cost fields of a tiny run's record."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from peftlab.measure import (StepTimer, batch_size_and_tokens, compare_calls, compare_latency, count_parameters,
                             current_memory, latency, peak_memory, reset_peak_memory, save_safetensors, summarize,
                             time_calls)
from tests.conftest import TINY, cli


class FakeClock:
    """A clock that only moves when a fake workload says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def fn():
            self.now += seconds
        return fn


class Toy(nn.Module):
    """body 10->5 (55, frozen), adapter 5->2 without bias (10, trainable), classifier 5->3 (18, trainable head),
    and `tied` sharing the body's module (counted once)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(10, 5)
        self.adapter = nn.Linear(5, 2, bias=False)
        self.classifier = nn.Linear(5, 3)
        self.tied = self.body
        self.body.requires_grad_(False)


def test_count_parameters_known_answer():
    counts = count_parameters(Toy(), heads=("classifier",))
    assert (counts.method, counts.head, counts.total) == (10, 18, 83)
    assert counts.trainable == 28
    assert counts.as_record()["trainable_pct"] == pytest.approx(100 * 28 / 83)
    assert count_parameters(Toy()).method == 28  # without a head list everything trainable is the method's


def test_checkpoint_bytes_are_header_plus_data(tmp_path):
    tensors = {"a": torch.zeros(3, 4), "b": torch.ones(5, dtype=torch.int64)}  # 48 + 40 bytes of data
    size = save_safetensors(tensors, tmp_path / "x.safetensors", metadata={"r": 8})
    raw = (tmp_path / "x.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    assert size == len(raw) == 8 + header_len + 48 + 40
    assert header["a"]["data_offsets"][1] - header["a"]["data_offsets"][0] == 48
    assert header["__metadata__"] == {"r": "8"}
    assert not list(tmp_path.glob("*.tmp"))


def test_summarize_median_and_nearest_rank_p90():
    t = summarize(list(range(1, 11)))
    assert (t.median_s, t.p90_s, t.n) == (5.5, 9, 10)
    assert summarize([3.0, 1.0, 2.0]).p90_s == 3.0  # ceil(2.7) = 3rd smallest
    assert summarize(list(range(1, 21))).p90_s == 18
    assert summarize([0.004]).median_ms == pytest.approx(4.0)
    with pytest.raises(ValueError):
        summarize([])


def test_time_calls_returns_median_of_timed_calls_only():
    clock = FakeClock()
    durations = iter([100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 50.0])  # two warm-up calls, then five timed

    def fn():
        clock.now += next(durations)

    t = time_calls(fn, repeats=5, warmup=2, clock=clock)
    assert (t.median_s, t.p90_s, t.n) == (3.0, 50.0, 5)


def test_compare_calls_interleaves_and_rotates():
    clock, order = FakeClock(), []

    def make(name, seconds):
        work = clock.work(seconds)
        return lambda: (order.append(name), work())

    timings = compare_calls({"a": make("a", 1.0), "b": make("b", 10.0)}, repeats=4, warmup=1, clock=clock)
    assert timings["a"].median_s == 1.0 and timings["b"].median_s == 10.0 and timings["a"].n == 4
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]


def test_latency_runs_in_eval_and_inference_mode_and_restores_training():
    seen = []

    class Probe(nn.Module):
        def forward(self, input_ids, attention_mask):
            seen.append((self.training, torch.is_inference_mode_enabled()))
            return input_ids

    model = Probe().train()
    batch = {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3)}
    t = latency(model, batch, repeats=4, warmup=2)
    assert t.n == 4 and len(seen) == 6 and set(seen) == {(False, True)} and model.training
    assert set(compare_latency({"x": model, "y": Probe().eval()}, batch, repeats=2, warmup=0)) == {"x", "y"}


def test_step_timer_excludes_warmup_and_pauses():
    clock = FakeClock()
    timer = StepTimer(warmup=1, clock=clock)
    for fetch, step in [(0.5, 9.0), (0.5, 2.0), (1.0, 4.0)]:  # the first (9 s) is warm-up
        clock.now += fetch
        timer.start()
        clock.now += step
        timer.stop(samples=8, tokens=100)
    timer.pause()  # e.g. validation: the next iteration does not span it
    clock.now += 60.0
    timer.start()
    clock.now += 3.0
    timer.stop(samples=8, tokens=100)
    r = timer.result()
    assert r["timed_steps"] == 3 and r["warmup_steps_excluded"] == 1
    assert r["step_time_median_s"] == 3.0 and r["step_time_p90_s"] == 4.0
    assert r["train_samples_per_s"] == pytest.approx(24 / 9.0) and r["train_tokens_per_s"] == pytest.approx(300 / 9.0)
    assert sorted([r["iteration_time_median_s"], r["iteration_time_p90_s"]]) == [3.75, 5.0]  # 2.5 and 5.0


def test_batch_size_and_tokens_counts_non_padding():
    batch = {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert batch_size_and_tokens(batch) == (2, 5)
    assert batch_size_and_tokens({"input_ids": torch.zeros(3, 4)}) == (3, 12)


def test_cpu_peak_memory_window_sees_an_allocation():
    reset_peak_memory("cpu")
    before = current_memory("cpu")
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so it is resident
    peak, kind = peak_memory("cpu")
    del x
    assert kind in ("cpu_peak_rss", "cpu_peak_rss_process")
    if kind == "cpu_peak_rss":  # a resettable window: the peak is at least what was resident plus the tensor
        assert peak >= before + 60 * 2**20


COST_FIELDS = ("peak_memory_bytes", "peak_memory_kind", "step_time_median_s", "step_time_p90_s",
               "iteration_time_median_s", "iteration_time_p90_s", "train_samples_per_s", "train_tokens_per_s",
               "timed_steps", "warmup_steps_excluded", "latency_batch_size", "latency_seq_len", "latency_repeats",
               "latency_median_ms", "latency_p90_ms", "latency_merged_median_ms", "latency_merged_p90_ms",
               "checkpoint_bytes", "fit_time_s", "wall_time_s", "global_steps")


def test_tiny_run_records_and_logs_every_cost(tmp_path):
    out = cli("peftlab-train", *TINY, "logger=csv", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    cost, params = record["cost"], record["params"]
    assert record["status"] == "ok"
    assert set(COST_FIELDS) <= set(cost)
    # 48 examples / batch 8 = 6 steps, the first (measure.train_warmup_steps=1) excluded
    assert cost["global_steps"] == 6 and cost["timed_steps"] == 5
    assert cost["checkpoint_bytes"] == (tmp_path / "adapter.safetensors").stat().st_size
    assert cost["peak_memory_bytes"] > 0 and cost["wall_time_s"] >= cost["fit_time_s"] > 0
    assert params["params_trainable"] == params["params_method"] + params["params_head"]
    logged = pd.read_csv(next(Path(tmp_path).glob("**/metrics.csv")))
    assert {"cost/step_time_median_s", "cost/latency_merged_median_ms", "params_method"} <= set(logged.columns)
    assert logged["cost/checkpoint_bytes"].dropna().iloc[-1] == cost["checkpoint_bytes"]
