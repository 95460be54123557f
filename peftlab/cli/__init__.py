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
