"""Configs of the fits on a user's runs: ``transferlab fit chinchilla`` and ``transferlab fit transfer``.

(The zoo and the ``transferlab transfer`` sweeps get their own config next to these.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from transferlab.core.config import StudyConfig

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


class ChinchillaFitConfig(StudyConfig):
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` to a CSV of runs (columns N, D or C, loss)."""

    file: str = Field(..., description="CSV with columns N, D (or C = training FLOPs), loss")
    file_sha256: str = Field("", description="content hash of the file (filled in when it is read)")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap refits for the 95% intervals")
    seed: int = Field(0, ge=0, description="seed of the bootstrap resamples")
    delta: float = Field(1e-3, gt=0, description="Huber delta on residuals of log loss")
    drop_highest_loss: int = Field(
        0, ge=0, description="leave out this many highest-loss points (Epoch AI dropped 5 on their data)"
    )
    max_iter: int = Field(1000, ge=1, le=100_000, description="L-BFGS iteration limit per start")
    budgets: list[float] = Field(
        default_factory=list,
        description="training FLOP budgets for the compute-optimal table "
        "(default: the data's largest C x1, x10, x100)",
    )
    target_loss: float | None = Field(
        None,
        gt=0,
        description="loss target of the over-training table (default: compute-optimal loss at the "
        "largest budget)",
    )
    inference_tokens: list[float] = Field(
        default_factory=list,
        description="inference tokens for the over-training table (default: 0, 1, 10, 100 x the optimal D)",
    )
    sensitivity: int | None = Field(
        None,
        ge=0,
        description="refit with the 1..K most influential points left out (default: 2% of the points, "
        "1 to 5; 0: skip)",
    )
    sensitivity_by: Literal["influence", "residual"] = Field(
        "influence",
        description="how the points are chosen: influence (Cook's distance from exact leave-one-out "
        "refits) or residual (largest |log L - log L_fit|)",
    )
    num_threads: int | None = Field(None, ge=1, description="threads for the fit (default: CPU count)")

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not (x > 0) for x in v):
            raise ValueError("training FLOP budgets must be > 0, e.g. --budget 1e21")
        return v

    @field_validator("inference_tokens")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(not (x >= 0) for x in v):
            raise ValueError("values must be >= 0")
        return v


class TransferFitConfig(StudyConfig):
    """Effective data transferred on a CSV of runs (columns kind = scratch|finetune, N, D, loss)."""

    file: str = Field(..., description="CSV with columns kind (scratch|finetune), N, D, loss")
    file_sha256: str = Field("", description="content hash of the file (filled in when it is read)")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the 95% intervals")
    seed: int = Field(0, ge=0, description="seed of the bootstrap resamples")
    delta: float = Field(1e-3, gt=0, description="Huber delta of the scratch-law fit (log loss)")
    fix: dict[str, float] = Field(
        default_factory=dict,
        description="scratch-law parameters held fixed, e.g. {E: 1.7} (needed with few runs)",
    )
    fix_beta: float | None = Field(
        None, description="hold Hernandez's N exponent beta fixed (one model size)"
    )
    propagate_scratch: bool = Field(True, description="refit the scratch law in every bootstrap resample")
    interval: Literal["residual", "pairs"] = Field(
        "residual", description="bootstrap method: residual (new losses simulated from the fitted laws with "
                                "resampled residuals; every resample keeps every size and D) or pairs (resample "
                                "the runs; most resamples of a small grid lose a size and cannot be fitted)")
    plan: list[tuple[float, float]] = Field(
        default_factory=list,
        description="(target loss, N) pairs for the planner (default: the best fine-tuned loss at each N)",
    )
    num_threads: int | None = Field(None, ge=1, description="threads for the fit (default: CPU count)")

    @field_validator("fix")
    @classmethod
    def _known_params(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if k not in PARAM_NAMES:
                raise ValueError(
                    f"unknown scratch-law parameter '{k}' (choose from {', '.join(PARAM_NAMES)})"
                )
            if not v[k] > 0:
                raise ValueError(f"{k}={v[k]:g}: the scratch law's parameters are all > 0")
        return v

    @field_validator("plan")
    @classmethod
    def _plan_positive(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for loss, n in v:
            if not (loss > 0 and n > 0):
                raise ValueError(f"plan {loss:g}@{n:g}: target loss and N must both be > 0, e.g. --plan 2.5@1e7")
        return v
