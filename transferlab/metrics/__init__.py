"""Layer 2: metrics (accuracy, AUROC, calibration, agreement, misfit, PGR)."""

from transferlab.metrics.classification import (
    MetricError,
    accuracy,
    agreement,
    auroc,
    ece,
    misfit,
    squared_error,
)
from transferlab.metrics.w2s import PGR, Interval, check_gap, mean_ci, pgr, pgr_point

__all__ = [
    "PGR",
    "Interval",
    "MetricError",
    "accuracy",
    "agreement",
    "auroc",
    "check_gap",
    "ece",
    "mean_ci",
    "misfit",
    "pgr",
    "pgr_point",
    "squared_error",
]
