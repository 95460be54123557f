"""Sweeps through the real entry point: a tiny multirun with one setting that fails on purpose, the report it ends
with, a relaunch that skips finished runs, and force=true that reruns one. The three launches use the three
launchers (joblib in parallel, Hydra's basic one, submitit's local executor), and the first logs to wandb offline."""

from __future__ import annotations

import json
import time

import pandas as pd
import yaml
from matplotlib.image import imread
from omegaconf import OmegaConf

from conftest import TINY, cli
from peftlab.cli.sweep import check_multiprocess_sweep

# The tiny settings stay out of the run directories' names, so they read like a user's sweep (method.r=2,...).
KEEP = "hydra.job.config.override_dirname.exclude_keys=[name,force,logger," + ",".join(
    a.split("=")[0] for a in TINY) + "]"
MISSING = "/nonexistent/reviews.csv"
SWEEP = ["-m", "method.r=2,4", f"data.source=rotten_tomatoes,{MISSING}", *TINY, KEEP, "name=tiny"]


def records(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def wandb_records(path):
    """The records of an offline wandb run file (a leveldb-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, buf = path.read_bytes(), 7, 32768, [], b""
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def test_sweep_with_failure_report_relaunch_and_force(tmp_path):
    sweep_dir = tmp_path / "sweep"
    start = time.perf_counter()
    res = cli("peftlab-train", *SWEEP, "hydra/launcher=parallel", "logger=wandb", f"hydra.sweep.dir={sweep_dir}",
              env={"WANDB_MODE": "offline"})
    first_s = time.perf_counter() - start
    # One setting fails (its data file does not exist): the others finish, the sweep exits 1 and names the failure.
    assert res.returncode == 1, res.stderr[-3000:]
    recs = records(sweep_dir)
    assert len(recs) == 4
    ok = {d for d, r in recs.items() if r["status"] == "ok"}
    failed = {d for d, r in recs.items() if r["status"] == "failed"}
    assert ok == {"data.source=rotten_tomatoes,method.r=2", "data.source=rotten_tomatoes,method.r=4"}
    assert len(failed) == 2 and all("data.source" in recs[d]["error"] for d in failed)
    assert "2 run(s) of this sweep did not finish" in res.stderr
    assert all(d in res.stderr for d in failed)

    # The report the sweep ended with: one row per run, failures with their errors, valid figures.
    report = sweep_dir / "report"
    table = pd.read_csv(report / "results.csv")
    assert sorted(table["run"]) == sorted(recs)
    assert sorted(table["status"]) == ["failed", "failed", "ok", "ok"]
    assert table.loc[table.status == "failed", "error"].str.contains(MISSING).all()
    row = table[table.run == "data.source=rotten_tomatoes,method.r=4"].iloc[0]
    assert row["params_method"] == recs[row["run"]]["params"]["params_method"]
    assert row["test_acc"] == recs[row["run"]]["metrics"]["test_acc"]
    md = (report / "results.md").read_text()
    assert "Runs that did not finish (2)" in md and MISSING in md
    for stem in ("accuracy_vs_rank", "accuracy_vs_params", "cost_per_method", "rank_vs_params"):
        image = imread(report / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
        assert (report / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert str(report / f"{stem}.png") in res.stdout

    # wandb, offline: one wandb run per run, grouped by the sweep's name, with its config and the record's costs.
    for d in ok:
        logs = list((sweep_dir / d / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(logs) == 1
        found = wandb_records(logs[0])
        run = next(r.run for r in found if r.WhichOneof("record_type") == "run")
        assert run.run_group == "tiny" and run.display_name == d
        config = {i.key for r in found if r.WhichOneof("record_type") == "config" for i in r.config.update}
        summary = {i.key for r in found if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
        assert {"method", "model", "data", "trainer"} <= config
        assert {"cost/peak_memory_bytes", "cost/train_samples_per_s", "params/params_method", "status"} <= summary

    # Relaunch (basic launcher): finished runs are skipped, their records untouched; the failed ones are retried.
    before = {d: (sweep_dir / d / "metrics.json").stat().st_mtime_ns for d in recs}
    res = cli("peftlab-train", *SWEEP, f"hydra.sweep.dir={sweep_dir}")
    assert res.returncode == 1
    assert all((sweep_dir / d / "metrics.json").stat().st_mtime_ns == before[d] for d in ok)
    assert all((sweep_dir / d / "metrics.json").stat().st_mtime_ns > before[d] for d in failed)
    assert records(sweep_dir).keys() == recs.keys()
    assert res.stdout.count("[ok] lora") == 2 and "skipped" in res.stdout + res.stderr

    # force=true reruns a finished run (submitit's local executor); the old record is kept aside.
    again = "data.source=rotten_tomatoes,method.r=2"
    res = cli("peftlab-train", "-m", "method.r=2", "data.source=rotten_tomatoes", "force=true", *TINY,
              KEEP, "name=tiny", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    rerun = sweep_dir / again / "metrics.json"
    assert rerun.stat().st_mtime_ns > before[again] and json.loads(rerun.read_text())["status"] == "ok"
    assert len(list((sweep_dir / again).glob("metrics.previous-*.json"))) == 1
    print(f"first launch (4 runs, joblib): {first_s:.0f}s")


def test_optuna_search_maximises_validation_accuracy(tmp_path):
    sweep_dir = tmp_path / "optuna"
    res = cli("peftlab-train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY, KEEP,
              f"hydra.sweep.dir={sweep_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(sweep_dir)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs.values())
    assert all("optim.lr=" in d and "method.r=" in d and "method.alpha=" in d for d in recs)
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and result["best_value"] == max(r["metrics"]["val_acc"] for r in recs.values())


def test_multiprocess_runs_in_a_local_sweep_are_refused(tmp_path):
    # Lightning would start each DDP worker by running the whole sweep's command line again.
    res = cli("peftlab-train", "-m", "trainer=ddp_cpu", "method.r=2,4", f"hydra.sweep.dir={tmp_path / 'ddp'}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("peftlab: error: trainer.strategy: got 'ddp'")
    assert not (tmp_path / "ddp").exists()
    slurm = OmegaConf.create({"trainer": {"strategy": "ddp", "devices": 4},
                              "hydra": {"launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher."
                                                                 "submitit_launcher.SlurmLauncher"}}})
    check_multiprocess_sweep(slurm)  # one SLURM job per run: allowed


def test_wandb_is_offline_unless_logged_in_or_told(tmp_path, monkeypatch):
    from peftlab.training.loggers import wandb_mode

    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"  # `wandb login` writes this entry
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
