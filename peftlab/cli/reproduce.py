"""peftlab-reproduce: one command per published table, ours printed beside the paper's.

    peftlab-reproduce lora-table2 | lora-table3 | lora-table4     parameter columns (meta device, seconds)
    peftlab-reproduce lora-table1 [--settings 1x128] [--trials N]  inference latency, GPT-2 medium, random weights
    peftlab-reproduce rank-study [--report-only] [overrides...]    LoRA rank sweep + report (Tables 5/6 analogues)
    peftlab-reproduce adapters-vs-full [--report-only]            Houlsby's headline on MiniLM + Rotten Tomatoes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftlab import ROOT
from peftlab.errors import ConfigError

REPORTS = ROOT / "experiments" / "reports"


def _params(args: argparse.Namespace) -> None:
    from peftlab.papers import params

    print(params.render(args.table_id, params.reproduce(args.table_id)))


def _latency(args: argparse.Namespace) -> None:
    import torch

    from peftlab.errors import check_int
    from peftlab.papers import latency
    from peftlab.papers.published import machine

    check_int("--trials", args.trials)
    check_int("--warmup", args.warmup, minimum=0)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", device, "cpu (no CUDA device is visible)")
    # On a CPU the 32x512 and 16x256 settings take minutes per forward pass: only 1x128 unless asked for.
    settings = latency.parse_settings(args.settings or ("32x512,16x256,1x128" if device == "cuda" else "1x128"))
    rows = latency.measure(settings, args.trials, args.warmup, device, num_layers=args.layers)
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({machine()}, {torch.get_num_threads()} threads)"
    print(latency.render(rows, name, args.layers))


def _study(args: argparse.Namespace) -> None:
    """Run a study's sweeps (finished runs are skipped), then write its markdown report."""
    import importlib

    from peftlab.papers.published import run_sweeps

    module = importlib.import_module(f"peftlab.papers.{args.module}")
    sweep_dir = Path(args.sweep_dir or module.SWEEP_DIR)
    overrides = list(args.overrides) + ([f"hydra.sweep.dir={sweep_dir}"] if args.sweep_dir else [])
    wall = None if args.report_only else run_sweeps(module.sweep_commands(overrides))
    out = Path(args.out or REPORTS / f"{module.EXPERIMENT}.md")
    print(module.report(sweep_dir, out, wall))
    print(f"\nreport: {out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftlab-reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="table", required=True)
    for table_id, what in (("2", "RoBERTa on GLUE"), ("3", "GPT-2 on E2E"), ("4", "GPT-3 175B")):
        t = sub.add_parser(f"lora-table{table_id}", help=f"parameter column of LoRA Table {table_id} ({what}), meta device")
        t.set_defaults(func=_params, table_id=table_id)
    lt = sub.add_parser("lora-table1", help="inference latency of GPT-2 medium, FT/LoRA vs adapters (LoRA Table 1)")
    lt.add_argument("--settings", help="BATCHxSEQ list (default: all three on a GPU, 1x128 on a CPU)")
    lt.add_argument("--trials", type=int, default=100, help="timed forward passes per model (default 100)")
    lt.add_argument("--warmup", type=int, default=10, help="untimed passes per model first (default 10)")
    lt.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    lt.add_argument("--layers", type=int, help="keep only the first N blocks (smoke tests)")
    lt.set_defaults(func=_latency)
    for name, module, what in (("rank-study", "rank_study", "LoRA weight set x rank sweep (LoRA Tables 5/6 analogues)"),
                               ("adapters-vs-full", "houlsby", "adapters vs full fine-tuning (Houlsby et al. 2019)")):
        st = sub.add_parser(name, help=f"{what} on MiniLM + Rotten Tomatoes, and its report")
        st.add_argument("--report-only", action="store_true", help="only aggregate finished runs")
        st.add_argument("--sweep-dir", help=f"where the runs are (default multirun/{module})")
        st.add_argument("--out", help="report path (default experiments/reports/<experiment>.md)")
        st.add_argument("overrides", nargs="*", help="extra peftlab-train overrides for every run")
        st.set_defaults(func=_study, module=module)
    return p


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as err:
        print(f"peftlab: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
