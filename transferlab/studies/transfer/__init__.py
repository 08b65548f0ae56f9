"""Transfer and scaling laws: Chinchilla sizing and effective data transferred (Hernandez et al. 2021).

    from transferlab.studies.transfer import ChinchillaFitConfig, fit_chinchilla_csv
    summary = fit_chinchilla_csv(ChinchillaFitConfig(file="runs.csv"), store="runs")

The fits themselves are in :mod:`transferlab.fit`.
"""

from transferlab.studies.transfer.config import ChinchillaFitConfig, TransferFitConfig
from transferlab.studies.transfer.fitcsv import fit_chinchilla_csv, fit_transfer_csv

__all__ = ["ChinchillaFitConfig", "TransferFitConfig", "fit_chinchilla_csv", "fit_transfer_csv"]
