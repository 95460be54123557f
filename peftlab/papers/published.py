"""The papers' printed figures (experiments/papers/*.csv) and the facts every reproduction report states."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pandas as pd

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


def markdown(df: pd.DataFrame) -> str:
    """A pandas frame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


READING = "## Reading"


def kept_reading(out: Path) -> str:
    """The hand-written '## Reading' section of an existing report, kept when the tables are regenerated."""
    if not out.exists() or READING not in out.read_text():
        return ""
    return "\n" + READING + out.read_text().split(READING, 1)[1]
