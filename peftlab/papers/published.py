"""The papers' printed figures (experiments/papers/*.csv), and what the reproductions share: running their sweeps
and the facts every report states (machine, date, setup)."""

from __future__ import annotations

from collections.abc import Iterator

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from peftlab.results.record import RecordError, read_record
from peftlab.results.tables import markdown  # noqa: F401 (the studies' tables look like the sweep reports')

from peftlab import ROOT

PAPERS_DIR = ROOT / "experiments" / "papers"


def table(name: str) -> pd.DataFrame:
    """A published table by file stem, e.g. table('lora_table6_rank'); printed strings kept as printed."""
    return pd.read_csv(PAPERS_DIR / f"{name}.csv", dtype=str, keep_default_na=False)


def millions(printed: str) -> float:
    """'0.35M' -> 0.35 (the papers' unit)."""
    return float(printed.rstrip("M"))


def machine() -> str:
    """CPU model (as lscpu names it) and core count, so a timing is never quoted without its machine."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def now() -> str:
    """UTC date and time for report headers."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def run_sweeps(commands: list[list[str]], passes: int = 2) -> float:
    """Run peftlab-train sweeps one after the other (never in parallel: the CPU is shared); returns wall seconds.

    The second pass launches the same sweeps again: finished runs are skipped, so it only redoes runs that failed or
    were killed in the first.
    """
    start = time.perf_counter()
    for _ in range(passes):
        for args in commands:
            print("peftlab-train " + " ".join(args), flush=True)
            subprocess.run([sys.executable, "-m", "peftlab.cli.train", *args], cwd=ROOT, check=False)
    return time.perf_counter() - start


def run_setup(sweep_dir: Path) -> dict[str, Any]:
    """Data, optimiser and trainer settings of the first finished run under sweep_dir (the same for every run of a
    study), so a report states what was run rather than what a config file says today."""
    from peftlab.results.record import RecordError, read_record

    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        try:
            rec = read_record(path)
        except RecordError:
            continue
        if rec.get("status") == "ok":
            c = rec.get("config") or {}
            return {"model": (c.get("model") or {}).get("source"), **(c.get("data") or {}),
                    "lr": (c.get("optim") or {}).get("lr"), "epochs": (c.get("trainer") or {}).get("max_epochs")}
    return {}


def majority_baseline(setup: dict[str, Any]) -> float:
    """Test accuracy (%) of always predicting the training split's most frequent label: what 'learned nothing' scores."""
    from peftlab.data.datamodule import DataConfig, TextDataModule

    keys = DataConfig.__dataclass_fields__
    dm = TextDataModule(DataConfig(**{k: v for k, v in setup.items() if k in keys}), tokenizer=None)
    table = dm._classification_table()
    parts = dm._split(len(table))
    majority = table.iloc[parts["train"]]["label"].mode()[0]
    return 100 * float((table.iloc[parts["test"]]["label"] == majority).mean())


def setup_line(setup: dict[str, Any]) -> str:
    """One sentence naming the data sizes, sequence length and epochs, the test set's binomial standard error and the
    majority-class baseline."""
    if not setup:
        return "no finished run yet"
    se = 100 * (0.7 * 0.3 / setup["test_size"]) ** 0.5
    return (f"{setup['model']} on {setup['source']}: {setup['train_size']} training examples, {setup['epochs']} epoch(s), "
            f"batch {setup['batch_size']}, max length {setup['max_length']}; validation {setup['val_size']}, test "
            f"{setup['test_size']} examples (at 70% accuracy one binomial standard error is {se:.1f} points; always "
            f"predicting the training set's majority label scores {majority_baseline(setup):.1f})")


def run_accounting(runs: pd.DataFrame, sweep_dir: Path, wall_s: float | None) -> list[str]:
    """The report lines every study starts with: machine and date, how many runs finished, and their wall time."""
    failed = runs[runs["status"] != "ok"]
    run_wall = runs["wall_time_s"].dropna().astype(float).sum()
    return [
        f"- Machine: {machine()}; written {now()}.",
        f"- Runs: {len(runs)} records under `{sweep_dir}`, {len(runs) - len(failed)} ok"
        + (f", {len(failed)} not ok ({', '.join(sorted(set(failed['status'])))})" if len(failed) else "") + ".",
        f"- Wall time: sum of the runs' wall_time_s {run_wall / 60:.1f} min"
        + (f"; the sweeps, end to end, {wall_s / 60:.1f} min." if wall_s else "."),
    ]


READING = "## Reading"


def kept_reading(out: Path) -> str:
    """The hand-written '## Reading' section of an existing report, kept when the tables are regenerated."""
    if not out.exists() or READING not in out.read_text():
        return ""
    return "\n" + READING + out.read_text().split(READING, 1)[1]


def write_study_report(out: Path, lines: list[str]) -> str:
    """Write a study report (its generated lines, then the kept hand-written reading); returns the text."""
    text = "\n".join(lines) + kept_reading(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def records(sweep_dir: Path) -> Iterator[dict[str, Any]]:
    """Every readable run record directly under sweep_dir (corrupt ones are skipped; the sweep report lists them)."""
    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        try:
            yield {**read_record(path), "run_dir": str(path.parent)}
        except RecordError:
            continue
