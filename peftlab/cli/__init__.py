"""Console entry points: peftlab-train, peftlab-count, peftlab-report, and their shared argument checks."""

from __future__ import annotations

from peftlab import ROOT
from peftlab.errors import ConfigError

GROUP_DIRS = {"model": ROOT / "conf" / "model", "data": ROOT / "conf" / "data", "method": ROOT / "conf" / "method",
              "trainer": ROOT / "conf" / "trainer", "logger": ROOT / "conf" / "logger", "experiments": ROOT / "experiments"}


def check_group_choices(overrides: list[str]) -> None:
    """An override like `method=lorax` that names no config file is a one-line error listing the group's options.

    Checked before Hydra composes, whose own message spans several lines. Sweep values (a,b,c) are checked one by one.
    """
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUP_DIRS or value.startswith(("choice(", "range(", "glob(")) or value in ("null", ""):
            continue
        options = sorted(p.stem for p in GROUP_DIRS[key].glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                raise ConfigError(key, choice, ", ".join(options))


_ABSENT = object()


def check_override_keys(overrides: list[str]) -> None:
    """`method.rank=4` for a key the composed config lacks is a one-line error suggesting `+method.rank=4`, instead
    of Hydra's several-line message. Composed with the first choice of each group override (sweeps included)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    def is_group(key: str) -> bool:
        return key in GROUP_DIRS or (ROOT / "conf" / key).is_dir()

    plain = [a.partition("=") for a in overrides if "=" in a and not a.startswith(("+", "~", "-", "hydra."))]
    keys = [(k, v) for k, _, v in plain if not is_group(k)]
    if not keys:
        return
    groups = [f"{k}={v.split(',')[0]}" for k, _, v in plain if is_group(k)]
    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base=None):
            cfg = compose("config", overrides=groups)
    except Exception:  # a config that does not compose: Hydra reports it when it starts
        return
    for key, value in keys:
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(key, value, f"a key of the composed config (add a new key with +{key}={value})")
