"""The report of a sweep directory: tables and figures in <sweep dir>/report (used by peftlab-report and by the
callback that ends every multirun)."""

from __future__ import annotations

from pathlib import Path

from peftlab.errors import ConfigError
from peftlab.results.aggregate import Sweep, load_sweep
from peftlab.results.plots import write_figures
from peftlab.results.tables import write_tables


def write_report(sweep_dir: Path, out: Path | None = None) -> list[Path]:
    """Write results.csv, summary.csv, results.md, results.tex and the figures (PNG + PDF); returns their paths."""
    return build_report(load_sweep(check_sweep_dir(sweep_dir)), out)[0]


def check_sweep_dir(sweep_dir: Path) -> Path:
    """A directory holding at least one metrics.json, else a one-line error."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or next(sweep_dir.rglob("metrics.json"), None) is None:
        raise ConfigError("sweep_dir", str(sweep_dir), "a directory with run records (<run dir>/metrics.json)")
    return sweep_dir


def build_report(sweep: Sweep, out: Path | None = None) -> tuple[list[Path], list[str]]:
    """Tables and figures of a loaded sweep; returns (files written, figures skipped for lack of data)."""
    out = Path(out) if out else sweep.root / "report"
    tables = write_tables(sweep, out)
    figures, skipped = write_figures(sweep, out)
    return tables + figures, skipped
