"""A run killed with SIGKILL mid-training and launched again continues from its checkpoint and ends where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, TINY, cli
from peftlab import ROOT

# 2 epochs of 6 steps, a checkpoint every 2 steps, dropout on the LoRA branch (so the RNG state matters), every loss logged.
RESUMABLE = [*TINY, "trainer.max_epochs=2", "checkpoint.every_n_steps=2", "method.dropout=0.1",
             "trainer.log_every_n_steps=1"]
TOTAL_STEPS = 12


def _record(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _kill_after_checkpoint(run_dir, min_step: int) -> int:
    """Start a run, SIGKILL it once a checkpoint of at least min_step exists; returns that checkpoint's step."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(BIN / "peftlab-train"), *RESUMABLE, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    step = -1
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
                if step >= min_step:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return step


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    whole = tmp_path_factory.mktemp("whole")
    done = cli("peftlab-train", *RESUMABLE, f"hydra.run.dir={whole}")
    assert done.returncode == 0, done.stderr[-2000:]
    return _record(whole)


@pytest.mark.parametrize("min_step", [4, 6])  # mid-epoch, and at the epoch boundary or later
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path, min_step, uninterrupted):
    killed = tmp_path / "killed"
    step = _kill_after_checkpoint(killed, min_step)
    assert min_step <= step < TOTAL_STEPS, f"killed after step {step}: not mid-training"
    assert _record(killed)["status"] == "running"  # what a crashed run leaves behind is never read as a success

    again = cli("peftlab-train", *RESUMABLE, f"hydra.run.dir={killed}")
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = _record(killed)
    assert resumed["status"] == "ok" and resumed["resumed"] is True
    assert resumed["cost"]["global_steps"] == TOTAL_STEPS

    assert uninterrupted["resumed"] is False
    assert set(resumed["metrics"]) == set(uninterrupted["metrics"])
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

    # The CSV log keeps the killed run's rows; only a row logged between the last checkpoint and the kill can be missing.
    import pandas as pd

    steps = [pd.read_csv(d / "logs" / "metrics.csv").dropna(subset=["train_loss_step"]).set_index("step")["train_loss_step"]
             for d in (killed, Path(uninterrupted["run_dir"]))]
    assert {0, TOTAL_STEPS - 1} <= set(steps[0].index) <= set(steps[1].index)
    assert len(steps[0]) >= TOTAL_STEPS - 1
    for step, loss in steps[0].items():
        assert loss == pytest.approx(steps[1][step], rel=1e-5), step


def test_checkpoint_write_is_atomic(tmp_path):
    """A save that dies half-way leaves the previous checkpoint whole and no partial file under its name."""
    from peftlab.training.resume import AtomicCheckpointIO

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.save_checkpoint({"global_step": 2, "w": torch.ones(1000), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
