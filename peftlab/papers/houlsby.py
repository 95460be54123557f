"""Houlsby et al. 2019's headline, adapters vs full fine-tuning, on MiniLM + Rotten Tomatoes.

The paper: on GLUE (BERT-Large, test) adapters reach 80.0 against full fine-tuning's 80.4 while training 3.6% of the
parameters per task. Here: the same two methods on the offline encoder and dataset, each at the better of two
learning rates (picked on mean validation accuracy over seeds, as Houlsby picked per task), test accuracy over three
seeds, the gap, and the percentage of parameters each trains. The runs are Hydra sweeps of peftlab-train
(experiments/adapters_vs_full.yaml), so a relaunch skips finished runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from peftlab import ROOT
from peftlab.papers.published import markdown, records, run_accounting, run_setup, setup_line, write_study_report

EXPERIMENT = "adapters_vs_full"
SWEEP_DIR = ROOT / "multirun" / EXPERIMENT
# Each method at its own learning rates: full fine-tuning needs a far smaller one than a freshly initialised adapter.
LEARNING_RATES = {"full": ("5e-5", "2e-4"), "adapter": ("1e-3", "5e-3")}
PAPER = {"full": 80.4, "adapter": 80.0, "adapter_pct": 3.6}


def sweep_commands(overrides: list[str]) -> list[list[str]]:
    """One peftlab-train sweep per method over its learning rates (seeds from the experiment)."""
    return [["-m", f"experiments={EXPERIMENT}", f"method={m}", f"optim.lr={','.join(lrs)}", *overrides]
            for m, lrs in LEARNING_RATES.items()]


def load_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run record: method, lr, seed, status, accuracies, parameter counts, wall time."""
    rows = []
    for rec in records(sweep_dir):
        metrics, params = rec.get("metrics") or {}, rec.get("params") or {}
        optim = (rec.get("config") or {}).get("optim") or {}
        method = rec.get("method") or {}
        rows.append({"method": method.get("name"), "lr": optim.get("lr"), "seed": rec.get("seed"),
                     "hparams": ", ".join(f"{k}={v}" for k, v in method.items() if k != "name") or "-",
                     "status": rec.get("status"), "val_acc": metrics.get("val_acc"),
                     "test_acc": metrics.get("test_acc"), "params_method": params.get("params_method"),
                     "params_head": params.get("params_head"), "params_total": params.get("params_total"),
                     "wall_time_s": (rec.get("cost") or {}).get("wall_time_s")})
    return pd.DataFrame(rows, columns=["method", "lr", "seed", "hparams", "status", "val_acc", "test_acc", "params_method",
                                       "params_head", "params_total", "wall_time_s"])


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and lr: mean val and test accuracy (%), test std, seeds, parameters; `chosen` marks the best val."""
    ok = runs[runs["status"] == "ok"].copy()
    for col in ("val_acc", "test_acc"):
        ok[col] = 100 * ok[col].astype(float)
    g = ok.groupby(["method", "lr"])
    s = pd.DataFrame({"val": g["val_acc"].mean(), "test": g["test_acc"].mean(), "test_std": g["test_acc"].std(ddof=1),
                      "n": g["test_acc"].size(), "params_method": g["params_method"].first(),
                      "params_head": g["params_head"].first(), "params_total": g["params_total"].first()}).reset_index()
    s["chosen"] = s.index.isin(s.groupby("method")["val"].idxmax())
    s["trained_pct"] = 100 * (s["params_method"] + s["params_head"]) / s["params_total"]
    s["method_pct"] = 100 * s["params_method"] / s["params_total"]
    return s


def table(s: pd.DataFrame) -> pd.DataFrame:
    """Every (method, lr) with its accuracies and parameter share; the chosen lr marked."""
    rows = []
    for r in s.itertuples():
        std = "" if pd.isna(r.test_std) else f" ± {r.test_std:.1f}"
        rows.append({"method": r.method, "lr": f"{float(r.lr):g}", "chosen (best val)": "yes" if r.chosen else "",
                     "val acc": f"{r.val:.1f}", "test acc": f"{r.test:.1f}{std} (n={r.n})",
                     "trained params": f"{int(r.params_method + r.params_head):,}",
                     "% of model trained": f"{r.trained_pct:.2f}%", "% without the head": f"{r.method_pct:.2f}%"})
    return pd.DataFrame(rows)


def headline(s: pd.DataFrame) -> pd.DataFrame:
    """Houlsby's headline row, ours beside the paper's."""
    chosen = s[s["chosen"]].set_index("method")
    if not {"full", "adapter"} <= set(chosen.index):
        return pd.DataFrame()
    full, ad = chosen.loc["full"], chosen.loc["adapter"]
    return pd.DataFrame([
        {"": "ours: MiniLM-L6, Rotten Tomatoes (test acc)", "full fine-tuning": f"{full['test']:.1f}",
         "adapters": f"{ad['test']:.1f}", "gap (full - adapters)": f"{full['test'] - ad['test']:+.1f}",
         "adapters: % trained": f"{ad['trained_pct']:.2f}% ({ad['method_pct']:.2f}% without the head)"},
        {"": "paper: BERT-Large, GLUE test average", "full fine-tuning": f"{PAPER['full']}",
         "adapters": f"{PAPER['adapter']}", "gap (full - adapters)": f"{PAPER['full'] - PAPER['adapter']:+.1f}",
         "adapters: % trained": f"{PAPER['adapter_pct']}%"},
    ])


def report(sweep_dir: Path, out: Path, wall_s: float | None = None) -> str:
    """Write the markdown report for the runs under sweep_dir; returns its text."""
    runs = load_runs(sweep_dir)
    s = summary(runs)
    lines = [
        "# Adapters vs full fine-tuning (Houlsby et al. 2019's headline)",
        "",
        *run_accounting(runs, sweep_dir, wall_s),
        f"- Setup: experiments/adapters_vs_full.yaml; {setup_line(run_setup(sweep_dir))}. Adapter (two per block in "
        f"Houlsby placement): {', '.join(sorted(set(runs.loc[runs['method'] == 'adapter', 'hparams'])))}. The learning rate of each method is picked on mean "
        "validation accuracy; test accuracy is mean ± std over seeds. '% trained' counts the task head, which both "
        "methods train, against every parameter of the model.",
        "",
        "## Headline",
        "",
        markdown(headline(s)) if not headline(s).empty else "(both methods need finished runs)",
        "",
        "## All runs, by method and learning rate",
        "",
        markdown(table(s)),
        "",
    ]
    return write_study_report(out, lines)
