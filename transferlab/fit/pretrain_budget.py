"""Effective data transferred against the pretraining budget at a fixed model size (issue 26's third axis).

Hernandez et al. 2021 (arXiv 2102.01293) fit ``D_T = k D_F^alpha N^beta`` with the pretraining held fixed;
they do not vary how much a model was pretrained. Barnett 2024 ("An Empirical Study of Scaling Laws for
Transfer", arXiv:2408.16947) does, at a fixed model size, and fits the fine-tuned loss on the target with a
*transfer gap* ``G``:

    L(p, f) = E + (A p^-a + G) f^-b            (p: pretraining data, f: fine-tuning data)

As ``p -> inf`` the fine-tuned loss tends to ``E + G f^-b``: the gap is the part of the fine-tuning-data
term that no amount of pretraining removes (G = 0: pretraining can stand in for any amount of target
data). Here, at one zoo size N and fine-tuning runs at several pretraining budgets P and amounts D_F:

1. **Power law in P**: ``D_T = c P^gamma D_F^alpha_F`` by least squares in log space over the rows with
   D_T > 0 (D_T from the transfer study's scratch law, as in :mod:`transferlab.fit.transfer`). It lets
   D_T grow without bound in P.
2. **Barnett's form** on the fine-tuned losses, with ``E`` held at the scratch law's infinite-data loss at
   this N, ``L_s(N, inf) = E_s + A_s / N^alpha_s`` (a model of fixed size cannot go below it however much
   target data it sees), and P and D_F in units of the largest budget and the largest D_F, so ``A`` and
   ``G`` are losses: ``A + G`` is the fine-tuning-data term at the largest budget and D_F. Fitted by
   bounded least squares on log loss (A, G >= 0; a, b in [0, 5]) from a small grid of starts. Its D_T,
   ``D_E(L(P, D_F)) - D_F``, saturates at ``D_E(E + G D_F^-b) - D_F`` as P grows: ``D_T_limit``.

Both are compared on the same rows by the RMS of their log D_T residuals.

Intervals: a residual bootstrap from each fitted law (as ``interval="residual"`` in
:mod:`transferlab.fit.transfer`): each resample keeps every run's (P, D_F), draws each loss as the law's
prediction times the exp of a resampled log residual (centred, scaled by sqrt(n / (n - p))), and refits.
With scratch-law resamples (``scratch_thetas``: the transfer analysis's, of whichever interval method) each
resample also uses its own scratch law, so the intervals carry that uncertainty too; a resample whose scratch
law did not fit is not fitted here either. The number of resamples that fitted is reported with each interval.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from transferlab.core.errors import FitError
from transferlab.fit.bootstrap import percentile_interval, simulated_losses
from transferlab.fit.chinchilla import ChinchillaLaw
from transferlab.fit.powerlaw import fit_power_law
from transferlab.fit.transfer import effective_data

BARNETT_NAMES = ("A", "a", "G", "b")
BARNETT_REF = "Barnett 2024, arXiv:2408.16947: L(p, f) = E + (A p^-a + G) f^-b, G the transfer gap"


@dataclass
class BarnettLaw:
    """``L(P, D_F) = E + (A (P/P0)^-a + G) (D_F/F0)^-b`` (Barnett's transfer-gap form)."""

    E: float
    A: float
    a: float
    G: float
    b: float
    P0: float  # the reference budget (the largest), in tokens
    F0: float  # the reference D_F (the largest), in tokens

    def loss(self, P: np.ndarray | float, D_F: np.ndarray | float) -> np.ndarray:
        p = np.asarray(P, dtype=float) / self.P0
        f = np.asarray(D_F, dtype=float) / self.F0
        return self.E + (self.A * p ** (-self.a) + self.G) * f ** (-self.b)

    def gap_share(self) -> float:
        """G / (A + G): the share of the fine-tuning-data term at the largest budget that is the gap."""
        tot = self.A + self.G
        return self.G / tot if tot > 0 else math.nan

    def as_dict(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "a": self.a, "G": self.G, "b": self.b, "P0": self.P0, "F0": self.F0,
                "gap_share": self.gap_share()}


def _barnett_residuals(x: np.ndarray, E: float, p: np.ndarray, f: np.ndarray, logL: np.ndarray) -> np.ndarray:
    A, a, G, b = x
    pred = E + (A * p ** (-a) + G) * f ** (-b)
    return np.log(np.maximum(pred, 1e-300)) - logL


def fit_barnett(P: np.ndarray, D_F: np.ndarray, loss: np.ndarray, E: float,
                start: np.ndarray | None = None) -> BarnettLaw:
    """Barnett's form with ``E`` held fixed, by bounded least squares on log loss (the best of a grid of
    starts, or from ``start`` alone)."""
    P, D_F, L = (np.asarray(v, dtype=float) for v in (P, D_F, loss))
    if len(L) < 5:
        raise FitError(f"Barnett's form has 4 free parameters and needs at least 5 runs, got {len(L)}",
                       fix="add pretraining budgets or fine-tuning amounts")
    if len(np.unique(P)) < 2 or len(np.unique(D_F)) < 2:
        raise FitError("Barnett's form needs at least 2 pretraining budgets and 2 fine-tuning amounts",
                       fix="add budgets (budget_tokens) or D_F values (finetune_D)")
    P0, F0 = float(P.max()), float(D_F.max())
    p, f, logL = P / P0, D_F / F0, np.log(L)
    excess = float(np.median(np.maximum(L - E, 1e-3)))
    if start is not None:
        starts = [np.asarray(start, dtype=float)]
    else:
        starts = [np.array([sA * excess, a, sG * excess, b])
                  for sA, a, sG, b in itertools.product((0.5, 1.0), (0.25, 1.0), (0.0, 0.5), (0.25, 1.0))]
    lo, hi = np.array([0.0, 0.0, 0.0, 0.0]), np.array([np.inf, 5.0, np.inf, 5.0])
    best = None
    for x0 in starts:
        try:
            r = least_squares(_barnett_residuals, np.clip(x0, lo, hi), bounds=(lo, hi), args=(E, p, f, logL),
                              x_scale="jac", max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        raise FitError("Barnett's form could not be fitted to these runs", fix="check the fine-tuned losses")
    A, a, G, b = (float(v) for v in best.x)
    return BarnettLaw(E=float(E), A=A, a=a, G=G, b=b, P0=P0, F0=F0)


@dataclass
class BudgetAxis:
    """Everything :func:`fit_pretrain_budget` finds."""

    N: float
    rows: list[dict[str, Any]]
    power: dict[str, Any]
    barnett: dict[str, Any]
    comparison: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"N": self.N, "rows": self.rows, "power_law": self.power, "barnett": self.barnett,
                "comparison": self.comparison, "warnings": list(self.warnings)}


def _dt(law: ChinchillaLaw, N: float, D_F: np.ndarray, loss: np.ndarray) -> np.ndarray:
    return effective_data(law, np.full(len(D_F), N), loss) - D_F


def _power_fit(P: np.ndarray, D_F: np.ndarray, dt: np.ndarray):
    ok = np.isfinite(dt) & (dt > 0)
    x = {"P": P[ok]}
    if len(np.unique(D_F[ok])) > 1:
        x["D_F"] = D_F[ok]
    return fit_power_law(dt[ok], x), ok


def _power_dict(pf, ok: np.ndarray) -> dict[str, Any]:
    return {"form": "D_T = c P^gamma D_F^alpha_F" if "D_F" in pf.exponents else "D_T = c P^gamma",
            "c": pf.k, "gamma": pf.exponents["P"], "alpha_F": pf.exponents.get("D_F", math.nan),
            "n_rows": int(ok.sum()), "r2_log": pf.r2, "resid_std_log": pf.resid_std}


def fit_pretrain_budget(
    law: ChinchillaLaw,
    N: float,
    P: np.ndarray,
    D_F: np.ndarray,
    loss: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    scratch_thetas: np.ndarray | None = None,
    level: float = 0.95,
) -> BudgetAxis:
    """Fit D_T against the pretraining budget P at size N, both ways (module docstring), with intervals."""
    P, D_F, L = (np.asarray(v, dtype=float).ravel() for v in (P, D_F, loss))
    if len(np.unique(P)) < 2:
        raise FitError("the budget axis needs at least 2 pretraining budgets", fix="add budgets (budget_tokens)")
    dt = _dt(law, N, D_F, L)
    rows = [{"P": float(p), "D_F": float(f), "loss": float(v), "D_T": float(d),
             "used": bool(np.isfinite(d) and d > 0)} for p, f, v, d in zip(P, D_F, L, dt)]
    warnings: list[str] = []
    E = float(law.loss_infinite_data(N))
    power: dict[str, Any] = {}
    try:
        pf, ok = _power_fit(P, D_F, dt)
        power = _power_dict(pf, ok)
    except FitError as err:
        pf, ok = None, None
        power = {"error": err.one_line()}
    barnett: dict[str, Any] = {"reference": BARNETT_REF, "E_held_at": "L_s(N, inf) of the scratch law"}
    try:
        bl = fit_barnett(P, D_F, L, E)
        barnett.update(bl.as_dict())
        limit = {}
        for f in sorted(set(D_F.tolist())):
            de = float(effective_data(law, N, E + bl.G * (f / bl.F0) ** (-bl.b))) if bl.G > 0 else math.inf
            limit[str(int(f))] = de - f
        barnett["D_T_limit"] = limit
    except FitError as err:
        bl = None
        barnett["error"] = err.one_line()

    rng = np.random.default_rng(seed)
    thetas = scratch_thetas if scratch_thetas is not None else np.tile(law.theta, (max(n_boot, 0), 1))
    B = min(n_boot, len(thetas))
    if pf is not None and B > 0:
        used = ok
        pred = np.asarray(law.loss(N, D_F[used] + pf.predict(**{k: {"P": P, "D_F": D_F}[k][used]
                                                                   for k in pf.exponents})), dtype=float)
        sim = simulated_losses(pred, L[used], rng.integers(0, len(pred), size=(B, len(pred))),
                               1 + len(pf.exponents))
        g = np.full(B, np.nan)
        for i in range(B):
            if not np.isfinite(thetas[i]).all():
                continue
            lb = ChinchillaLaw.from_theta(thetas[i])
            try:
                fb, _ = _power_fit(P[used], D_F[used], _dt(lb, N, D_F[used], sim[i]))
            except FitError:
                continue
            g[i] = fb.exponents["P"]
        power["gamma_ci"] = list(percentile_interval(g, level))
        power["bootstrap"] = {"method": "residual", "resamples": B, "fitted": int(np.isfinite(g).sum())}
    if bl is not None and B > 0:
        pred = bl.loss(P, D_F)
        sim = simulated_losses(pred, L, rng.integers(0, len(pred), size=(B, len(pred))), 4)
        samp = np.full((B, 4), np.nan)
        x0 = np.array([bl.A, bl.a, bl.G, bl.b])
        for i in range(B):
            if not np.isfinite(thetas[i]).all():
                continue
            Eb = float(ChinchillaLaw.from_theta(thetas[i]).loss_infinite_data(N))
            try:
                fb = fit_barnett(P, D_F, sim[i], Eb, start=x0)
            except FitError:
                continue
            samp[i] = (fb.A, fb.a, fb.G, fb.b)
        for j, name in enumerate(BARNETT_NAMES):
            barnett[f"{name}_ci"] = list(percentile_interval(samp[:, j], level))
        tot = samp[:, 0] + samp[:, 2]
        barnett["gap_share_ci"] = list(percentile_interval(np.where(tot > 0, samp[:, 2] / tot, np.nan), level))
        barnett["bootstrap"] = {"method": "residual", "resamples": B, "fitted": int(np.isfinite(samp).all(1).sum())}
    comparison: dict[str, Any] = {}
    used = np.isfinite(dt) & (dt > 0)
    if pf is not None:
        res = np.log(dt[used]) - np.log(pf.predict(**{k: {"P": P, "D_F": D_F}[k][used] for k in pf.exponents}))
        comparison["power_law_rms_log_D_T"] = float(np.sqrt(np.mean(res**2)))
    if bl is not None:
        dtb = _dt(law, N, D_F[used], bl.loss(P[used], D_F[used]))
        good = np.isfinite(dtb) & (dtb > 0)
        comparison["barnett_rms_log_D_T"] = (float(np.sqrt(np.mean((np.log(dt[used][good]) - np.log(dtb[good])) ** 2)))
                                             if good.all() else math.inf)
    if len(comparison) == 2:
        comparison["closer"] = ("barnett" if comparison["barnett_rms_log_D_T"] < comparison["power_law_rms_log_D_T"]
                                else "power_law")
    # the two fitted forms' D_T over the budgets and beyond (to 4x the largest), per D_F, for the figure
    grid = np.geomspace(P.min(), 4 * P.max(), 25)
    curves = []
    for f in sorted(set(D_F.tolist())):
        c: dict[str, Any] = {"D_F": f, "P": grid.tolist()}
        if pf is not None:
            xs = {"P": grid, "D_F": np.full(grid.size, f)}
            c["power_law"] = pf.predict(**{k: xs[k] for k in pf.exponents}).tolist()
        if bl is not None:
            c["barnett"] = [float(v) if np.isfinite(v) else None
                            for v in _dt(law, N, np.full(grid.size, f), bl.loss(grid, f))]
        curves.append(c)
    comparison["curves"] = curves
    n_bad = int((~used).sum())
    if n_bad:
        warnings.append(f"budget axis: {n_bad} of {len(L)} runs have no positive D_T (ossified or beyond the "
                        "scratch law's limit) and are left out of the power law")
    for name, d in (("power law", power), ("Barnett's form", barnett)):
        bs = d.get("bootstrap")
        if bs and bs["fitted"] < 0.9 * bs["resamples"]:
            warnings.append(f"budget axis, {name}: only {bs['fitted']} of {bs['resamples']} resamples fitted")
    return BudgetAxis(N=float(N), rows=rows, power=power, barnett=barnett, comparison=comparison,
                      warnings=warnings)
