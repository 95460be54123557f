"""Run every benchmark and print their tables: `python -m benchmarks.run_all` (full CPU suite here, the GPU suite
where CUDA is available), `--quick` for the tiny smoke suite the tests run, `--device cuda|cpu` to choose."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import inference_latency, lora_vs_peft, trainer_overhead
from benchmarks.common import RESULTS

BENCHMARKS = {"lora_vs_peft": lora_vs_peft.main, "trainer_overhead": trainer_overhead.main,
              "inference_latency": inference_latency.main}


def main(quick: bool = False, device: str | None = None, out: Path | None = None,
         only: list[str] | None = None) -> str:
    """Run the chosen benchmarks (all by default); results go to out (benchmarks/results/<suite> by default)."""
    from benchmarks.common import suite_for

    out = Path(out) if out else RESULTS / suite_for(quick, device).name
    for name in only or BENCHMARKS:
        start = time.perf_counter()
        BENCHMARKS[name](quick, device, out)
        print(f"[{name}] {time.perf_counter() - start:.0f} s -> {out / name}.json", flush=True)
    # the summary holds every table in the folder, so rerunning one benchmark keeps the others' latest figures
    summary = "\n".join((out / f"{name}.md").read_text() for name in BENCHMARKS if (out / f"{name}.md").exists())
    (out / "summary.md").write_text(summary)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models, a few repeats: checks the scripts run")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<suite>)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    print(main(args.quick, args.device, args.out, args.only))
