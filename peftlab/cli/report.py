"""peftlab-report <sweep dir>: tables and figures of every run record under a sweep directory.

Failed, unfinished and corrupt runs are listed (with their errors) and left out of the tables; they never stop the
report. Exit status: 0 when the report was written, 2 for a directory without run records.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftlab.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(prog="peftlab-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory such as multirun/rank_sweep")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <sweep dir>/report)")
    args = parser.parse_args(argv)

    from peftlab.results.aggregate import load_sweep
    from peftlab.results.report import build_report, check_sweep_dir

    try:
        sweep = load_sweep(check_sweep_dir(args.sweep_dir))
    except ConfigError as err:
        print(f"peftlab-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    paths, skipped = build_report(sweep, args.out)
    print(next(p for p in paths if p.suffix == ".md").read_text())
    print(f"{len(sweep.runs)} finished run(s), {len(sweep.problems)} not finished, in {sweep.root}")
    for p in sweep.problems:
        first = p.error.splitlines()[0] if p.error else ""
        print(f"  [{p.status}] {p.run_dir}: {first}")
    if skipped:
        print(f"figures skipped (no data for them in this sweep): {', '.join(skipped)}")
    print("wrote:")
    for path in paths:
        print(f"  {path}")


if __name__ == "__main__":
    main()
