"""peftlab-adapter: take adapters to and from HF peft, and switch between LoRA adapters of one base model.

    peftlab-adapter export outputs/default/adapter.safetensors exported/        # -> peft's adapter directory
    peftlab-adapter import peft_dir/ adapter.safetensors --model minilm --num-layers 2 --task classification
    peftlab-adapter switch a/adapter.safetensors b/adapter.safetensors --mode merged --repeats 20

The base model is rebuilt from the adapter's JSON config (model, task, labels, seed) and checked against its
fingerprint. Bad input is one line on stderr and exit 2 (PEFTLAB_FULL_ERROR=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

from peftlab.errors import ConfigError


def base_model(meta: dict) -> nn.Module:
    """The base model an adapter was trained on, rebuilt from its JSON config (random-init weights from its seed)."""
    from peftlab.backbones.loader import ModelConfig, load_backbone

    base = meta["base_model"]
    if not base.get("config"):
        raise ConfigError("adapter config base_model.config", None, "the model config save_adapter records")
    torch.manual_seed(base.get("seed") or 0)
    return load_backbone(ModelConfig(**base["config"]), base["task"], num_labels=base.get("num_labels") or 2).eval()


def export_cmd(args: argparse.Namespace) -> str:
    from peftlab.adapters import load_adapter, read_adapter_config
    from peftlab.interop.peft_format import export_adapter

    path = Path(args.adapter)
    if path.is_dir():
        path = path / "adapter.safetensors"
    meta = read_adapter_config(path)
    model = base_model(meta)
    method = load_adapter(path, model)
    out = export_adapter(model, method, Path(args.out), meta["base_model"]["task"], meta["base_model"]["config"]["source"])
    return f"exported {meta['method']['name']} adapter {path} -> {out} (peft format)"


def import_cmd(args: argparse.Namespace) -> str:
    from peftlab.adapters import base_fingerprint, save_adapter
    from peftlab.backbones.loader import ModelConfig, load_backbone
    from peftlab.interop.peft_format import import_lora

    cfg = ModelConfig(name=args.model, source=args.model, pretrained=not args.random_init, num_layers=args.num_layers)
    torch.manual_seed(args.seed)
    model = load_backbone(cfg, args.task, num_labels=args.num_labels).eval()
    fingerprint = base_fingerprint(model)
    method = import_lora(Path(args.peft_dir), model)
    nbytes = save_adapter(Path(args.out), method, model, fingerprint, cfg, args.task, args.num_labels, args.seed)
    return f"imported peft LoRA {args.peft_dir} -> {args.out} ({nbytes} bytes, r={method.config.r})"


def switch_cmd(args: argparse.Namespace) -> str:
    from peftlab.adapters import read_adapter_config
    from peftlab.switching import load_switch, switch_time

    paths = {f"{i}:{Path(p).parent.name or p}": Path(p) for i, p in enumerate(args.adapters)}
    model = base_model(read_adapter_config(next(iter(paths.values()))))
    switch = load_switch(model, paths, mode=args.mode)
    t = switch_time(switch, list(paths), repeats=args.repeats)
    return (f"switch ({args.mode}) between {len(paths)} LoRA adapters: median {t.median_ms:.3f} ms, "
            f"p90 {t.p90_ms:.3f} ms over {t.n} switches")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftlab-adapter", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="a peftlab LoRA adapter -> HF peft's adapter directory")
    e.add_argument("adapter", help="adapter.safetensors (with its .json beside it) or a run directory")
    e.add_argument("out", help="directory for adapter_config.json + adapter_model.safetensors")
    e.set_defaults(fn=export_cmd)
    i = sub.add_parser("import", help="an HF peft LoRA adapter directory -> a peftlab adapter file")
    i.add_argument("peft_dir")
    i.add_argument("out", help="the .safetensors file to write (its .json goes beside it)")
    i.add_argument("--model", required=True, help="the base model's source (minilm, a path, an architecture)")
    i.add_argument("--task", default="classification", choices=("classification", "causal_lm"))
    i.add_argument("--num-labels", type=int, default=2)
    i.add_argument("--num-layers", type=int, default=None)
    i.add_argument("--random-init", action="store_true", help="a config-only base (random weights from --seed)")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(fn=import_cmd)
    s = sub.add_parser("switch", help="time switching between LoRA adapters of one base model")
    s.add_argument("adapters", nargs="+", help="two or more adapter.safetensors files")
    s.add_argument("--mode", default="merged", choices=("merged", "unmerged"))
    s.add_argument("--repeats", type=int, default=20)
    s.set_defaults(fn=switch_cmd)
    return p


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parser().parse_args(argv)
    try:
        print(args.fn(args))
    except ConfigError as err:
        if os.environ.get("PEFTLAB_FULL_ERROR") == "1":
            raise
        print(f"peftlab: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
