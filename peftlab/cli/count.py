"""peftlab-count: exact parameter counts of a method on any architecture, on the meta device (no weights, no data).

    peftlab-count model=gpt2-medium method=lora method.r=4
"""

from __future__ import annotations

import os
import sys

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from peftlab import ROOT
from peftlab.backbones.families import family_for
from peftlab.cli import check_group_choices
from peftlab.cli.sweep import register_resolvers
from peftlab.backbones.loader import ModelConfig, load_backbone
from peftlab.errors import ConfigError
from peftlab.measure import ParamCounts, count_parameters
from peftlab.methods import Method, build_method
from peftlab.methods.base import head_names


def count(model_cfg: ModelConfig, method: Method, task: str = "classification", num_labels: int = 2) -> ParamCounts:
    """Apply method to the architecture on the meta device and count."""
    model = load_backbone(model_cfg, task, num_labels=num_labels, device="meta")
    family = family_for(model)
    method.apply(model, family)
    return count_parameters(model, head_names(model, family))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: Hydra-style overrides in, one table out."""
    overrides = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("PEFTLAB_ROOT", str(ROOT))
    try:
        check_group_choices(overrides)
        register_resolvers()
        with initialize_config_dir(str(ROOT / "conf"), version_base=None):
            cfg = compose("config", overrides=overrides)
        c = OmegaConf.to_container(cfg, resolve=False)  # the rest may refer to Hydra's run-time values
        model_cfg = ModelConfig(**{**c["model"], "pretrained": False})
        method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
        counts = count(model_cfg, method, task=c["data"]["task"])
    except ConfigError as err:
        print(f"peftlab: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # Hydra override errors and the like: one line, non-zero
        print(f"peftlab: error: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    rows = [("model", model_cfg.source), ("method", ", ".join(f"{k}={v}" for k, v in method.hparams().items())),
            ("method-trainable", f"{counts.method:,}"), ("task head", f"{counts.head:,}"),
            ("total (after method)", f"{counts.total:,}"), ("trainable %", f"{counts.trainable_pct:.4f}"),
            ("formula", method.formula)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
