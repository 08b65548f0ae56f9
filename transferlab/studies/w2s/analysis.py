"""Pure functions from per-seed results to findings: CIs, PGR, paired tests, mean curves. No I/O."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from transferlab.metrics import mean_ci, pgr


def _ci(values, lo: float = 0.0, hi: float = 1.0) -> dict[str, float]:
    """Mean with a 95% t-interval, clipped to the metric's range."""
    c = mean_ci(values)
    clip = (lambda v: v) if c.lo != c.lo else (lambda v: min(hi, max(lo, v)))
    return {"value": c.value, "lo": clip(c.lo), "hi": clip(c.hi)}


def summarize_method(
    weak: list[float],
    ceiling: list[float],
    rows: list[dict[str, Any]],
    *,
    min_gap: float,
) -> dict[str, Any]:
    """rows: one dict per seed with student_acc, agreement, misfit, ece, auroc."""
    s = [r["student_acc"] for r in rows]
    p = pgr(s, weak, ceiling, min_gap=min_gap)
    out = {
        "weak_acc": _ci(weak),
        "ceiling_acc": _ci(ceiling),
        "student_acc": _ci(s),
        "pgr": {"value": p.value, "lo": p.lo, "hi": p.hi, "guarded": p.guarded, "note": p.note},
        "student_acc_per_seed": [float(x) for x in s],
        "pgr_per_seed": [
            (si - wi) / (ci - wi) if ci - wi >= min_gap else math.nan for si, wi, ci in zip(s, weak, ceiling)
        ],
    }
    for key in ("agreement", "misfit", "ece", "auroc"):
        vals = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        if vals:
            out[key] = _ci(vals, 0.0, 2.0 if key == "misfit" else 1.0)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(pvalues) if p == p]
    m = len(idx)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def paired_tests(student_acc: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Every pair of methods, paired across seeds (and tasks): paired t-test and Wilcoxon signed-rank, each
    with Holm-adjusted p-values over the family of pairs (``t_p_holm``, ``wilcoxon_p_holm``)."""
    out = []
    for a, b in combinations(list(student_acc), 2):
        x, y = np.asarray(student_acc[a], float), np.asarray(student_acc[b], float)
        if x.size != y.size:
            continue
        d = x - y
        row: dict[str, Any] = {"a": a, "b": b, "n": int(d.size), "mean_diff": float(d.mean())}
        if d.size < 2 or np.allclose(d, 0):
            row.update(
                t_stat=math.nan,
                t_p=1.0 if d.size >= 2 else math.nan,
                wilcoxon_p=1.0 if d.size >= 2 else math.nan,
            )
        else:
            if np.allclose(d, d[0]):  # constant nonzero difference: t undefined (zero variance)
                row.update(t_stat=math.copysign(math.inf, d[0]), t_p=0.0)
            else:
                t = stats.ttest_rel(x, y)
                row.update(t_stat=float(t.statistic), t_p=float(t.pvalue))
            try:
                row["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
            except ValueError:
                row["wilcoxon_p"] = math.nan
        out.append(row)
    for key in ("t_p", "wilcoxon_p"):
        for row, adj in zip(out, holm([r[key] for r in out])):
            row[f"{key}_holm"] = adj
    return out


def pooled_paired_tests(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired tests between losses across tasks and seeds: each (task, seed) is one pair. Only losses
    present in every task are compared."""
    if not summaries:
        return []
    common = [m for m in summaries[0]["losses"] if all(m in s["losses"] for s in summaries)]
    pooled = {m: [x for s in summaries for x in s["losses"][m]["student_acc_per_seed"]] for m in common}
    return paired_tests(pooled)


def mean_curve(curves: list[list[tuple[int, float]]]) -> dict[str, list[float]]:
    """Average (step, value) curves sharing their steps: {'step', 'mean', 'min', 'max'} lists."""
    curves = [c for c in curves if c]
    if not curves:
        return {"step": [], "mean": [], "min": [], "max": []}
    n = min(len(c) for c in curves)
    steps = [c[i][0] for i, c in zip(range(n), [curves[0]] * n)]
    vals = np.array([[c[i][1] for i in range(n)] for c in curves])
    return {
        "step": steps,
        "mean": vals.mean(0).tolist(),
        "min": vals.min(0).tolist(),
        "max": vals.max(0).tolist(),
    }


def overfit_drop(curve: dict[str, list[float]]) -> float:
    """Peak minus final mean gold accuracy: how much the student lost by fitting the weak labels longer."""
    if not curve["mean"]:
        return math.nan
    return float(max(curve["mean"]) - curve["mean"][-1])


# --------------------------------------------------------------------------- ICL refinement (Somerstep et al.)
def fit_exponential_decay(ks: list[int] | np.ndarray, values: list[float] | np.ndarray) -> dict[str, float]:
    """Fit m(k) = A exp(-r k), the paper's form for misalignment against the refinement batch size, by least
    squares on log m: ``decay_rate`` r (per demonstration), ``amplitude`` A, ``r2`` the fraction of the variance of
    log m that the line explains, ``half_k`` = ln 2 / r. Values <= 0 cannot enter a log and are left out; fewer
    than 3 usable points give NaNs."""
    k = np.asarray(ks, float)
    m = np.asarray(values, float)
    ok = np.isfinite(m) & (m > 0) & np.isfinite(k)
    nan = {"decay_rate": math.nan, "amplitude": math.nan, "r2": math.nan, "half_k": math.nan, "n_points": int(ok.sum())}
    if ok.sum() < 3 or np.ptp(k[ok]) == 0:
        return nan
    x, y = k[ok], np.log(m[ok])
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    rate = float(-slope)
    return {"decay_rate": rate, "amplitude": float(math.exp(intercept)), "r2": r2,
            "half_k": math.log(2) / rate if rate > 0 else math.nan, "n_points": int(ok.sum())}


def refinement_summary(ks: list[int], misalignment: dict[int, list[float]], naive: list[float], weak: list[float],
                       student_misalignment: dict[int, list[float]],
                       bayes: dict[int, list[float]] | None = None) -> dict[str, Any]:
    """The refinement curve: at each k the refined labels' misalignment (mean over seeds with a 95% t-interval),
    the misalignment of the student trained on them and (``bayes``) that of the Bayes predictor on the same
    demonstrations; the exponential fit of the mean curve (and of the Bayes curve); the naive student's and the
    weak labels' misalignment. Inputs are per-seed lists."""
    rows = [{"k": int(k), "misalignment": _ci(misalignment[k]),
             "misalignment_per_seed": [float(v) for v in misalignment[k]],
             "student_misalignment": _ci(student_misalignment[k])} for k in ks]
    if bayes:
        for r in rows:
            r["bayes_misalignment"] = _ci(bayes[r["k"]])
    fit = fit_exponential_decay(ks, [r["misalignment"]["value"] for r in rows])
    out = {"k": [int(k) for k in ks], "per_k": rows, "decay_rate": fit["decay_rate"], "r2": fit["r2"], "fit": fit,
           "naive_misalignment": _ci(naive), "weak_misalignment": _ci(weak)}
    if bayes:
        out["bayes_fit"] = fit_exponential_decay(ks, [r["bayes_misalignment"]["value"] for r in rows])
    return out
