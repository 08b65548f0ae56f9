"""Effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer", arXiv 2102.01293).

A model of size N fine-tuned on D_F target examples reaches a loss that a from-scratch model
of the same size reaches only with D_E examples. The effective data transferred is
``D_T = D_E - D_F``, and in the low-data regime ``D_T = k * D_F^alpha * N^beta``.

**Names.** As in Hernandez et al., ``alpha`` is the exponent of D_F and ``beta`` the exponent of
N (text -> python: alpha ≈ 0.18, beta ≈ 0.38). The textbook writes the same law with the two
names swapped. The from-scratch law below has its own (Chinchilla) exponents, which the code
keeps inside :class:`~transferlab.fit.chinchilla.ChinchillaLaw` and reports as the scratch law's.

Procedure (each step is a pure function here):

1. Fit the from-scratch loss ``L_s(N, D) = E + A/N^a + B/D^b`` with the Epoch procedure of
   :mod:`transferlab.fit.chinchilla` (Huber on log loss, delta 1e-3, 4,500 starts). Five free
   parameters need at least six scratch runs over at least three sizes and three data amounts.
   With fewer, hold parameters fixed (``fixed={"E": 1.7}`` or an exponent): that is the only
   regularization we apply, and the report lists what was fixed.
2. Invert it per fine-tuning row: ``D_E = (B / (loss - E - A/N^a))^(1/b)``. A loss at or below
   ``L_s(N, inf) = E + A/N^a`` is beyond what any amount of scratch data reaches at that N: D_E is
   infinite and the row is flagged ``below_scratch_limit``. (``L_s -> inf`` as D -> 0, so no
   finite loss lies above the D -> 0 limit.) D_E outside the range of the scratch runs' D, or N
   outside their sizes, is flagged ``extrapolated`` but kept.
3. ``D_T = D_E - D_F``. A fine-tuned loss no better than the scratch law at the same N and D
   (``D_E <= D_F``, so ``D_T <= 0``) is **ossification** (Hernandez et al.: pretraining can hurt
   small models on large D_F); the row is flagged ``ossified`` and, since log D_T is undefined,
   left out of the power-law fit. If a scratch run with the same N and D exists, it is compared
   directly too (``ossified_observed``).
4. Fit ``log D_T = log k + alpha log D_F + beta log N`` over the remaining rows by least squares
   and by a Huber M-estimator (:mod:`transferlab.fit.powerlaw`).
5. Bootstrap 95% intervals (percentile), by one of two methods (``interval``):

   - ``"residual"`` (the default): a residual bootstrap from the fitted laws. Each resample keeps every
     run's (N, D) and (N, D_F) and draws new losses: the scratch law's prediction times the exp of a
     log residual of its fit drawn with replacement, and for the fine-tuning rows used in the fit the
     loss the two fitted laws predict, ``L_s(N, D_F + k D_F^alpha N^beta)``, times a drawn log residual
     of those rows. The residuals are centred and scaled by sqrt(n / (n - p)) (p: the parameters each fit
     has), since a fit's residuals are smaller than its errors; without it the 95% interval of beta covered
     the truth in 82% of synthetic quick-sized data sets (``bench/transfer_interval_coverage.py``). It refits
     the scratch law (warm-started batch), recomputes D_E and D_T and refits
     k, alpha, beta. The design never changes, so a resample fails only if a refit does not converge
     or a drawn loss leaves fewer rows with D_T > 0 than the fit needs: in practice all of them fit.
   - ``"pairs"``: resample the runs themselves (scratch runs and fine-tuning rows, each with
     replacement). With a few sizes and data amounts most resamples lose a size or a D and cannot be
     fitted (243 of 1,000 fitted on ``transfer --preset full``, issue 26), and the percentiles of the
     ones that remain are not an honest 95%: kept for comparison.

   Either way the intervals carry the uncertainty of the scratch law as well
   (``propagate_scratch=False`` keeps it fixed), and ``n_boot_ok`` says how many resamples fitted.

The planner answers "to reach loss L at size N, how much fine-tuning data do I need?": without
pretraining ``D_E(L)`` (the scratch law inverted); with pretraining the D_F solving
``k D_F^alpha N^beta + D_F = D_E(L)`` (increasing in D_F, solved by Brent's method in log D_F).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import brentq

from transferlab.core.errors import FitError
from transferlab.fit.bootstrap import (
    ChinchillaBootstrap,
    bootstrap_chinchilla,
    bootstrap_chinchilla_residual,
    percentile_interval,
    resample_counts,
    residual_losses,
    simulated_losses,
)
from transferlab.fit.chinchilla import DELTA, ChinchillaFit, ChinchillaLaw, fit_chinchilla
from transferlab.fit.powerlaw import PowerLawFit, fit_power_law
from transferlab.fit.sizing import tokens_for_loss

OSSIFIED = "ossified"
OSSIFIED_OBSERVED = "ossified_observed"
BELOW_LIMIT = "below_scratch_limit"
EXTRAPOLATED = "extrapolated"
INTERVALS = ("residual", "pairs")
NAME_NOTE = (
    "alpha is the D_F exponent and beta the N exponent, as in Hernandez et al. 2021; "
    "the textbook swaps the two names"
)


def effective_data(law: ChinchillaLaw, N: np.ndarray | float, loss: np.ndarray | float) -> np.ndarray:
    """D_E: from-scratch data a size-N model needs to reach ``loss`` (inf where it never does)."""
    return tokens_for_loss(law, N, loss)


@dataclass
class TransferRow:
    """One fine-tuning run with its effective data."""

    N: float
    D_F: float
    loss: float
    scratch_loss: float  # L_s(N, D_F) from the fitted scratch law
    D_E: float
    D_T: float
    multiplier: float  # D_E / D_F
    fraction_finetune: float  # D_F / D_E: share of the effective data that is fine-tuning data
    flags: list[str] = field(default_factory=list)
    used: bool = False  # entered the power-law fit

    def as_dict(self) -> dict:
        return asdict(self)


def transfer_rows(
    law: ChinchillaLaw,
    N: np.ndarray,
    D_F: np.ndarray,
    loss: np.ndarray,
    *,
    scratch_N: np.ndarray | None = None,
    scratch_D: np.ndarray | None = None,
    scratch_loss: np.ndarray | None = None,
) -> list[TransferRow]:
    """D_E, D_T, multiplier, fraction and flags for every fine-tuning row."""
    N = np.asarray(N, dtype=float)
    D_F = np.asarray(D_F, dtype=float)
    loss = np.asarray(loss, dtype=float)
    D_E = effective_data(law, N, loss)
    L_s = law.loss(N, D_F)
    rows = []
    for i in range(len(N)):
        flags: list[str] = []
        de = float(D_E[i])
        if not math.isfinite(de):
            flags.append(BELOW_LIMIT)
        dt = de - D_F[i]
        if math.isfinite(de) and dt <= 0:
            flags.append(OSSIFIED)
        if scratch_N is not None and scratch_D is not None and scratch_loss is not None:
            same = np.flatnonzero(
                np.isclose(scratch_N, N[i], rtol=1e-9) & np.isclose(scratch_D, D_F[i], rtol=1e-9)
            )
            if same.size and loss[i] >= float(np.mean(np.asarray(scratch_loss)[same])):
                flags.append(OSSIFIED_OBSERVED)
            lo_n, hi_n = float(np.min(scratch_N)), float(np.max(scratch_N))
            lo_d, hi_d = float(np.min(scratch_D)), float(np.max(scratch_D))
            if not (lo_n * (1 - 1e-9) <= N[i] <= hi_n * (1 + 1e-9)) or (
                math.isfinite(de) and not (lo_d * (1 - 1e-9) <= de <= hi_d * (1 + 1e-9))
            ):
                flags.append(EXTRAPOLATED)
        used = math.isfinite(de) and dt > 0
        rows.append(
            TransferRow(
                N=float(N[i]),
                D_F=float(D_F[i]),
                loss=float(loss[i]),
                scratch_loss=float(L_s[i]),
                D_E=de,
                D_T=float(dt),
                multiplier=de / float(D_F[i]),
                fraction_finetune=float(D_F[i]) / de if de > 0 else 0.0,
                flags=flags,
                used=used,
            )
        )
    return rows


@dataclass
class TransferLaw:
    """``D_T = k * D_F^alpha * N^beta`` (Hernandez's names) with bootstrap intervals."""

    k: float
    alpha: float  # D_F exponent
    beta: float  # N exponent
    method: str
    n: int
    r2: float
    resid_std: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_boot_ok: int = 0
    fixed: dict[str, float] = field(default_factory=dict)
    samples: np.ndarray | None = field(
        default=None, repr=False
    )  # (B, 3) bootstrap (k, alpha, beta), NaN = failed

    @classmethod
    def from_powerlaw(cls, fit: PowerLawFit) -> TransferLaw:
        return cls(
            k=fit.k,
            alpha=fit.exponents["D_F"],
            beta=fit.exponents["N"],
            method=fit.method,
            n=fit.n,
            r2=fit.r2,
            resid_std=fit.resid_std,
            fixed={{"D_F": "alpha", "N": "beta"}[k]: v for k, v in fit.fixed.items()},
        )

    def predict(self, D_F: np.ndarray | float, N: np.ndarray | float) -> np.ndarray:
        return self.k * np.asarray(D_F, dtype=float) ** self.alpha * np.asarray(N, dtype=float) ** self.beta

    def as_dict(self) -> dict:
        out = {
            "k": self.k,
            "k_ci": list(self.ci.get("k", (math.nan, math.nan))),
            "alpha": self.alpha,
            "alpha_ci": list(self.ci.get("alpha", (math.nan, math.nan))),
            "beta": self.beta,
            "beta_ci": list(self.ci.get("beta", (math.nan, math.nan))),
            "method": self.method,
            "n_rows": self.n,
            "r2_log": self.r2,
            "resid_std_log": self.resid_std,
            "n_bootstrap_ok": self.n_boot_ok,
        }
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        return out


@dataclass(frozen=True)
class FinetunePlan:
    """How much target data reaches ``target_loss`` at size ``N``, with and without pretraining."""

    target_loss: float
    N: float
    D_scratch: float  # from scratch: D_E(target)
    D_finetune: float  # with pretraining: solves k D_F^alpha N^beta + D_F = D_E(target)
    D_transferred: float
    data_saving: float  # D_scratch / D_finetune
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "flags": list(self.flags)}


