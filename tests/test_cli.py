"""The Hydra entry point end to end on a tiny run, and bad input: one line, non-zero exit, nothing recorded as ok."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import TINY, cli


def test_tiny_run_writes_ok_record_and_loss_falls(tmp_path):
    out = tmp_path / "run"
    res = cli("peftlab-train", *TINY, "method=lora", "method.r=8", "trainer.max_epochs=4", "trainer.log_every_n_steps=1",
              "data.train_size=64", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "ok"
    assert record["method"]["name"] == "lora" and record["method"]["r"] == 8
    assert record["params"]["params_method"] == 2 * 2 * 2 * 384 * 8  # 2 layers x (W_q, W_v) x (A + B), d=384, r=8
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0
    log = pd.read_csv(out / "logs" / "metrics.csv")
    assert len(log["train_loss_step"].dropna()) == 32  # 4 epochs x 8 steps, every step logged
    epochs = log["train_loss_epoch"].dropna().tolist()
    assert len(epochs) == 4 and epochs[-1] < epochs[0]  # the mean training loss of the last epoch is below the first's
    assert (out / "adapter.safetensors").stat().st_size == record["cost"]["checkpoint_bytes"]
    assert "[ok] lora" in res.stdout


BAD = [
    (["method=lorax"], "method: got 'lorax'; allowed: "),
    (["method.r=0"], "method.r: got 0; allowed: an integer >= 1"),
    (["method.target_modules=[q_proj]"], "method.target_modules: got 'q_proj'; allowed: roles query"),
    (["data=csv", "data.source=/nonexistent/reviews.csv"], "data.source: got '/nonexistent/reviews.csv'"),
]


@pytest.mark.parametrize("args, message", BAD, ids=["unknown-method", "r-zero", "unknown-target", "missing-file"])
def test_bad_input_one_line_nonzero_exit(tmp_path, args, message):
    out = tmp_path / "run"
    res = cli("peftlab-train", *TINY, *args, f"hydra.run.dir={out}")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftlab: error: ") and message in lines[0], res.stderr[-2000:]
    if args == ["method=lorax"]:
        assert "full" in lines[0] and "lora" in lines[0]
    if (out / "metrics.json").exists():
        assert json.loads((out / "metrics.json").read_text())["status"] == "failed"


def test_unknown_target_error_lists_linear_layers(tmp_path):
    res = cli("peftlab-train", *TINY, "method.target_modules=[q_proj]", f"hydra.run.dir={tmp_path}")
    assert "linear layers" in res.stderr and "dense" in res.stderr and "query" in res.stderr


def test_count_is_exact_and_needs_no_weights():
    res = cli("peftlab-count", "model=gpt2-medium", "method=lora", "method.r=4")
    assert res.returncode == 0, res.stderr
    table = dict(line.split(None, 1) if "  " not in line else [s.strip() for s in line.split("  ", 1)]
                 for line in res.stdout.splitlines())
    assert table["method-trainable"] == f"{2 * 48 * 1024 * 4:,}"  # W_q, W_v in 24 layers, d=1024, r=4
    assert table["model"] == "gpt2-medium"
