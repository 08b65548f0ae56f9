"""Pure analysis for the fits on users' runs: arrays + config in, findings out (no I/O, no training).

The fitting itself lives in :mod:`transferlab.fit`; this module chooses what to compute for the
reports (budgets, over-training targets, planner questions) and shapes the JSON summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.core.errors import FitError
from transferlab.fit.bootstrap import ChinchillaBootstrap, bootstrap_chinchilla, percentile_interval
from transferlab.fit.chinchilla import NAMES, ChinchillaFit, fit_chinchilla
from transferlab.fit.sizing import (
    OvertrainPlan,
    compute_optimal,
    optimal_exponents,
    optimal_loss,
    overtrain,
)
from transferlab.fit.transfer import NAME_NOTE, TransferAnalysis, fit_transfer
from transferlab.studies.transfer.config import ChinchillaFitConfig, TransferFitConfig

CI_LEVEL = 0.95


@dataclass
class ChinchillaResult:
    fit: ChinchillaFit
    boot: ChinchillaBootstrap | None
    N: np.ndarray  # the points fitted (after dropping)
    D: np.ndarray
    loss: np.ndarray
    dropped: list[int]  # 1-based data rows left out
    budgets: list[dict[str, Any]]
    overtrain: list[OvertrainPlan]
    target_loss: float
    summary: dict[str, Any] = field(default_factory=dict)


def _ci(samples: np.ndarray | None) -> list[float]:
    if samples is None:
        return [math.nan, math.nan]
    return list(percentile_interval(samples, CI_LEVEL))


def drop_highest(loss: np.ndarray, k: int) -> np.ndarray:
    """Mask keeping all but the ``k`` highest losses (ties broken by row order)."""
    keep = np.ones(len(loss), dtype=bool)
    if k > 0:
        order = np.argsort(-loss, kind="stable")
        keep[order[:k]] = False
    return keep


def analyze_chinchilla(
    N: np.ndarray, D: np.ndarray, loss: np.ndarray, rows: np.ndarray, cfg: ChinchillaFitConfig
) -> ChinchillaResult:
    """Fit, bootstrap, compute-optimal table and over-training table for one data set."""
    if cfg.drop_highest_loss >= len(loss):
        raise FitError(
            f"cannot drop {cfg.drop_highest_loss} of {len(loss)} points", fix="lower --drop-highest-loss"
        )
    keep = drop_highest(loss, cfg.drop_highest_loss)
    N, D, L = N[keep], D[keep], loss[keep]
    fit = fit_chinchilla(N, D, L, delta=cfg.delta, max_iter=cfg.max_iter, threads=cfg.num_threads)
    boot = None
    if cfg.bootstrap > 0:
        boot = bootstrap_chinchilla(
            fit,
            N,
            D,
            L,
            n_boot=cfg.bootstrap,
            seed=cfg.seed,
            delta=cfg.delta,
            max_iter=cfg.max_iter,
            threads=cfg.num_threads,
        )
    law = fit.law
    C_max = float((6.0 * N * D).max())
    budgets = list(cfg.budgets) or [C_max, 10 * C_max, 100 * C_max]
    boot_laws = boot.laws() if boot is not None else []
    table = []
    for C in budgets:
        n_opt, d_opt = (float(v) for v in compute_optimal(law, C))
        bn = np.array([float(compute_optimal(bl, C)[0]) for bl in boot_laws if bl.alpha > 0 and bl.beta > 0])
        table.append(
            {
                "C": C,
                "N_opt": n_opt,
                "N_opt_ci": _ci(bn if bn.size else None),
                "D_opt": d_opt,
                "D_opt_ci": _ci(C / (6.0 * bn) if bn.size else None),
                "tokens_per_param": d_opt / n_opt,
                "loss": float(law.loss(n_opt, d_opt)),
            }
        )
    target = cfg.target_loss if cfg.target_loss is not None else float(optimal_loss(law, max(budgets)))
    plans: list[OvertrainPlan] = []
    if target > law.E:
        base = overtrain(law, target, 0.0)
        tokens = list(cfg.inference_tokens) or [0.0, base.D, 10 * base.D, 100 * base.D]
        plans = [overtrain(law, target, t) for t in tokens]
    result = ChinchillaResult(
        fit=fit,
        boot=boot,
        N=N,
        D=D,
        loss=L,
        dropped=[int(r) for r in rows[~keep]],
        budgets=table,
        overtrain=plans,
        target_loss=target,
    )
    result.summary = chinchilla_summary(result)
    return result


def chinchilla_summary(r: ChinchillaResult) -> dict[str, Any]:
    law = r.fit.law
    out: dict[str, Any] = {}
    for name in ("E", "A", "B", "alpha", "beta"):
        out[name] = getattr(law, name)
        out[f"{name}_ci"] = _ci(r.boot.samples(name) if r.boot is not None else None)
    a, b = optimal_exponents(law)
    exps = None
    if r.boot is not None:
        th = r.boot.thetas[r.boot.ok]
        exps = th[:, 4] / (th[:, 3] + th[:, 4])
    out["ci_level"] = CI_LEVEL
    out["n_points"] = int(len(r.N))
    out["dropped_rows"] = r.dropped
    out["objective"] = r.fit.objective
    out["fit"] = {
        "method": f"Huber (delta {r.fit.delta:g}) on log loss, summed; L-BFGS from Epoch's grid",
        "starts": r.fit.n_starts,
        "converged": r.fit.n_converged,
        "starts_at_best": r.fit.n_at_best,
        "status": r.fit.status,
        "iterations": r.fit.n_iter,
        "seconds": r.fit.seconds,
    }
    if r.boot is not None:
        out["bootstrap"] = {
            "resamples": len(r.boot.thetas),
            "ok": int(r.boot.ok.sum()),
            "failed": r.boot.n_failed,
            "starts_per_resample": r.boot.n_starts,
            "seconds": r.boot.seconds,
        }
    try:
        G = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / (law.alpha + law.beta))
    except (ValueError, ZeroDivisionError):
        G = math.nan
    out["compute_optimal"] = {
        "N_opt_exponent": a,
        "N_opt_exponent_ci": _ci(exps),
        "D_opt_exponent": b,
        "G": G,
        "budgets": r.budgets,
    }
    out["overtrain"] = {"target_loss": r.target_loss, "plans": [p.as_dict() for p in r.overtrain]}
    out["warnings"] = list(r.fit.warnings)
    return out


@dataclass
class TransferResult:
    analysis: TransferAnalysis
    rows: np.ndarray  # 1-based data rows of the fine-tuning runs
    plans: list[dict[str, Any]]
    scratch_N: np.ndarray
    scratch_D: np.ndarray
    scratch_loss: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


def analyze_transfer(
    scratch_N: np.ndarray,
    scratch_D: np.ndarray,
    scratch_loss: np.ndarray,
    N: np.ndarray,
    D_F: np.ndarray,
    loss: np.ndarray,
    rows: np.ndarray,
    cfg: TransferFitConfig,
) -> TransferResult:
    a = fit_transfer(
        scratch_N,
        scratch_D,
        scratch_loss,
        N,
        D_F,
        loss,
        fixed=cfg.fix,
        fix_beta=cfg.fix_beta,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        propagate_scratch=cfg.propagate_scratch,
        delta=cfg.delta,
        threads=cfg.num_threads,
    )
    questions = list(cfg.plan)
    if not questions:  # default: the best fine-tuned loss seen at each size
        for n in sorted({r.N for r in a.rows if r.used}):
            questions.append((min(r.loss for r in a.rows if r.used and r.N == n), n))
    plans = []
    for target, n in questions:
        p = a.plan(float(target), float(n))
        pr = a.plan(float(target), float(n), robust=True)
        plans.append({**p.as_dict(), "D_finetune_robust": pr.D_finetune})
    res = TransferResult(
        analysis=a,
        rows=rows,
        plans=plans,
        scratch_N=np.asarray(scratch_N, dtype=float),
        scratch_D=np.asarray(scratch_D, dtype=float),
        scratch_loss=np.asarray(scratch_loss, dtype=float),
    )
    res.summary = transfer_summary(res)
    return res


def _law_dict(t) -> dict[str, Any]:
    d = t.as_dict()
    return {
        k: d[k]
        for k in (
            "k",
            "k_ci",
            "alpha",
            "alpha_ci",
            "beta",
            "beta_ci",
            "method",
            "n_rows",
            "r2_log",
            "resid_std_log",
            "n_bootstrap_ok",
        )
        if k in d
    } | ({"fixed": d["fixed"]} if "fixed" in d else {})


def transfer_summary(r: TransferResult) -> dict[str, Any]:
    a = r.analysis
    ols = _law_dict(a.ols)
    out: dict[str, Any] = {k: ols[k] for k in ("k", "k_ci", "alpha", "alpha_ci", "beta", "beta_ci")}
    out["ci_level"] = CI_LEVEL
    out["names"] = NAME_NOTE
    out["textbook_names"] = {"alpha": "beta", "beta": "alpha"}
    out["method"] = "least squares in log space"
    out["ols"] = ols
    out["robust"] = _law_dict(a.robust)
    scratch = {
        **a.law.as_dict(),
        "n_points": a.scratch.n_points,
        "objective": a.scratch.objective,
        "fixed": dict(a.fixed),
        "status": a.scratch.status,
    }
    if a.scratch_bootstrap is not None:
        b = a.scratch_bootstrap
        for name in NAMES:
            if name not in a.fixed:
                scratch[f"{name}_ci"] = _ci(b.samples(name))
    out["scratch_law"] = scratch
    out["rows"] = [{"row": int(row), **fr.as_dict()} for row, fr in zip(r.rows, a.rows)]
    out["n_finetune"] = len(a.rows)
    out["n_used"] = int(sum(fr.used for fr in a.rows))
    out["ossified_rows"] = [
        int(row)
        for row, fr in zip(r.rows, a.rows)
        if "ossified" in fr.flags or "ossified_observed" in fr.flags
    ]
    out["plans"] = r.plans
    out["warnings"] = list(a.warnings)
    return out
