"""Grokking (Power et al. 2022): memorization first, generalization much later.

API: ``transferlab.studies.grokking.run(cfg, store, seeds=K)``.
"""

from transferlab.studies.grokking.config import PRESETS, SWEEP_PLANS, GrokConfig
from transferlab.studies.grokking.run import run, run_members

__all__ = ["PRESETS", "SWEEP_PLANS", "GrokConfig", "run", "run_members"]
