"""`--grid key=v1,v2,...` -> the cartesian product of overrides."""

from __future__ import annotations

import itertools
from typing import Any

from transferlab.core.config import parse_override
from transferlab.core.errors import ConfigError


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid '{item}' has no '='", fix="write it as key=v1,v2,... e.g. lr=1e-3,3e-3")
        key, raw = item.split("=", 1)
        values = [parse_override(f"{key}={v}")[1] for v in raw.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--grid '{item}' lists no values", fix="e.g. --grid weight_decay=0.3,1,3")
        if key in grid:
            raise ConfigError(f"--grid names '{key}' twice", fix="give each key once with all its values")
        grid[key.strip()] = values
    return grid


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
