"""Scale-out of one run: DDP with 2 processes on CPU (gloo) through the entry point writes one run record, by rank 0,
with throughput that counts both processes' samples."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, cli


def test_ddp_two_cpu_processes_write_one_record(tmp_path):
    out = tmp_path / "run"
    res = cli("peftlab-train", "trainer=ddp_cpu", *TINY, "method.r=8", "logger=csv", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "train_ddp_process_1.log").exists()  # the second process ran, in the same run directory
    assert res.stdout.count("[ok] lora") == 1  # and only rank 0 reported
    assert [p.name for p in out.glob("*metrics*.json")] == ["metrics.json"]

    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "ok" and record["config"]["trainer"]["strategy"] == "ddp"
    assert record["params"]["params_method"] == 2 * 2 * 2 * 384 * 8  # as in one process: the model is replicated
    cost = record["cost"]
    assert cost["world_size"] == 2
    # 48 examples, 8 per process and step, 2 processes: 3 optimiser steps, the first one not timed.
    assert cost["global_steps"] == 3 and cost["timed_steps"] == 2
    # Throughput counts both processes: 16 samples per (synchronised) step.
    assert cost["train_samples_per_s"] * cost["step_time_median_s"] == pytest.approx(16, rel=1e-6)
    assert cost["peak_memory_bytes"] > 0 and cost["latency_median_ms"] > 0
    assert 0 <= record["metrics"]["test_acc"] <= 1 and record["metrics"]["val_loss"] > 0
    assert (out / "adapter.safetensors").stat().st_size == cost["checkpoint_bytes"]
    assert (out / "checkpoints" / "last.ckpt").exists()
