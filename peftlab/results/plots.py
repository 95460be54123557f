"""Figures of a sweep, as PNG and PDF, sized for a paper column pair (fonts stay legible at 7 inches wide).

Each function takes the per-run table (ok runs) and draws means with error bars of the standard deviation over seeds.
A figure that the sweep has no data for (e.g. accuracy vs rank without a method that has a rank) is skipped.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from peftlab.results.aggregate import Sweep, pareto_front, summarize  # noqa: E402
from peftlab.results.tables import human_count  # noqa: E402

MIB = 2**20
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3}
MEMORY_KINDS = {"cuda_max_memory_allocated": "GPU memory: peak allocated by torch",
                "cpu_peak_rss": "CPU memory: peak resident set of the process during training",
                "cpu_peak_rss_process": "CPU memory: lifetime peak RSS of the process (compare fresh processes only)"}
METRIC_LABELS = {"test_acc": ("Test accuracy (%)", 100.0), "test_ppl": ("Test perplexity", 1.0),
                 "test_loss": ("Test loss (nats/token)", 1.0)}


def metric_axis(metric: str) -> tuple[str, float]:
    """Axis label and scale of the headline metric (accuracy is drawn in %)."""
    return METRIC_LABELS.get(metric, (metric, 1.0))


def context(sweep: Sweep) -> str:
    """`model / data / device` of the sweep, for titles (several values are joined)."""
    parts = []
    for col in ("model", "data", "device"):
        values = sorted(set(sweep.runs[col].dropna().astype(str))) if col in sweep.runs else []
        parts.append(", ".join(values) or "-")
    return " / ".join(parts)


def save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    """Write stem.png (200 dpi) and stem.pdf."""
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def log2_rank_axis(ax: plt.Axes, ranks: list[int]) -> None:
    """A log2 x axis with a tick at every rank used, labelled as plain integers."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ranks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def accuracy_vs_rank(sweep: Sweep) -> plt.Figure | None:
    """Metric vs rank r, one line per series (method, alpha and any other varied setting), error bars = std over
    seeds. Series with a single rank are left out: they are points of another study, not a curve."""
    runs = sweep.runs
    if "r" not in runs or runs["r"].notna().sum() == 0:
        return None
    ranked = runs[runs["r"].notna()].assign(r=lambda d: d["r"].astype(int))
    ranked = ranked[ranked.groupby("series")["r"].transform("nunique") > 1]
    if ranked.empty:
        return None
    label, scale = metric_axis(sweep.metric)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for series, group in ranked.groupby("series", sort=True):
            stats = group.groupby("r")[sweep.metric].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"] * scale, yerr=stats["std"].fillna(0) * scale, marker="o",
                        markersize=4, capsize=3, linewidth=1.4, label=series)
        log2_rank_axis(ax, list(ranked["r"].unique()))
        seeds = ranked.groupby(["series", "r"])["seed"].nunique()
        n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        ax.set_xlabel("LoRA rank r (log$_2$ scale)")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split(' (')[0]} vs rank, mean ± std over {n} seed{'s' if seeds.max() > 1 else ''}\n"
                     f"{context(sweep)}")
        ax.legend(frameon=False, fontsize=7)
    return fig


