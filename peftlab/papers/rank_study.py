"""LoRA rank study on MiniLM + Rotten Tomatoes, the analogue of Hu et al. 2021 Table 6 (which matrices x rank r) and
Table 5 (which matrices under a fixed parameter budget), laid out like the paper and shown beside its GPT-3 numbers.

The runs are ordinary Hydra sweeps of peftlab-train (experiments/rank_study.yaml), so every run writes its own record
and a relaunch skips finished runs. The budget arms that the grid already holds ({Wq} r=8, {Wq,Wv} r=4, all four r=2)
are the same run directories, so they are not trained twice.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from peftlab import ROOT  # noqa: E402
from peftlab.papers.published import (majority_baseline, markdown, records, run_accounting,  # noqa: E402
                                      run_setup, setup_line, write_study_report, table)

EXPERIMENT = "rank_study"
SWEEP_DIR = ROOT / "multirun" / EXPERIMENT
ROLE_SYMBOL = {"query": "Wq", "key": "Wk", "value": "Wv", "output": "Wo"}
GRID_SETS = ("Wq", "Wq,Wv", "Wq,Wk,Wv,Wo")
RANKS = (1, 2, 4, 8, 64)
# Table 5: the same budget (r=8 on one matrix per block) spread over more matrices at lower rank.
BUDGET = (("Wq", 8), ("Wk", 8), ("Wv", 8), ("Wo", 8), ("Wq,Wk", 4), ("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2))
# Budget arms outside the grid, as (target_modules sweep, r) overrides of the same experiment.
EXTRA_BUDGET_SWEEPS = (("[key],[value],[output]", 8), ("[query,key]", 4))
SEEDS = (0, 1, 2)


def sweep_commands(overrides: list[str]) -> list[list[str]]:
    """The peftlab-train argument lists, seed by seed (so an early stop still leaves whole tables): the grid, then
    the budget arms the grid lacks."""
    commands = []
    for seed in SEEDS:
        base = ["-m", f"experiments={EXPERIMENT}", f"seed={seed}", *overrides]
        commands.append(base)
        commands += [[*base, f"method.target_modules={targets}", f"method.r={r}"] for targets, r in EXTRA_BUDGET_SWEEPS]
    return commands


def target_label(targets: list[str] | None) -> str:
    """['query', 'value'] -> 'Wq,Wv' (the paper's notation, in the paper's order)."""
    roles = targets or ["query", "value"]
    return ",".join(ROLE_SYMBOL.get(t, t) for t in ["query", "key", "value", "output"] if t in roles) or ",".join(roles)


def load_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run record under sweep_dir: matrices, r, seed, status, accuracies, parameters, wall time."""
    rows = []
    for rec in records(sweep_dir):
        method, metrics = rec.get("method") or {}, rec.get("metrics") or {}
        rows.append({"matrices": target_label(method.get("target_modules")), "r": method.get("r"),
                     "seed": rec.get("seed"), "status": rec.get("status"), "test_acc": metrics.get("test_acc"),
                     "val_acc": metrics.get("val_acc"), "params": (rec.get("params") or {}).get("params_method"),
                     "wall_time_s": (rec.get("cost") or {}).get("wall_time_s"), "run_dir": rec["run_dir"]})
    return pd.DataFrame(rows, columns=["matrices", "r", "seed", "status", "test_acc", "val_acc", "params",
                                       "wall_time_s", "run_dir"])


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) mean, std and number of seeds per (matrices, r), over runs whose status is ok."""
    ok = runs[runs["status"] == "ok"].copy()
    ok["acc"] = 100 * ok["test_acc"].astype(float)
    g = ok.groupby(["matrices", "r"])
    return pd.DataFrame({"mean": g["acc"].mean(), "std": g["acc"].std(ddof=1), "n": g["acc"].size(),
                         "params": g["params"].first()}).reset_index()


def _cell(s: pd.DataFrame, matrices: str, r: int) -> str:
    hit = s[(s["matrices"] == matrices) & (s["r"] == r)]
    if hit.empty:
        return "-"
    row = hit.iloc[0]
    std = "" if pd.isna(row["std"]) else f" ± {row['std']:.1f}"
    return f"{row['mean']:.1f}{std} (n={int(row['n'])})"


def rank_table(s: pd.DataFrame) -> pd.DataFrame:
    """Table 6's layout: a row per weight set, a column per r; ours, then the paper's GPT-3 rows."""
    paper = table("lora_table6_rank")
    rows = [{"source": "ours: MiniLM, Rotten Tomatoes test acc", "matrices": m, **{f"r={r}": _cell(s, m, r) for r in RANKS}}
            for m in GRID_SETS]
    for _, p in paper.iterrows():
        rows.append({"source": f"paper: GPT-3, {p['task']}", "matrices": p["matrices"],
                     **{f"r={r}": p[f"r{r}"] for r in RANKS}})
    return pd.DataFrame(rows)


def budget_table(s: pd.DataFrame) -> pd.DataFrame:
    """Table 5's layout: a column per (matrices, r) arm of the same budget; our params and accuracy, the paper's."""
    paper = table("lora_table5_budget").set_index(["matrices", "r"])
    rows = []
    for m, r in BUDGET:
        hit = s[(s["matrices"] == m) & (s["r"] == r)]
        p = paper.loc[(m, str(r))]
        rows.append({"matrices": m, "r": r, "ours: params": "-" if hit.empty else f"{int(hit.iloc[0]['params']):,}",
                     "ours: test acc": _cell(s, m, r), "paper: WikiSQL": p["WikiSQL"], "paper: MNLI-m": p["MNLI-m"]})
    return pd.DataFrame(rows)


def plot(s: pd.DataFrame, path: Path, baseline: float | None = None) -> Path:
    """Accuracy against r (log scale) per weight set: ours (mean ± std over seeds) beside the paper's GPT-3 curves;
    baseline: the majority-class accuracy, drawn dashed."""
    paper = table("lora_table6_rank")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for m in GRID_SETS:
        part = s[s["matrices"] == m].sort_values("r")
        axes[0].errorbar(part["r"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=m)
    if baseline is not None:
        axes[0].axhline(baseline, color="grey", linestyle="--", linewidth=1, label="majority label")
    axes[0].set_title("ours: MiniLM, Rotten Tomatoes (test acc %)")
    for ax, task in zip(axes[1:], ("WikiSQL", "MNLI-m")):
        for _, p in paper[paper["task"] == task].iterrows():
            ax.plot(RANKS, [float(p[f"r{r}"]) for r in RANKS], marker="o", label=p["matrices"])
        ax.set_title(f"paper: GPT-3, {task} (val acc %)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(RANKS, [str(r) for r in RANKS])
        ax.set_xlabel("rank r")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(sweep_dir: Path, out: Path, wall_s: float | None = None) -> str:
    """Write the markdown report (tables, figure, run accounting) for the runs under sweep_dir; returns its text."""
    runs = load_runs(sweep_dir)
    s = summary(runs)
    setup = run_setup(sweep_dir)
    figure = plot(s, out.with_suffix(".png"), majority_baseline(setup) if setup else None)
    lines = [
        "# LoRA rank study (Hu et al. 2021, Tables 5 and 6 analogues)",
        "",
        *run_accounting(runs, sweep_dir, wall_s),
        f"- Setup: experiments/rank_study.yaml; {setup_line(setup)}; AdamW lr {setup.get('lr')}, alpha 16 for every "
        "r (scaling alpha / r, as the paper keeps alpha fixed); cells are test accuracy (%), mean ± std over seeds.",
        "",
        "## Table 6 analogue: weight set x rank r",
        "",
        markdown(rank_table(s)),
        "",
        f"![accuracy against rank]({figure.name})",
        "",
        "## Table 5 analogue: one budget (r=8 on one matrix per block), spread over more matrices",
        "",
        markdown(budget_table(s)),
        "",
    ]
    return write_study_report(out, lines)