def plan_finetune_data(
    law: ChinchillaLaw,
    transfer: TransferLaw,
    target_loss: float,
    N: float,
    D_F_range: tuple[float, float] | None = None,
) -> FinetunePlan:
    """The planner (see the module docstring). Flags: ``unreachable`` (target at or below the size-N
    scratch limit), ``pretraining_suffices`` (the law gives D_T >= D_E already at a vanishing D_F),
    ``extrapolated`` (the answer is outside ``D_F_range``, the fine-tuning data the law was fitted on).
    """
    if N <= 0 or not math.isfinite(N):
        raise FitError(f"model size N must be finite and > 0, got {N}")
    d_e = float(effective_data(law, N, target_loss))
    if not math.isfinite(d_e):
        return FinetunePlan(target_loss, N, math.inf, math.inf, math.nan, math.nan, ("unreachable",))
    k, a, bN = transfer.k, transfer.alpha, transfer.beta
    log_de = math.log(d_e)
    c = math.log(k) + bN * math.log(N)

    def g(u: float) -> float:  # log(D_T + D_F) - log D_E, increasing in u = log D_F when a >= 0
        return float(np.logaddexp(c + a * u, u)) - log_de

    flags: list[str] = []
    hi = log_de
    lo = log_de - 5.0
    while g(lo) >= 0 and lo > log_de - 200:
        lo -= 5.0
    if g(lo) >= 0:
        d_f = 0.0
        flags.append("pretraining_suffices")
    else:
        d_f = math.exp(brentq(g, lo, hi, xtol=1e-12, rtol=1e-13, maxiter=500))
    if D_F_range is not None and d_f > 0 and not (D_F_range[0] <= d_f <= D_F_range[1]):
        flags.append("extrapolated")
    return FinetunePlan(
        target_loss=target_loss,
        N=N,
        D_scratch=d_e,
        D_finetune=d_f,
        D_transferred=d_e - d_f,
        data_saving=d_e / d_f if d_f > 0 else math.inf,
        flags=tuple(flags),
    )