def accuracy_vs_params(sweep: Sweep) -> plt.Figure | None:
    """Metric vs trainable parameters of the method (log x), one colour per method, with the Pareto front."""
    summary = summarize(sweep.runs)
    metric = sweep.metric
    points = summary.dropna(subset=[f"{metric}_mean", "params_method"])
    points = points[points["params_method"] > 0]
    if points.empty:
        return None
    label, scale = metric_axis(metric)
    maximize = metric.endswith("_acc")
    front = pareto_front(points, "params_method", f"{metric}_mean", maximize=maximize)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for i, (method, group) in enumerate(points.groupby("method", sort=True)):
            ax.errorbar(group["params_method"], group[f"{metric}_mean"] * scale,
                        yerr=group[f"{metric}_std"].fillna(0) * scale, fmt="o", markersize=5, capsize=3,
                        color=f"C{i}", label=method)
        ax.step(front["params_method"], front[f"{metric}_mean"] * scale, where="post", color="black",
                linestyle="--", linewidth=1, label="Pareto front")
        for _, row in front.iterrows():
            ax.annotate(row["setting"], (row["params_method"], row[f"{metric}_mean"] * scale), fontsize=6,
                        xytext=(4, -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("Trainable parameters of the method (log scale; task head excluded)")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split(' (')[0]} vs trainable parameters, mean ± std over seeds\n{context(sweep)}")
        ax.legend(frameon=False, loc="best")
    return fig


def cost_per_method(sweep: Sweep) -> plt.Figure | None:
    """Peak memory, training throughput and inference latency per method: mean ± std over all its runs."""
    runs = sweep.runs
    needed = ["peak_memory_bytes", "train_samples_per_s", "latency_median_ms"]
    if runs.empty or not all(c in runs for c in needed):
        return None
    by_method = runs.groupby("method", sort=True)
    methods = list(by_method.groups)
    x = np.arange(len(methods))
    kinds = sorted(set(runs.get("peak_memory_kind", pd.Series(dtype=str)).dropna()))
    memory_note = MEMORY_KINDS.get(kinds[0], kinds[0]) if len(kinds) == 1 else \
        f"memory of mixed kinds ({', '.join(kinds)}): not comparable" if kinds else ""
    panels = [("peak_memory_bytes", 1 / MIB, "Peak memory (MiB)", "Peak training memory"),
              ("train_samples_per_s", 1.0, "Throughput (samples/s)", "Training throughput"),
              ("latency_median_ms", 1.0, "Latency (ms per batch)", "Inference latency (median)")]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.2))
        for ax, (col, scale, ylabel, title) in zip(axes, panels):
            mean, std = by_method[col].mean() * scale, by_method[col].std().fillna(0) * scale
            merged = col == "latency_median_ms" and "latency_merged_median_ms" in runs \
                and runs["latency_merged_median_ms"].notna().any()
            width = 0.4 if merged else 0.7
            ax.bar(x - (width / 2 if merged else 0), mean.values, width, yerr=std.values, capsize=3,
                   color=[f"C{i}" for i in range(len(methods))], label="unmerged" if merged else None)
            if merged:
                m = by_method["latency_merged_median_ms"]
                ax.bar(x + width / 2, m.mean().values, width, yerr=m.std().fillna(0).values, capsize=3,
                       color=[f"C{i}" for i in range(len(methods))], hatch="//", alpha=0.6, label="merged")
                ax.legend(frameon=False, fontsize=7)
            ax.set_xticks(x, methods, rotation=35, ha="right")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(axis="x", visible=False)
        batch = runs.get("latency_batch_size", pd.Series(dtype=float)).dropna()
        seq = runs.get("latency_seq_len", pd.Series(dtype=float)).dropna()
        shape = f"latency at batch {int(batch.iloc[0])} × {int(seq.iloc[0])} tokens" if len(batch) and len(seq) else ""
        fig.suptitle(f"Cost per method, mean ± std over runs — {context(sweep)}\n"
                     f"{'; '.join(s for s in (memory_note, shape) if s)}", fontsize=9)
        fig.tight_layout()
    return fig


def rank_vs_params(sweep: Sweep) -> plt.Figure | None:
    """Trainable parameters of the method vs rank (both log scales), one line per method; needs two ranks or more."""
    runs = sweep.runs
    if "r" not in runs or runs["r"].notna().sum() == 0:
        return None
    ranked = runs[runs["r"].notna()].assign(r=lambda d: d["r"].astype(int))
    if ranked["r"].nunique() < 2:  # one rank: a point, not a trend
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        for i, (method, group) in enumerate(ranked.groupby("method", sort=True)):
            counts = group.groupby("r")["params_method"].first().sort_index()
            ax.plot(counts.index, counts.values, marker="osD^v"[i % 5], markersize=6 - i, label=method)
        log2_rank_axis(ax, list(ranked["r"].unique()))
        ax.set_yscale("log")
        ax.set_yticks(sorted(ranked["params_method"].unique()))  # a tick at every count drawn
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_count(v)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("LoRA rank r (log$_2$ scale)")
        ax.set_ylabel("Trainable parameters (log scale)")
        ax.set_title(f"Trainable parameters vs rank (task head excluded)\n{context(sweep)}")
        ax.legend(frameon=False)
    return fig


FIGURES = {"accuracy_vs_rank": accuracy_vs_rank, "accuracy_vs_params": accuracy_vs_params,
           "cost_per_method": cost_per_method, "rank_vs_params": rank_vs_params}


def write_figures(sweep: Sweep, out: Path) -> tuple[list[Path], list[str]]:
    """Every figure the sweep has data for; returns (files written, names of figures skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for stem, draw in FIGURES.items():
        fig = draw(sweep) if len(sweep.runs) else None
        if fig is None:
            skipped.append(stem)
        else:
            written += save(fig, out, stem)
    return written, skipped
