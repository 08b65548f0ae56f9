"""Layer 5: sweeps over configs, on a local executor or on Ray."""

from transferlab.sweep.grid import expand_grid, parse_grid
from transferlab.sweep.runner import run_sweep

__all__ = ["expand_grid", "parse_grid", "run_sweep"]
