"""The report on the fixture sweep (real run records of a tiny sweep, tests/fixtures/make_sweep.sh): aggregation over
seeds, the Pareto front, tables and figures, and records that are failed, unfinished or corrupt."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from matplotlib.image import imread

from conftest import cli
from peftlab.cli.sweep import lora_alpha, run_dirname
from peftlab.errors import ConfigError
from peftlab.results.aggregate import load_sweep, pareto_front, summarize
from peftlab.results.tables import latex_escape, mean_std
from peftlab import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "sweep"


def fixture_records() -> dict[str, dict]:
    return {str(p.parent.relative_to(FIXTURE)): json.loads(p.read_text()) for p in FIXTURE.rglob("metrics.json")}


def test_fixture_sweep_loads_ok_runs_and_lists_failures():
    sweep = load_sweep(FIXTURE)
    recs = fixture_records()
    ok = {d for d, r in recs.items() if r["status"] == "ok"}
    assert set(sweep.runs["run"]) == ok
    assert {p.run_dir for p in sweep.problems} == set(recs) - ok
    failed = [p for p in sweep.problems if p.status == "failed"]
    assert failed and all("data.source" in p.error for p in failed)
    assert sweep.metric == "test_acc"
    row = sweep.runs.set_index("run").loc["alpha_rule=2r,method.r=4,seed=1"]
    assert (row["method"], row["r"], row["alpha"], row["alpha_label"]) == ("lora", 4, 8, "α=2r")
    assert row["test_acc"] == recs["alpha_rule=2r,method.r=4,seed=1"]["metrics"]["test_acc"]
    assert set(sweep.runs["method"]) >= {"full", "lora", "rslora"}


def test_summary_is_mean_and_std_over_seeds():
    sweep = load_sweep(FIXTURE)
    summary = summarize(sweep.runs)
    assert summary["setting"].is_unique
    assert summary["n_seeds"].sum() == len(sweep.runs)
    for _, row in summary.iterrows():
        runs = sweep.runs[sweep.runs["setting"] == row["setting"]]
        assert row["n_seeds"] == runs["seed"].nunique() == len(runs)
        assert row["test_acc_mean"] == pytest.approx(runs["test_acc"].mean())
        assert row["test_acc_std"] == pytest.approx(runs["test_acc"].std(ddof=1), nan_ok=True)
        assert row["peak_memory_bytes_mean"] == pytest.approx(runs["peak_memory_bytes"].mean())
    # The rank sweep's settings are named by rank and alpha rule; the alpha = r line has one setting per rank.
    assert "lora r=4 lr=0.004 α=2r" in set(summary["setting"])
    assert sweep.runs.loc[sweep.runs["series"] == "lora lr=0.004 α=r", "r"].nunique() == 5


def test_pareto_front_keeps_only_undominated_settings():
    points = pd.DataFrame({"params": [10, 100, 100, 1000, 5000, 20], "acc": [0.6, 0.7, 0.65, 0.69, 0.9, 0.55]})
    front = pareto_front(points, "params", "acc")
    assert list(front.index) == [0, 1, 4]
    assert list(pareto_front(points.assign(ppl=points["acc"]), "params", "ppl", maximize=False).index) == [0, 5]


def test_cells_and_latex():
    assert mean_std(0.8125, 0.0112, 100.0, 1) == "81.2 ± 1.1"
    assert mean_std(0.8125, float("nan"), 100.0, 1) == "81.2"
    assert mean_std(float("nan"), 0.1) == "-"
    assert latex_escape("lora r=8 α=2r 50% a_b & {x}") == r"lora r=8 $\alpha$=2r 50\% a\_b \& \{x\}"


def test_alpha_rule_and_long_run_names():
    assert lora_alpha("r", 8) == 8 and lora_alpha("2r", 8) == 16 and lora_alpha(16, 64) == 16
    assert lora_alpha("0.5r", 3) == 1.5
    with pytest.raises(ConfigError, match="alpha_rule"):
        lora_alpha("twice", 8)
    long = ",".join(f"data.option_{i}=value_{i}" for i in range(20))
    assert run_dirname("method.r=8") == "method.r=8"
    assert run_dirname("data.source=/data/a%b.csv") == "data.source=%2Fdata%2Fa%25b.csv"
    name = run_dirname(long)
    assert len(name.encode()) <= 200 and name == run_dirname(long) and name != run_dirname(long + "x")


def test_report_cli_lists_corrupt_and_unfinished_records(tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep_dir)
    good = next(iter(sorted(sweep_dir.glob("alpha_rule=r,*/metrics.json"))))
    good.write_text(good.read_text()[: len(good.read_text()) // 2])  # half-written
    (sweep_dir / "garbage").mkdir()
    (sweep_dir / "garbage" / "metrics.json").write_text("[1, 2, 3]")  # JSON, but not a run record
    (sweep_dir / "killed").mkdir()
    (sweep_dir / "killed" / "metrics.json").write_text(json.dumps({"schema_version": 1, "status": "running"}))
    n_records = len(list(sweep_dir.rglob("metrics.json")))

    res = cli("peftlab-report", str(sweep_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    half = str(good.parent.relative_to(sweep_dir))
    assert f"[corrupt] {half}: " in res.stdout and "unreadable run record" in res.stdout
    assert "[corrupt] garbage: " in res.stdout and "[running] killed: " in res.stdout

    report = sweep_dir / "report"
    table = pd.read_csv(report / "results.csv")
    assert len(table) == n_records and table["run"].is_unique
    assert table.set_index("run").loc[half, "status"] == "corrupt"
    md = (report / "results.md").read_text()
    assert f"`{half}` **corrupt**" in md and "`killed` **running**" in md
    summary = pd.read_csv(report / "summary.csv")
    assert summary["n_seeds"].sum() == (table["status"] == "ok").sum()
    assert "\\begin{tabular}" in (report / "results.tex").read_text()
    for stem in ("accuracy_vs_rank", "accuracy_vs_params", "cost_per_method", "rank_vs_params"):
        assert imread(report / f"{stem}.png").shape[0] > 300
        assert (report / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_report_cli_without_records_is_one_line_error(tmp_path):
    res = cli("peftlab-report", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "sweep_dir" in res.stderr
