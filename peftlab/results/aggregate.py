"""Read every run record under a sweep directory into one table, and average over seeds.

A record that is corrupt, half-written, failed or still `running` never stops the report: it becomes a Problem that
the report lists with its error. Only records with status ok go into the tables and figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from peftlab.results.record import RECORD_NAME, RecordError, read_record

# Config keys that never distinguish one setting from another (seeds are averaged over; the rest are paths or names).
NOT_A_SETTING = ("seed", "name", "force")
NOT_A_SETTING_PREFIXES = ("logger.",)
# Fields averaged over seeds in the summary (mean and std); everything else is the same for all seeds of a setting.
MEASURED_PREFIXES = ("val_", "test_", "train_loss", "peak_memory_bytes", "train_samples_per_s", "train_tokens_per_s",
                     "step_time_", "latency_", "wall_time_s", "fit_time_s")


@dataclass
class Problem:
    """A run that produced no usable result: failed, diverged, interrupted, still running, or an unreadable record."""

    run_dir: str
    status: str
    error: str
    mtime: float


@dataclass
class Sweep:
    """The ok runs (one row each) and the problems of one sweep directory."""

    root: Path
    runs: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The headline metric: test accuracy for classification, else test perplexity, else test loss."""
        for name in ("test_acc", "test_ppl", "test_loss"):
            if name in self.runs and self.runs[name].notna().any():
                return name
        return "test_acc"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become JSON text so they can be grouped on."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: json.dumps(obj) if isinstance(obj, list) else obj}


def alpha_label(alpha: Any, rule: Any, r: Any) -> str | None:
    """`α=2r` when the run's alpha came from the sweep's alpha_rule (checked against r), else `α=<alpha>`."""
    if alpha is None or pd.isna(alpha):
        return None
    if rule is not None and not pd.isna(rule) and r is not None and not pd.isna(r):
        from peftlab.cli.sweep import lora_alpha

        try:
            if float(lora_alpha(rule, int(r))) == float(alpha):
                return f"α={rule}"
        except ValueError:
            pass
    return f"α={alpha:g}" if isinstance(alpha, (int, float)) else f"α={alpha}"


def run_row(record: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One table row from one ok record: identifiers, parameter counts, metrics, costs and the flattened config."""
    method = record.get("method") or {}
    config = record.get("config") or {}
    row: dict[str, Any] = {
        "run": run_dir, "method": method_label(method), "r": method.get("r"), "alpha": method.get("alpha"),
        "alpha_label": alpha_label(method.get("alpha"), config.get("alpha_rule"), method.get("r")),
        "seed": record.get("seed"), "model": record.get("model"), "data": record.get("data"),
        "task": record.get("task"), "device": (record.get("environment") or {}).get("device"),
    }
    row |= record.get("params") or {}
    row |= record.get("metrics") or {}
    row |= record.get("cost") or {}
    row |= {f"cfg.{k}": v for k, v in flatten(config).items()}
    return row


def read_sweep_records(root: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Every record under root: ok ones as rows, the others (and unreadable files) as problems."""
    rows, problems = [], []
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        run_dir = str(path.parent.relative_to(root)) if path.parent != Path(root) else "."
        mtime = path.stat().st_mtime
        try:
            record = read_record(path)
        except RecordError as err:
            problems.append(Problem(run_dir, "corrupt", str(err), mtime))
            continue
        if record["status"] == "ok":
            rows.append(run_row(record, run_dir))
        else:
            error = record.get("error") or ("no result yet: the run is going on or its process died"
                                            if record["status"] == "running" else "no error recorded")
            problems.append(Problem(run_dir, str(record["status"]), str(error), mtime))
    return rows, problems


def method_label(method: dict[str, Any]) -> str | None:
    """The method as its config file names it: rslora is LoRA with use_rslora, adapters carry their placement."""
    name = method.get("name")
    if name == "lora" and method.get("use_rslora"):
        return "rslora"
    if name == "adapter" and method.get("placement"):
        return f"adapter-{method['placement']}"
    return name


# Config keys a method label already says (rslora, adapter-pfeiffer) or that the alpha label shows.
IN_LABELS = ("method.name", "method.use_rslora", "method.placement", "alpha_rule", "method.alpha")


def setting_labels(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(setting, series) per run. setting: the method plus every config value that varies among that method's runs
    (seeds excluded), e.g. `lora r=8 α=2r`. series: the same without the rank, the line a run belongs to in a plot
    over r."""
    cfg = [c for c in runs.columns if c.startswith("cfg.") and c[4:] not in IN_LABELS and c[4:] not in NOT_A_SETTING
           and not c[4:].startswith(NOT_A_SETTING_PREFIXES)]
    varying: dict[str, list[str]] = {}
    for method, group in runs.groupby("method", dropna=False):
        keys = [c for c in cfg if group[c].dropna().astype(str).nunique() > 1]
        varying[method] = sorted(keys, key=lambda c: not c.startswith("cfg.method."))  # method's own keys first
        if group["alpha_label"].dropna().nunique() > 1:
            varying[method].append("alpha_label")

    def parts(row: pd.Series) -> list[tuple[str, str]]:
        out = []
        for col in varying[row["method"]]:
            value = row[col]
            if pd.isna(value):
                continue
            if col == "alpha_label":
                out.append((col, str(value)))
            else:
                key = col[4:].removeprefix("method.").removeprefix("optim.")
                out.append((col, f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"))
        return out

    setting = runs.apply(lambda row: " ".join([str(row["method"]), *(p for _, p in parts(row))]), axis=1)
    series = runs.apply(lambda row: " ".join([str(row["method"]), *(p for c, p in parts(row) if c != "cfg.method.r")]),
                        axis=1)
    return setting, series


def load_sweep(root: Path) -> Sweep:
    """All run records under root (a sweep directory, or one run directory)."""
    root = Path(root)
    rows, problems = read_sweep_records(root)
    runs = pd.DataFrame(rows)
    if len(runs):
        setting, series = setting_labels(runs)
        runs.insert(1, "setting", setting)
        runs.insert(2, "series", series)
    return Sweep(root=root, runs=runs, problems=problems)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: measured fields as <field>_mean and <field>_std over seeds, the rest taken as is."""
    if runs.empty:
        return pd.DataFrame()
    measured = [c for c in runs.columns if c.startswith(MEASURED_PREFIXES) and pd.api.types.is_numeric_dtype(runs[c])]
    fixed = [c for c in runs.columns if c not in measured and not c.startswith("cfg.")
             and c not in ("run", "seed", "setting")]
    groups = runs.groupby("setting", sort=False, dropna=False)
    out = groups[fixed].first()
    out["n_seeds"] = groups["run"].count()
    out["seeds"] = groups["seed"].apply(lambda s: ",".join(str(v) for v in sorted(s.dropna())))
    means = groups[measured].mean().add_suffix("_mean")
    stds = groups[measured].std(ddof=1).add_suffix("_std")
    out = pd.concat([out, means, stds], axis=1).reset_index()
    return out.sort_values(["method", "r", "alpha"], na_position="first", kind="stable").reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str, y: str, maximize: bool = True) -> pd.DataFrame:
    """Settings that no other setting beats with fewer (or equal) trainable parameters and a better metric."""
    ordered = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, not maximize])
    front, best = [], None
    for idx, row in ordered.iterrows():
        value = row[y]
        if best is None or (value > best if maximize else value < best):
            front.append(idx)
            best = value
    return ordered.loc[front]