@dataclass
class TransferAnalysis:
    """Everything :func:`fit_transfer` finds."""

    scratch: ChinchillaFit
    scratch_bootstrap: ChinchillaBootstrap | None
    rows: list[TransferRow]
    ols: TransferLaw
    robust: TransferLaw
    n_boot: int
    fixed: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    interval: str = "residual"  # the bootstrap method (see the module docstring)

    @property
    def law(self) -> ChinchillaLaw:
        return self.scratch.law

    def D_F_range(self) -> tuple[float, float]:
        used = [r.D_F for r in self.rows if r.used]
        return (min(used), max(used))

    def plan(self, target_loss: float, N: float, robust: bool = False) -> FinetunePlan:
        return plan_finetune_data(
            self.law, self.robust if robust else self.ols, target_loss, N, self.D_F_range()
        )


def _transfer_fit(
    law: ChinchillaLaw,
    N: np.ndarray,
    D_F: np.ndarray,
    loss: np.ndarray,
    method: str,
    weights: np.ndarray | None,
    fix_beta: float | None,
) -> PowerLawFit:
    D_E = effective_data(law, N, loss)
    D_T = D_E - D_F
    ok = np.isfinite(D_E) & (D_T > 0)
    if weights is not None:
        ok &= weights > 0
    return fit_power_law(
        D_T[ok],
        {"D_F": D_F[ok], "N": N[ok]},
        method=method,
        weights=None if weights is None else weights[ok],
        fixed=None if fix_beta is None else {"N": fix_beta},
    )


