"""One error type for bad input, so every entry point can print it as one line and exit non-zero."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A user-facing input error: names the field, the bad value and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: got {value!r}; allowed: {allowed}")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return value if it is one of choices, else raise ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(field, value, ", ".join(map(str, choices)))
    return value


def check_positive(field: str, value: Any, *, allow_zero: bool = False) -> Any:
    """Return value if it is a number > 0 (>= 0 with allow_zero)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(field, value, "a number >= 0" if allow_zero else "a number > 0")
    return value


def check_int(field: str, value: Any, *, minimum: int = 1) -> int:
    """Return value if it is an integer >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(field, value, f"an integer >= {minimum}")
    return value


def check_fraction(field: str, value: Any, *, closed: bool = False) -> float:
    """Return value if 0 <= value < 1 (<= 1 with closed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (value <= 1 if closed else value < 1)
    if not ok:
        raise ConfigError(field, value, "a number in [0, 1]" if closed else "a number in [0, 1)")
    return float(value)
