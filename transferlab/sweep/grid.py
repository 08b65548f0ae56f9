"""`--grid key=v1,v2,...` -> the cartesian product of overrides."""

from __future__ import annotations

import itertools
import math
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


# --------------------------------------------------------------------------- random search
KINDS = ("uniform", "loguniform", "int", "choice")
INT_BOUND = 2**62  # int:LO:HI draws with numpy int64: HI + 1 must stay in range


def parse_sample(items: list[str]) -> dict[str, tuple[str, list[Any]]]:
    """``--sample key=KIND:ARGS`` -> {key: (kind, args)}: uniform:LO:HI, loguniform:LO:HI, int:LO:HI (both
    ends included) or choice:V1,V2,..."""
    space: dict[str, tuple[str, list[Any]]] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        kind, sep2, rest = spec.partition(":")
        fix = "write it as key=loguniform:1e-4:1e-2, key=uniform:0.1:1, key=int:1:8 or key=choice:a,b"
        if not sep or not sep2 or kind not in KINDS:
            raise ConfigError(f"--sample '{item}' is not KEY=KIND:ARGS with KIND one of {', '.join(KINDS)}",
                              where="--sample", fix=fix)
        key = key.strip()
        if key in space:
            raise ConfigError(f"--sample names '{key}' twice", where="--sample", fix="give each key once")
        if kind == "choice":
            args = [parse_override(f"{key}={v}")[1] for v in rest.split(",") if v.strip()]
            if not args:
                raise ConfigError(f"--sample '{item}' lists no choices", where="--sample", fix=fix)
        else:
            parts = rest.split(":")
            try:
                lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
            except ValueError:
                lo = hi = None
            if (lo is None or hi is None or not math.isfinite(hi - lo) or not lo < hi  # NaN, inf, overflow
                    or (kind == "loguniform" and lo <= 0)):
                raise ConfigError(f"--sample '{item}' needs finite LO:HI with LO < HI"
                                  + (" and LO > 0" if kind == "loguniform" else ""), where="--sample", fix=fix)
            if kind == "int" and not (lo.is_integer() and hi.is_integer() and -INT_BOUND <= lo and hi < INT_BOUND):
                raise ConfigError(f"--sample '{item}' needs whole-number bounds within ±2**62 for int:LO:HI",
                                  where="--sample", fix="e.g. key=int:1:8 (both ends included)")
            args = [int(lo), int(hi)] if kind == "int" else [lo, hi]
        space[key] = (kind, args)
    return space


def draw_samples(space: dict[str, tuple[str, list[Any]]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` points drawn independently from ``space`` with a seeded generator (the same sweep each time)."""
    import numpy as np

    if n < 1:
        raise ConfigError(f"--trials must be >= 1, got {n}", where="--trials", fix="e.g. --trials 16")
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        pt: dict[str, Any] = {}
        for key, (kind, args) in space.items():
            if kind == "uniform":
                pt[key] = float(rng.uniform(args[0], args[1]))
            elif kind == "loguniform":
                pt[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif kind == "int":
                pt[key] = int(rng.integers(args[0], args[1] + 1))
            else:
                pt[key] = args[int(rng.integers(len(args)))]
        points.append(pt)
    return points