def fit_transfer(
    scratch_N: np.ndarray,
    scratch_D: np.ndarray,
    scratch_loss: np.ndarray,
    N: np.ndarray,
    D_F: np.ndarray,
    loss: np.ndarray,
    *,
    fixed: Mapping[str, float] | None = None,
    fix_beta: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    propagate_scratch: bool = True,
    delta: float = DELTA,
    threads: int | None = None,
    interval: str = "residual",
) -> TransferAnalysis:
    """The whole analysis: scratch law, D_E / D_T per row, OLS and Huber fits, bootstrap intervals.

    ``fixed`` holds scratch-law parameters (E, A, B, alpha, beta of L_s) at given values;
    ``fix_beta`` holds Hernandez's N exponent (needed when all fine-tuning runs share one N);
    ``interval`` is the bootstrap method, ``"residual"`` or ``"pairs"`` (the module docstring).
    """
    if interval not in INTERVALS:
        raise FitError(f"unknown bootstrap interval method '{interval}'", fix=f"choose one of {', '.join(INTERVALS)}")
    sN, sD, sL = (np.asarray(v, dtype=float).ravel() for v in (scratch_N, scratch_D, scratch_loss))
    fN, fD, fL = (np.asarray(v, dtype=float).ravel() for v in (N, D_F, loss))
    fixed = dict(fixed or {})
    scratch = fit_chinchilla(sN, sD, sL, delta=delta, fixed=fixed, threads=threads)
    rows = transfer_rows(scratch.law, fN, fD, fL, scratch_N=sN, scratch_D=sD, scratch_loss=sL)
    used = np.array([r.used for r in rows])
    if used.sum() == 0:
        raise FitError(
            f"no fine-tuning row has a positive effective data transferred (of {len(rows)}: "
            f"{sum(OSSIFIED in r.flags for r in rows)} ossified, "
            f"{sum(BELOW_LIMIT in r.flags for r in rows)} below the scratch law's limit)",
            fix="check that the scratch and fine-tuning losses are on the same held-out target data",
        )
    fits = {m: _transfer_fit(scratch.law, fN, fD, fL, m, None, fix_beta) for m in ("ols", "huber")}
    laws = {m: TransferLaw.from_powerlaw(f) for m, f in fits.items()}

    boot = None
    if n_boot > 0:
        if interval == "pairs":
            boot, samples = _pairs_bootstrap(scratch, sN, sD, sL, fN, fD, fL, fixed, fix_beta, n_boot, seed,
                                             propagate_scratch, delta, threads, fits)
        else:
            boot, samples = _residual_bootstrap(scratch, sN, sD, sL, fN[used], fD[used], fL[used], laws, fixed,
                                                fix_beta, n_boot, seed, propagate_scratch, delta, threads)
        for m, law_t in laws.items():
            s = samples[m]
            ok = np.isfinite(s).all(1)
            law_t.n_boot_ok = int(ok.sum())
            law_t.samples = s
            law_t.ci = {name: percentile_interval(s[ok, j]) for j, name in enumerate(("k", "alpha", "beta"))}

    analysis = TransferAnalysis(
        scratch=scratch,
        scratch_bootstrap=boot,
        rows=rows,
        ols=laws["ols"],
        robust=laws["huber"],
        n_boot=n_boot,
        fixed=fixed,
        interval=interval,
    )
    analysis.warnings.extend(scratch.warnings)
    n_oss = sum(OSSIFIED in r.flags or OSSIFIED_OBSERVED in r.flags for r in rows)
    if n_oss:
        analysis.warnings.append(
            f"{n_oss} fine-tuning row(s) show ossification (no better than from scratch)"
        )
    n_lim = sum(BELOW_LIMIT in r.flags for r in rows)
    if n_lim:
        analysis.warnings.append(
            f"{n_lim} fine-tuning row(s) beat the scratch law's infinite-data limit "
            "at their size: D_E is infinite there"
        )
    n_ext = sum(EXTRAPOLATED in r.flags for r in rows)
    if n_ext:
        analysis.warnings.append(
            f"{n_ext} fine-tuning row(s) need the scratch law outside the scratch runs' "
            "range of N or D (extrapolated)"
        )
    for m, law_t in laws.items():
        if n_boot > 0 and law_t.n_boot_ok < 0.9 * n_boot:
            analysis.warnings.append(
                f"{m}: only {law_t.n_boot_ok} of {n_boot} bootstrap resamples could be "
                "fitted; the intervals are less reliable"
            )
    return analysis


