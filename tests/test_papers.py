"""Paper reproductions: parameter columns (LoRA Tables 2-4) against each row's formula, the latency command at a tiny
setting, and the rank-study and adapters-vs-full reports built from tiny real sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY, cli
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.cli.reproduce import main
from peftlab.papers import houlsby, params, rank_study
from peftlab.papers.latency import PLACEMENTS, Setting, bottleneck_for, full_shape, parse_settings
from peftlab.errors import ConfigError


@pytest.mark.parametrize("row", params.ROWS, ids=lambda r: f"T{r.table}-{r.model}-{r.label}-{r.printed}")
def test_parameter_row_equals_its_formula(row):
    """The count of the built model (meta device, method applied through the registry) is the row's formula exactly."""
    counts, shape = params.count_row(row)
    assert counts.method == row.formula(shape)
    assert counts.method > 0 and counts.total >= counts.method


def test_inferred_settings_print_as_the_paper_says():
    """Where the docs say a setting is 'the integer for which the paper's formula prints' the figure, it does; and
    the paper's Adapter^L formula differs from peftlab's pfeiffer count by exactly Lin et al.'s LayerNorm (2·L·d)."""
    claimed = [r for r in params.ROWS if "prints" in r.setting]
    assert claimed
    for row in claimed:
        _, shape = params.count_row(row)
        paper = (row.paper_formula or row.formula)(shape)
        assert params.prints_as(paper, row.printed), row
        if row.label == "Adapter^L":
            assert paper - row.formula(shape) == 2 * shape.L * shape.d


def test_prints_as_uses_the_printed_decimals():
    assert params.prints_as(368_784, "0.37M") and not params.prints_as(319_632, "0.37M")
    assert params.prints_as(774_030_080, "774.03M") and params.prints_as(175_255_800_000, "175,255.8M")


def test_every_row_is_a_published_row():
    params.check_published(params.ROWS)
    bad = params.Row("4", "GPT-3 175B", "gpt3-175b", "causal_lm", "LoRA", "9.9M", {"name": "lora"},
                     params.lora_count(2, 1), "", "stated")
    with pytest.raises(ValueError, match="not in lora_table4_gpt3.csv"):
        params.check_published([bad])


def test_table4_command_prints_ours_beside_the_paper(capsys):
    main(["lora-table4"])  # in-process: the console script is this function
    stdout = capsys.readouterr().out
    shape = params.Shape.of(load_backbone(ModelConfig(name="g", source="gpt3-175b", pretrained=False), "causal_lm",
                                          device="meta"))
    for row in (r for r in params.ROWS if r.table == "4"):
        line = next(ln for ln in stdout.splitlines() if f"{row.formula(shape):,}" in ln and row.label in ln)
        assert row.printed in line
    assert "Not reproduced" in stdout


def test_latency_sizes_adapters_to_the_budget():
    shape = full_shape()
    for placement, per_block in PLACEMENTS.values():
        m = bottleneck_for(shape, per_block, "11M")
        near = [abs(params.adapter_count(per_block, k)(shape) - 11e6) for k in (m - 1, m, m + 1)]
        assert near[1] == min(near)
    assert parse_settings("32x512,2x8") == [Setting(32, 512, "0.5M"), Setting(2, 8, "11M")]
    with pytest.raises(ConfigError):
        parse_settings("32by512")


def test_latency_command_tiny_setting():
    out = cli("peftlab-reproduce", "lora-table1", "--layers", "1", "--settings", "1x8", "--trials", "2",
              "--warmup", "1", "--device", "cpu", timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("1x8")]
    assert [ln.split()[1] for ln in rows] == ["FT/LoRA", "Adapter^L", "Adapter^H"]
    assert "Quadro RTX8000" in out.stdout


NO_SWEEP_REPORT = ("hydra.callbacks.sweep_report.report=false",)  # the generic sweep report is tested elsewhere


def test_study_sweeps_go_seed_by_seed_and_cover_every_arm():
    """All of seed 0 before seed 1, so a study stopped early still has whole tables; every budget arm is swept."""
    commands = rank_study.sweep_commands(["data.train_size=8"])
    seeds = [next(a for a in c if a.startswith("seed=")) for c in commands]
    assert seeds == sorted(seeds) and len(set(seeds)) == len(rank_study.SEEDS)
    swept = {(t, r) for t in rank_study.GRID_SETS for r in rank_study.RANKS}
    for targets, r in rank_study.EXTRA_BUDGET_SWEEPS:
        swept |= {(rank_study.target_label(t.strip("[]").split(",")), r) for t in targets.split("],[")}
    assert set(rank_study.BUDGET) <= swept
    assert all("data.train_size=8" in c for c in commands + houlsby.sweep_commands(["data.train_size=8"]))


def _records(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def test_rank_study_report_from_a_tiny_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run = cli("peftlab-train", "-m", "experiments=rank_study", *TINY, "method.target_modules=[query],[query,value]",
              "method.r=2", "seed=0", f"hydra.sweep.dir={sweep}", *NO_SWEEP_REPORT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "rank_study.md"
    rep = cli("peftlab-reproduce", "rank-study", "--report-only", "--sweep-dir", str(sweep), "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    text = out.read_text()
    assert out.with_suffix(".png").exists() and "2 records" in text
    for rec in _records(sweep):
        label = rank_study.target_label(rec["method"]["target_modules"])
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| ours: MiniLM, Rotten Tomatoes test acc | {label} |"))
        r_col = rank_study.RANKS.index(rec["method"]["r"])
        assert line.split(" | ")[2 + r_col] == f"{100 * rec['metrics']['test_acc']:.1f} (n=1)"
    assert "| paper: GPT-3, MNLI-m | Wq,Wk,Wv,Wo |" in text
    # a hand-written reading survives regenerating the report
    out.write_text(text + "\n## Reading\nkept\n")
    rank_study.report(sweep, out)
    assert out.read_text().endswith("## Reading\nkept\n")


def test_adapters_vs_full_report_from_a_tiny_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run = cli("peftlab-train", "-m", "experiments=adapters_vs_full", *TINY, "method=full,adapter", "optim.lr=1e-3",
              "seed=0", f"hydra.sweep.dir={sweep}", *NO_SWEEP_REPORT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "avf.md"
    text = houlsby.report(sweep, out)
    acc = {rec["method"]["name"]: 100 * rec["metrics"]["test_acc"] for rec in _records(sweep)}
    assert f"{acc['full'] - acc['adapter']:+.1f}" in text
    adapter = next(rec for rec in _records(sweep) if rec["method"]["name"] == "adapter")["params"]
    pct = 100 * (adapter["params_method"] + adapter["params_head"]) / adapter["params_total"]
    assert f"{pct:.2f}%" in text and "80.4" in text
