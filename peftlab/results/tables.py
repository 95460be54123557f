"""Tables of a sweep: results.csv (one row per run, failures included), summary.csv, and mean ± std over seeds as
markdown and LaTeX."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from peftlab.results.aggregate import Sweep, summarize

MIB = 2**20
METRIC_NAMES = {"test_acc": "Test acc. (%)", "test_ppl": "Test ppl", "test_loss": "Test loss"}


def runs_table(sweep: Sweep) -> pd.DataFrame:
    """Every run directory of the sweep, one row each: ok runs with all their fields, the others with their error."""
    ok = sweep.runs.assign(status="ok", error=None) if len(sweep.runs) else pd.DataFrame()
    bad = pd.DataFrame([{"run": p.run_dir, "status": p.status, "error": p.error} for p in sweep.problems])
    table = pd.concat([df for df in (ok, bad) if len(df)], ignore_index=True) if len(ok) or len(bad) else ok
    first = [c for c in ("run", "status", "setting", "method", "seed", "error") if c in table]
    return table[first + [c for c in table.columns if c not in first]]


def mean_std(mean: float, std: float, scale: float = 1.0, digits: int = 1, pm: str = "±") -> str:
    """`81.2 ± 1.1`; the mean alone when there is one seed (no std); `-` when missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} {pm} {std * scale:.{digits}f}"


def human_count(n: float) -> str:
    """12345 -> 12.3K, 1.5e6 -> 1.50M: parameter counts at a glance."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"


def summary_table(summary: pd.DataFrame, metric: str, pm: str = "±") -> pd.DataFrame:
    """The human table: one row per setting, accuracy-type metrics in %, costs in MiB, samples/s and ms."""
    scale = 100.0 if metric.endswith("_acc") else 1.0
    val = metric.replace("test_", "val_")
    digits = 1 if scale == 100.0 else 3

    def col(row: pd.Series, name: str, s: float = 1.0, d: int = 1) -> str:
        return mean_std(row.get(f"{name}_mean"), row.get(f"{name}_std"), s, d, pm)

    rows = []
    for _, row in summary.iterrows():
        rows.append({
            "Setting": row["setting"],
            "Trainable params": human_count(row.get("params_method")),
            "Trainable %": f"{row['trainable_pct']:.3g}" if pd.notna(row.get("trainable_pct")) else "-",
            METRIC_NAMES.get(metric, metric).replace("Test", "Val."): col(row, val, scale, digits),
            METRIC_NAMES.get(metric, metric): col(row, metric, scale, digits),
            "Peak mem. (MiB)": col(row, "peak_memory_bytes", 1 / MIB, 0),
            "Train samples/s": col(row, "train_samples_per_s", 1.0, 1),
            "Latency (ms)": col(row, "latency_median_ms", 1.0, 1),
            "Wall time (s)": col(row, "wall_time_s", 1.0, 0),
            "Seeds": int(row["n_seeds"]),
        })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a cell."""
    text = text.replace("\\", "\x00")
    for a, b in (("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("α", r"$\alpha$"), ("±", r"$\pm$")):
        text = text.replace(a, b)
    return text.replace("\x00", r"\textbackslash{}")


def latex(table: pd.DataFrame, caption: str) -> str:
    """A booktabs table; needs \\usepackage{booktabs} in the paper."""
    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(sweep: Sweep, out: Path) -> list[Path]:
    """results.csv, summary.csv, results.md and results.tex in out."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "summary.csv", out / "results.md", out / "results.tex"]
    runs_table(sweep).to_csv(paths[0], index=False)
    summary = summarize(sweep.runs)
    summary.to_csv(paths[1], index=False)
    table = summary_table(summary, sweep.metric) if len(summary) else pd.DataFrame()
    devices = ", ".join(sorted(set(sweep.runs["device"].dropna()))) if "device" in sweep.runs else "-"
    caption = (f"{len(sweep.runs)} finished runs of {sweep.root.name}; mean ± std over seeds; device: {devices}")
    md = [f"# Results: {sweep.root}", "", caption + ".", ""]
    md += [markdown(table) if len(table) else "No run finished.", ""]
    if sweep.problems:
        md += [f"## Runs that did not finish ({len(sweep.problems)})", ""]
        md += [f"- `{p.run_dir}` **{p.status}**: {p.error.splitlines()[0][:300] if p.error else ''}"
               for p in sweep.problems]
        md.append("")
    paths[2].write_text("\n".join(md))
    paths[3].write_text(latex(table, caption) if len(table) else "% no run finished\n")
    return paths
