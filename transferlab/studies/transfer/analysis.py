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
from transferlab.fit.chinchilla import NAMES, ChinchillaFit, ChinchillaLaw, fit_chinchilla
from transferlab.fit.extrapolation import beyond, fmt, fmt_factor
from transferlab.fit.sensitivity import SCORE_NAMES, Sensitivity, default_k, sensitivity
from transferlab.fit.sizing import (
    OvertrainPlan,
    compute_optimal,
    optimal_exponents,
    optimal_loss,
    overtrain,
    overtrain_samples,
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
    rows: np.ndarray | None = None  # 1-based data rows of the points fitted
    overtrain_ci: list[dict[str, Any]] = field(default_factory=list)  # per plan: field -> interval
    sensitivity: Sensitivity | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _ci(samples: np.ndarray | None, keep_inf: bool = False) -> list[float]:
    if samples is None:
        return [math.nan, math.nan]
    return list(percentile_interval(samples, CI_LEVEL, keep_inf=keep_inf))


def data_ranges(N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
    """The fitted points' values of each quantity an answer is compared with."""
    return {"C": 6.0 * N * D, "N": N, "D": D, "loss": loss}


def extrapolation(
    data: dict[str, np.ndarray], *, C: float, N: float, D: float, what: str
) -> dict[str, Any]:
    """How far a sizing answer (compute, N, D) lies outside the data; ``note`` says it in one sentence."""
    parts = {
        "C": beyond("C", C, data["C"], "compute"),
        "N": beyond("N", N, data["N"], "N"),
        "D": beyond("D", D, data["D"], "D"),
    }
    out_of = [b.note() for b in parts.values() if b.outside]
    return {
        "outside": bool(out_of),
        "factor": max(b.factor for b in parts.values()),
        **{k: {"side": b.side, "factor": b.factor} for k, b in parts.items()},
        "note": f"{what} is beyond the data: {'; '.join(out_of)}" if out_of else "",
    }


def extrapolation_summary(answers: list[dict[str, Any]], data: dict[str, np.ndarray]) -> str:
    """One sentence for all sizing answers beyond the data: how many, and how far at most."""
    out = [a for a in answers if a["outside"]]
    if not out:
        return ""
    words = {"C": ("compute", "largest budget"), "N": ("N", "largest model"), "D": ("D", "most tokens")}
    parts = []
    for k, (name, ref) in words.items():
        above = [a[k]["factor"] for a in out if a[k]["side"] == "above"]
        below = [a[k]["factor"] for a in out if a[k]["side"] == "below"]
        if above:
            parts.append(f"{name} up to {fmt_factor(max(above))} past the data's {ref} ({fmt(data[k].max())})")
        if below:
            parts.append(f"{name} up to {fmt_factor(max(below))} below the data's smallest ({fmt(data[k].min())})")
    return (
        f"{len(out)} of {len(answers)} sizing answers lie beyond the data ({'; '.join(parts)}): the fit "
        "is untested there and its intervals do not cover that"
    )


def _tpp_at(law: ChinchillaLaw | None, C: float) -> float:
    if law is None or law.alpha <= 0 or law.beta <= 0:
        return math.nan
    n, d = compute_optimal(law, C)
    return float(d / n)


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
    data = data_ranges(N, D, L)
    C_max = float(data["C"].max())
    budgets = list(cfg.budgets) or [C_max, 10 * C_max, 100 * C_max]
    boot_laws = boot.laws() if boot is not None else []
    table = []
    for C in budgets:
        n_opt, d_opt = (float(v) for v in compute_optimal(law, C))
        bn = np.array([float(compute_optimal(bl, C)[0]) for bl in boot_laws if bl.alpha > 0 and bl.beta > 0])
        bd = C / (6.0 * bn) if bn.size else None
        table.append(
            {
                "C": C,
                "N_opt": n_opt,
                "N_opt_ci": _ci(bn if bn.size else None),
                "D_opt": d_opt,
                "D_opt_ci": _ci(bd),
                "tokens_per_param": d_opt / n_opt,
                "tokens_per_param_ci": _ci(bd / bn if bd is not None else None),
                "loss": float(law.loss(n_opt, d_opt)),
                "extrapolation": extrapolation(data, C=C, N=n_opt, D=d_opt, what=f"sizing at {fmt(C)} FLOPs"),
            }
        )
    target = cfg.target_loss if cfg.target_loss is not None else float(optimal_loss(law, max(budgets)))
    plans: list[OvertrainPlan] = []
    plans_ci: list[dict[str, Any]] = []
    if target > law.E:
        base = overtrain(law, target, 0.0)
        tokens = list(cfg.inference_tokens) or [0.0, base.D, 10 * base.D, 100 * base.D]
        plans = [overtrain(law, target, t) for t in tokens]
        if boot_laws:
            for t in tokens:
                smp = overtrain_samples(boot_laws, target, t)
                ci = {
                    f"{k}_ci": _ci(smp[k], keep_inf=True)
                    for k in ("N", "D", "tokens_per_param", "train_flops", "total_flops", "saving")
                }
                ci["unreachable_resamples"] = int((~smp["reachable"]).sum())
                plans_ci.append(ci)
    sens = None
    k = default_k(len(N)) if cfg.sensitivity is None else cfg.sensitivity
    k = min(k, len(N) - int(sum(fit.free)) - 1)  # leave enough points to fit
    if k >= 1:
        sens = sensitivity(
            fit,
            N,
            D,
            L,
            k,
            by=cfg.sensitivity_by,
            delta=cfg.delta,
            max_iter=cfg.max_iter,
            threads=cfg.num_threads,
            seed=cfg.seed,
        )
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
        rows=rows[keep],
        overtrain_ci=plans_ci,
        sensitivity=sens,
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
    data = data_ranges(r.N, r.D, r.loss)
    plans = []
    for i, p in enumerate(r.overtrain):
        d = p.as_dict()
        if i < len(r.overtrain_ci):
            d.update(r.overtrain_ci[i])
        what = f"the over-training plan for {fmt(p.inference_tokens)} inference tokens"
        d["extrapolation"] = extrapolation(data, C=p.train_flops, N=p.N, D=p.D, what=what)
        plans.append(d)
    target_beyond = beyond("loss", r.target_loss, data["loss"], "target loss")
    out["overtrain"] = {
        "target_loss": r.target_loss,
        "target_extrapolation": {"side": target_beyond.side, "note": target_beyond.note()},
        "plans": plans,
    }
    notes = [b["extrapolation"]["note"] for b in r.budgets if b["extrapolation"]["outside"]]
    notes += [target_beyond.note()] if target_beyond.outside else []
    notes += [p["extrapolation"]["note"] for p in plans if p["extrapolation"]["outside"]]
    answers = [b["extrapolation"] for b in r.budgets] + [p["extrapolation"] for p in plans]
    out["extrapolation"] = {
        "data_range": {k: [float(v.min()), float(v.max())] for k, v in data.items()},
        "notes": notes,
        "summary": extrapolation_summary(answers, data),
    }
    out["warnings"] = list(r.fit.warnings)
    out["warnings"] += [out["extrapolation"]["summary"]] if out["extrapolation"]["summary"] else []
    out["warnings"] += [target_beyond.note()] if target_beyond.outside else []
    if r.sensitivity is not None:
        out["sensitivity"] = sensitivity_summary(r)
        out["warnings"] += out["sensitivity"]["warnings"]
    return out


def sensitivity_summary(r: ChinchillaResult) -> dict[str, Any]:
    """Which points the fit leans on, and the fit and sizing with the top 1..k of them left out."""
    s = r.sensitivity
    assert s is not None
    rows = r.rows if r.rows is not None else np.arange(1, len(r.N) + 1)
    law = r.fit.law
    points = [
        {
            "row": int(rows[i]),
            "N": float(r.N[i]),
            "D": float(r.D[i]),
            "loss": float(r.loss[i]),
            "residual": float(r.fit.residuals[i]),
            "score": float(s.score[i]),
        }
        for i in s.order
    ]
    refits = []
    for j in range(1, s.k + 1):
        lj = s.law(j)
        entry: dict[str, Any] = {"k": j, "dropped_rows": [int(rows[i]) for i in s.order[:j]], "ok": lj is not None}
        for name in NAMES:
            entry[name] = getattr(lj, name) if lj is not None else math.nan
        entry["objective"] = float(s.objective[j - 1])
        entry["budgets"] = [
            {"C": b["C"], "tokens_per_param": _tpp_at(lj, b["C"])} for b in r.budgets
        ]
        refits.append(entry)
    # how far the sizing moves at each budget over the k refits
    moves = []
    warnings: list[str] = []
    far_out = []
    for bi, b in enumerate(r.budgets):
        vals = np.array([e["budgets"][bi]["tokens_per_param"] for e in refits])
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            continue
        full = b["tokens_per_param"]
        far = int(np.argmax(np.abs(np.log(vals / full))))
        m = {
            "C": b["C"],
            "tokens_per_param": full,
            "min": float(vals.min()),
            "max": float(vals.max()),
            "largest_change": float(vals[far] / full),
            "at_k": int(far + 1),
        }
        lo, hi = b["tokens_per_param_ci"]
        m["outside_ci"] = bool(np.isfinite(lo) and (vals.min() < lo or vals.max() > hi))
        moves.append(m)
        if m["outside_ci"]:
            far_out.append((m, float(vals[far]), lo, hi))
    if far_out:
        j = max(m["at_k"] for m, *_ in far_out)
        rows_out = ", ".join(str(x) for x in refits[j - 1]["dropped_rows"])
        where = "; ".join(
            f"at {fmt(m['C'])} FLOPs {m['tokens_per_param']:.3g} -> {v:.3g} (95% interval [{lo:.3g}, {hi:.3g}])"
            for m, v, lo, hi in far_out
        )
        warnings.append(
            f"sensitivity: leaving out at most {j} of the most influential points (data rows {rows_out}; by "
            f"{s.by}) moves tokens per parameter outside its bootstrap interval: {where}"
        )
    params = {}
    for name in NAMES:
        vals = np.array([e[name] for e in refits], dtype=float)
        vals = vals[np.isfinite(vals)]
        full = getattr(law, name)
        params[name] = {
            "full": full,
            "min": float(vals.min()) if vals.size else math.nan,
            "max": float(vals.max()) if vals.size else math.nan,
        }
    return {
        "by": s.by,
        "score": SCORE_NAMES[s.by],
        "k": s.k,
        "starts": f"{s.n_starts} per refit: the fit on all points (warm start), its next basins, Epoch grid starts",
        "seconds": s.seconds,
        "points": points,
        "refits": refits,
        "parameters": params,
        "tokens_per_param": moves,
        "notes": list(s.notes),
        "warnings": warnings,
    }


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
        interval=cfg.interval,
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
    out["interval"] = a.interval
    out["bootstrap"] = {"method": a.interval, "resamples": a.n_boot, "fitted": a.ols.n_boot_ok,
                        "fitted_robust": a.robust.n_boot_ok}
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
