"""Layer 2: fits. Chinchilla laws (Epoch's procedure, batched L-BFGS), bootstrap, sizing, transfer.

from transferlab.fit import fit_chinchilla, bootstrap_chinchilla, compute_optimal
fit = fit_chinchilla(N, D, loss)            # 4,500 starts, Huber on log loss
boot = bootstrap_chinchilla(fit, N, D, loss)
boot.intervals()                            # 95% percentile intervals
compute_optimal(fit.law, 1e21)              # (N_opt, D_opt)
beyond("C", 1e25, 6 * N * D).note()         # '1e25 FLOPs is 772x past the largest budget in the data (1.3e22)'
sensitivity(fit, N, D, loss, 5).law(5)      # the law without the 5 most influential points (Cook's distance)
"""

from transferlab.fit.bootstrap import ChinchillaBootstrap, bootstrap_chinchilla, percentile_interval
from transferlab.fit.chinchilla import ChinchillaFit, ChinchillaLaw, epoch_grid, fit_chinchilla
from transferlab.fit.extrapolation import Beyond, beyond
from transferlab.fit.powerlaw import PowerLawFit, fit_power_law
from transferlab.fit.sensitivity import Sensitivity, cooks_distance, sensitivity
from transferlab.fit.sizing import (
    OvertrainPlan,
    compute_for_loss,
    compute_multiplier,
    compute_optimal,
    loss_at_compute,
    optimal_exponents,
    optimal_loss,
    overtrain,
    overtrain_samples,
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
    "Beyond",
    "ChinchillaBootstrap",
    "ChinchillaFit",
    "ChinchillaLaw",
    "FinetunePlan",
    "OvertrainPlan",
    "PowerLawFit",
    "Sensitivity",
    "TransferAnalysis",
    "TransferLaw",
    "beyond",
    "bootstrap_chinchilla",
    "compute_for_loss",
    "compute_multiplier",
    "compute_optimal",
    "cooks_distance",
    "effective_data",
    "epoch_grid",
    "fit_chinchilla",
    "fit_power_law",
    "fit_transfer",
    "loss_at_compute",
    "optimal_exponents",
    "optimal_loss",
    "overtrain",
    "overtrain_samples",
    "percentile_interval",
    "plan_finetune_data",
    "sensitivity",
    "size_penalty",
    "tokens_for_loss",
]
