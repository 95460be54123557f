"""Method plugins and their registry. Adding a method is one file in this folder plus one config in conf/method/."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from peftlab.errors import ConfigError
from peftlab.methods.base import Method

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method selectable by its name (method=<name>)."""
    if cls.name in REGISTRY:
        raise ValueError(f"method '{cls.name}' is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def build_method(values: Mapping[str, Any]) -> Method:
    """A method from its config mapping (the `method` group): name plus hyper-parameters, validated."""
    values = dict(values)
    name = values.pop("name", None)
    if name not in REGISTRY:
        raise ConfigError("method.name", name, ", ".join(sorted(REGISTRY)))
    return REGISTRY[name].from_dict(values)


for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
