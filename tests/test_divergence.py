"""A non-finite training loss stops the run with status `diverged` in its record and a non-zero exit."""

from __future__ import annotations

import json

from conftest import TINY, cli


def test_nan_loss_stops_the_run_as_diverged(tmp_path):
    # A learning rate of 1e30 blows the LoRA weights up within a few steps: the loss becomes NaN.
    out = cli("peftlab-train", *TINY, "optim.lr=1e30", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("peftlab: error: run diverged: non-finite training loss")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "diverged"
    assert "non-finite training loss" in record["error"]
    assert "metrics" not in record and not (tmp_path / "adapter.safetensors").exists()  # nothing reads as a result
