"""Switching between several LoRA adapters of one base model, as the LoRA paper's deployment story describes.

Two ways: `merged` keeps the active adapter folded into the base weights (no inference overhead) and switches by
unmerging it and merging the next one in place; `unmerged` keeps the LoRA branch separate and switches by copying the
next adapter's A and B (and task head) into it. Either way only the adapters' small tensors move, never the backbone.
`switch_time` is what the benchmarks time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from peftlab.adapters import AdapterError, base_fingerprint, load_adapter, read_adapter_config, read_tensors
from peftlab.errors import check_choice
from peftlab.measure.timing import Timing, time_calls
from peftlab.methods import Method, build_method
from peftlab.methods.lora import lora_layers

MODES = ("merged", "unmerged")


class LoraSwitch:
    """One model with LoRA applied and several same-shaped LoRA adapters (plus their task heads), one active."""

    def __init__(self, model: nn.Module, method: Method, mode: str = "merged"):
        check_choice("switch mode", mode, MODES)
        if method.name != "lora" or not lora_layers(model):
            raise AdapterError("switch method", method.name, "lora, applied to the model")
        self.model, self.method, self.mode = model, method, mode
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}
        self.scalings: dict[str, float] = {}
        self.active: str | None = None

    def add(self, name: str, tensors: dict[str, torch.Tensor], scaling: float) -> None:
        """Register an adapter's tensors; they must have exactly the names and shapes of the applied LoRA."""
        current = self.method.export_state(self.model)
        if set(tensors) != set(current) or any(tuple(t.shape) != tuple(current[n].shape) for n, t in tensors.items()):
            raise AdapterError(f"adapter {name}", "other tensor names or shapes",
                               "the same target modules, rank and task head as the adapters already loaded")
        self.adapters[name] = {n: t.detach().clone() for n, t in tensors.items()}
        self.scalings[name] = scaling

    @torch.no_grad()
    def switch(self, name: str) -> None:
        """Make adapter `name` the active one."""
        if name not in self.adapters:
            raise AdapterError("adapter", name, ", ".join(self.adapters))
        merged = self.mode == "merged"
        if merged and self.active is not None:
            self.method.unmerge(self.model)
        params = dict(self.model.named_parameters())
        for n, t in self.adapters[name].items():
            params[n].copy_(t)
        for layer in lora_layers(self.model):
            layer.scaling = self.scalings[name]
        if merged:
            self.method.merge(self.model)
        self.active = name


def load_switch(model: nn.Module, paths: dict[str, Path], mode: str = "merged") -> LoraSwitch:
    """A LoraSwitch over peftlab adapter files (each checked like load_adapter) on a fresh base model; the first is
    active."""
    if not paths:
        raise AdapterError("adapters", "none", "one or more LoRA adapter files")
    fingerprint = base_fingerprint(model)
    first, *_ = paths
    method = load_adapter(paths[first], model)
    switch = LoraSwitch(model, method, mode)
    for name, path in paths.items():
        meta = read_adapter_config(path)
        if meta["base_model"]["fingerprint"] != fingerprint:
            raise AdapterError(f"adapter {name} base model", meta["base_model"]["fingerprint"],
                               f"the base model of the others ({fingerprint})")
        switch.add(name, read_tensors(path, meta), build_method(meta["method"]).config.scaling)
    switch.active = None  # load_adapter left the first adapter unmerged in place
    switch.switch(first)
    return switch


def switch_time(switch: LoraSwitch, names: list[str], repeats: int = 20, warmup: int = 2) -> Timing:
    """Time one switch, cycling through `names` (at least two): median and p90 over `repeats` switches."""
    if len(names) < 2:
        raise AdapterError("adapters", names, "two or more adapter names to switch between")
    order = iter(range(10**9))

    def one() -> None:
        switch.switch(names[next(order) % len(names)])

    device = next(switch.model.parameters()).device
    return time_calls(one, repeats=repeats, warmup=warmup, device=device)
