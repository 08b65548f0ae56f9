"""Layer 2: fits. Chinchilla laws (Epoch's procedure, batched L-BFGS), bootstrap, sizing, transfer.

from transferlab.fit import fit_chinchilla, bootstrap_chinchilla, compute_optimal
fit = fit_chinchilla(N, D, loss)            # 4,500 starts, Huber on log loss
boot = bootstrap_chinchilla(fit, N, D, loss)
boot.intervals()                            # 95% percentile intervals
compute_optimal(fit.law, 1e21)              # (N_opt, D_opt)
"""

from transferlab.fit.bootstrap import ChinchillaBootstrap, bootstrap_chinchilla, percentile_interval
from transferlab.fit.chinchilla import ChinchillaFit, ChinchillaLaw, epoch_grid, fit_chinchilla
from transferlab.fit.powerlaw import PowerLawFit, fit_power_law
from transferlab.fit.sizing import (
    OvertrainPlan,
    compute_for_loss,
    compute_multiplier,
    compute_optimal,
    loss_at_compute,
    optimal_exponents,
    optimal_loss,
    overtrain,
    size_penalty,
    tokens_for_loss,
)
from transferlab.fit.transfer import (
    FinetunePlan,
    TransferAnalysis,
    TransferLaw,
    effective_data,
    fit_transfer,
    plan_finetune_data,
)

__all__ = [
    "ChinchillaBootstrap",
    "ChinchillaFit",
    "ChinchillaLaw",
    "FinetunePlan",
    "OvertrainPlan",
    "PowerLawFit",
    "TransferAnalysis",
    "TransferLaw",
    "bootstrap_chinchilla",
    "compute_for_loss",
    "compute_multiplier",
    "compute_optimal",
    "effective_data",
    "epoch_grid",
    "fit_chinchilla",
    "fit_power_law",
    "fit_transfer",
    "loss_at_compute",
    "optimal_exponents",
    "optimal_loss",
    "overtrain",
    "percentile_interval",
    "plan_finetune_data",
    "size_penalty",
    "tokens_for_loss",
]