def _pairs_bootstrap(scratch, sN, sD, sL, fN, fD, fL, fixed, fix_beta, n_boot, seed, propagate_scratch, delta,
                     threads, fits) -> tuple[ChinchillaBootstrap | None, dict[str, np.ndarray]]:
    """Resample the scratch runs and the fine-tuning rows with replacement (``interval="pairs"``)."""
    rng = np.random.default_rng(seed)
    counts_s = resample_counts(len(sN), n_boot, rng)
    counts_f = resample_counts(len(fN), n_boot, rng)
    boot = None
    if propagate_scratch:
        boot = bootstrap_chinchilla(
            scratch, sN, sD, sL, counts=counts_s, fixed=fixed, delta=delta, seed=seed, threads=threads
        )
        thetas = boot.thetas
    else:
        thetas = np.tile(scratch.law.theta, (n_boot, 1))
    samples = {m: np.full((n_boot, 3), np.nan) for m in fits}
    for b in range(n_boot):
        if not np.isfinite(thetas[b]).all():
            continue
        law_b = ChinchillaLaw.from_theta(thetas[b])  # bootstrap_chinchilla already dropped overflowing fits
        for m in fits:
            try:
                pf = _transfer_fit(law_b, fN, fD, fL, m, counts_f[b].astype(float), fix_beta)
            except FitError:
                continue
            samples[m][b] = (pf.k, pf.exponents["D_F"], pf.exponents["N"])
    return boot, samples


def finetune_prediction(law: ChinchillaLaw, transfer: TransferLaw, N: np.ndarray, D_F: np.ndarray) -> np.ndarray:
    """The fine-tuned loss the two laws predict: the scratch loss at D_F + D_T, ``L_s(N, D_F + k D_F^a N^b)``."""
    return np.asarray(law.loss(N, D_F + transfer.predict(D_F, N)), dtype=float)


def _residual_bootstrap(scratch, sN, sD, sL, uN, uD, uL, laws, fixed, fix_beta, n_boot, seed, propagate_scratch,
                        delta, threads) -> tuple[ChinchillaBootstrap | None, dict[str, np.ndarray]]:
    """Simulate new losses from the fitted laws with resampled log residuals and refit (``interval="residual"``);
    ``uN, uD, uL`` are the fine-tuning rows the fit used."""
    rng = np.random.default_rng(seed)
    boot = None
    if propagate_scratch:
        losses = residual_losses(scratch.law, sN, sD, sL, n_boot, rng, n_free=int(sum(scratch.free)))
        boot = bootstrap_chinchilla_residual(scratch, sN, sD, sL, losses=losses, fixed=fixed, delta=delta, seed=seed,
                                             threads=threads)
        thetas = boot.thetas
    else:
        thetas = np.tile(scratch.law.theta, (n_boot, 1))
    idx = rng.integers(0, len(uL), size=(n_boot, len(uL)))
    samples = {m: np.full((n_boot, 3), np.nan) for m in laws}
    for m, law_t in laws.items():
        pred = finetune_prediction(scratch.law, law_t, uN, uD)
        sim = simulated_losses(pred, uL, idx, 3 - (fix_beta is not None))
        for b in range(n_boot):
            if not np.isfinite(thetas[b]).all():
                continue
            law_b = ChinchillaLaw.from_theta(thetas[b])
            try:
                pf = _transfer_fit(law_b, uN, uD, sim[b], m, None, fix_beta)
            except FitError:
                continue
            samples[m][b] = (pf.k, pf.exponents["D_F"], pf.exponents["N"])
    return boot, samples
