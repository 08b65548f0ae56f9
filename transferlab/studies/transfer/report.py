"""Report pages for ``fit chinchilla`` and ``fit transfer`` (one self-contained HTML page each)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from transferlab.fit.extrapolation import fmt, fmt_factor
from transferlab.fit.sizing import compute_optimal, loss_at_compute, optimal_loss
from transferlab.fit.transfer import NAME_NOTE
from transferlab.report import Page
from transferlab.studies.transfer.analysis import ChinchillaResult, TransferResult

PALETTE = qualitative.Plotly + qualitative.D3


def _geo_levels(values: np.ndarray, k: int) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    return np.unique(np.geomspace(lo, hi, k)) if hi > lo else np.array([lo])


def _ci_text(ci: list[float]) -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return "—"
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]"


# ---------------------------------------------------------------- chinchilla
def chinchilla_page(r: ChinchillaResult, source: str) -> Page:
    s = r.summary
    law = r.fit.law
    page = Page("Chinchilla fit: L(N, D) = E + A/N^alpha + B/D^beta", f"{source} · {s['n_points']} points")
    page.text(
        "Fitted the way Epoch AI replicated Hoffmann et al.'s Approach 3: the sum over points of "
        f"Huber(delta={r.fit.delta:g}) of the residual of log loss, through log-sum-exp, minimized by "
        "L-BFGS from "
        f"all {r.fit.n_starts} starts of Epoch's grid; the best start is kept. "
        f"{r.fit.n_at_best} starts reached the best objective ({r.fit.objective:.6g}). "
        + (
            f"Intervals: {s['bootstrap']['ok']} bootstrap refits (points resampled with replacement), "
            "2.5th-97.5th percentiles."
            if r.boot is not None
            else "No bootstrap (intervals not computed)."
        )
    )
    if r.dropped:
        page.text(f"Left out the {len(r.dropped)} highest-loss points (data rows {r.dropped}), as requested.")
    for w in s["warnings"]:
        page.text(f"Warning: {w}", cls="flag")
    page.heading("Fitted law")
    page.table(
        [
            {"parameter": k, "estimate": s[k], "95% interval": _ci_text(s[f"{k}_ci"])}
            for k in ("E", "A", "B", "alpha", "beta")
        ]
    )
    co = s["compute_optimal"]
    page.text(
        f"Compute-optimal scaling: N_opt ∝ C^{co['N_opt_exponent']:.3f} "
        f"(95% interval {_ci_text(co['N_opt_exponent_ci'])}), D_opt ∝ C^{co['D_opt_exponent']:.3f}, "
        f"with C = 6 N D and G = (alpha A / (beta B))^(1/(alpha+beta)) = {co['G']:.4g}."
    )

    C = 6.0 * r.N * r.D
    page.heading("Loss against compute")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=C,
            y=r.loss,
            mode="markers",
            name="runs",
            marker=dict(
                size=6,
                color=np.log10(r.N),
                colorscale="Viridis",
                showscale=True,
                colorbar=dict(title="log10 N"),
            ),
            text=[f"N={n:.3g}, D={d:.3g}" for n, d in zip(r.N, r.D)],
        )
    )
    c_grid = np.geomspace(C.min() / 2, C.max() * 2, 200)
    lo_n, hi_n = np.log10(r.N.min()), np.log10(r.N.max())
    d_lo, d_hi = r.D.min() / 2, r.D.max() * 2
    for n in _geo_levels(r.N, 6):
        frac = 0.5 if hi_n == lo_n else (np.log10(n) - lo_n) / (hi_n - lo_n)
        c_n = c_grid[(c_grid >= 6 * n * d_lo) & (c_grid <= 6 * n * d_hi)]  # stay near the data's D range
        fig.add_trace(
            go.Scatter(
                x=c_n,
                y=loss_at_compute(law, c_n, n),
                mode="lines",
                name=f"fit, N={n:.3g}",
                line=dict(width=1.5, color=sample_colorscale("Viridis", [frac])[0]),
            )
        )
    if law.alpha > 0 and law.beta > 0:
        fig.add_trace(
            go.Scatter(
                x=c_grid,
                y=optimal_loss(law, c_grid),
                mode="lines",
                name="compute-optimal",
                line=dict(color="black", dash="dash", width=2),
            )
        )
    pad = 0.05 * (r.loss.max() - r.loss.min())
    fig.update_layout(
        xaxis=dict(type="log", title="training compute C = 6ND (FLOPs)"),
        yaxis=dict(title="loss", range=[r.loss.min() - pad, r.loss.max() + pad]),
        height=560,
        legend=dict(orientation="h", y=-0.2),
    )
    page.figure(
        fig,
        "Points coloured by model size; lines are the fitted law at fixed N (iso-N curves) and "
        "the compute-optimal frontier.",
    )

    page.heading("Residuals")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("log L - log L_fit against compute", "histogram"))
    fig.add_trace(
        go.Scatter(
            x=C,
            y=r.fit.residuals,
            mode="markers",
            name="residual",
            marker=dict(size=5, color=np.log10(r.N), colorscale="Viridis"),
        ),
        1,
        1,
    )
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"), row=1, col=1)
    fig.add_trace(go.Histogram(x=r.fit.residuals, nbinsx=40, name="residuals"), 1, 2)
    fig.update_xaxes(type="log", title_text="C (FLOPs)", row=1, col=1)
    fig.update_xaxes(title_text="log L - log L_fit", row=1, col=2)
    fig.update_layout(showlegend=False, height=380)
    page.figure(fig, f"Residual of log loss; median |residual| = {np.median(np.abs(r.fit.residuals)):.4f}.")

    if r.boot is not None and r.boot.ok.any():
        page.heading("Bootstrap distributions")
        names = ("E", "A", "B", "alpha", "beta")
        fig = make_subplots(rows=1, cols=5, subplot_titles=names)
        for j, name in enumerate(names):
            smp = r.boot.samples(name)
            fig.add_trace(go.Histogram(x=smp, nbinsx=40, name=name, marker_color=PALETTE[j]), 1, j + 1)
            fig.add_vline(x=s[name], line=dict(color="black", width=1.5), row=1, col=j + 1)
        fig.update_layout(showlegend=False, height=330)
        page.figure(fig, f"{int(r.boot.ok.sum())} refits; black lines: the fit on all points.")

    page.heading("Compute-optimal allocation")
    page.table(
        [
            {
                "C (FLOPs)": b["C"],
                "N_opt": b["N_opt"],
                "N_opt 95%": _ci_text(b["N_opt_ci"]),
                "D_opt": b["D_opt"],
                "D_opt 95%": _ci_text(b["D_opt_ci"]),
                "tokens/param": b["tokens_per_param"],
                "tokens/param 95%": _ci_text(b["tokens_per_param_ci"]),
                "loss": b["loss"],
                "beyond the data": _beyond_text(b["extrapolation"]),
            }
            for b in r.budgets
        ]
    )
    if law.alpha > 0 and law.beta > 0:
        budgets = [b["C"] for b in r.budgets]
        fig = go.Figure()
        for j, c in enumerate(budgets):
            n_opt = float(compute_optimal(law, c)[0])
            n_grid = np.geomspace(n_opt / 30, n_opt * 30, 200)
            fig.add_trace(
                go.Scatter(
                    x=n_grid,
                    y=loss_at_compute(law, c, n_grid),
                    mode="lines",
                    name=f"C={c:.3g}",
                    line=dict(color=PALETTE[j % len(PALETTE)]),
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=[n_opt],
                    y=[float(optimal_loss(law, c))],
                    mode="markers",
                    showlegend=False,
                    marker=dict(size=10, symbol="star", color=PALETTE[j % len(PALETTE)]),
                )
            )
        fig.update_layout(
            xaxis=dict(type="log", title="model size N (compute fixed, D = C / 6N)"),
            yaxis=dict(title="loss"),
            height=450,
        )
        page.figure(
            fig,
            "The loss cost of a smaller model trained longer (or a larger one trained shorter) at "
            "fixed compute; stars mark the compute-optimal size.",
        )

    if r.overtrain:
        page.heading("Over-training for inference")
        page.text(
            f"Target loss {r.target_loss:.4g}. Minimizes 6ND (training) + 2N D_inf (inference) at that loss; "
            "'saving' is against the compute-optimal model for the same loss serving the same tokens."
        )
        plans = s["overtrain"]["plans"]
        if plans and "N_ci" in plans[0]:
            miss = max(p["unreachable_resamples"] for p in plans)
            page.text(
                "Intervals: the same plan under each bootstrap refit, 2.5th-97.5th percentiles"
                + (
                    f"; in {miss} of {s['bootstrap']['ok']} refits the target loss is out of reach (at or "
                    "below that refit's E), which counts as an infinitely large model."
                    if miss
                    else "."
                )
            )
        page.table(
            [
                {
                    "inference tokens": p["inference_tokens"],
                    "N": p["N"],
                    "N 95%": _ci_text(p.get("N_ci", [])),
                    "D": p["D"],
                    "D 95%": _ci_text(p.get("D_ci", [])),
                    "tokens/param": p["tokens_per_param"],
                    "total FLOPs": p["total_flops"],
                    "total 95%": _ci_text(p.get("total_flops_ci", [])),
                    "Chinchilla total FLOPs": p["chinchilla_total_flops"],
                    "saving": f"{100 * p['saving']:.1f}%",
                    "saving 95%": _pct_ci(p.get("saving_ci", [])),
                    "beyond the data": _beyond_text(p["extrapolation"]),
                }
                for p in plans
            ]
        )
    if "sensitivity" in s:
        _sensitivity_section(page, s["sensitivity"])
    return page


def _beyond_text(ex: dict) -> str:
    if not ex.get("outside"):
        return "within"
    out = []
    for side in ("above", "below"):
        parts = [f"{k} {fmt_factor(ex[k]['factor'])}" for k in ("C", "N", "D") if ex[k]["side"] == side]
        if parts:
            out.append(f"{side}: {', '.join(parts)}")
    return "; ".join(out)


def _pct_ci(ci: list[float]) -> str:
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return "—"
    return f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _sensitivity_section(page: Page, sens: dict) -> None:
    page.heading("Sensitivity to the most influential points")
    page.text(
        f"The {sens['k']} points the fit leans on most, chosen by {sens['by']} ({sens['score']}), not by "
        f"rank of loss; the law is refitted with the top 1, 2, ..., {sens['k']} of them left out "
        f"({sens['starts']})."
    )
    for note in sens["notes"]:
        page.text(note)
    page.table(
        [
            {
                "data row": p["row"],
                "N": p["N"],
                "D": p["D"],
                "loss": p["loss"],
                "residual (log)": p["residual"],
                ("Cook's distance" if sens["by"] == "influence" else "|residual|"): p["score"],
            }
            for p in sens["points"]
        ]
    )
    rows = []
    for e in sens["refits"]:
        row = {"left out": e["k"], "data rows": ", ".join(str(x) for x in e["dropped_rows"])}
        for name in ("E", "A", "B", "alpha", "beta"):
            row[name] = e[name]
        for b in e["budgets"]:
            row[f"tokens/param at {fmt(b['C'])}"] = b["tokens_per_param"]
        rows.append(row)
    page.table(rows)
    for m in sens["tokens_per_param"]:
        page.text(
            f"Tokens per parameter at {fmt(m['C'])} FLOPs: {m['tokens_per_param']:.3g} on all points, "
            f"{m['min']:.3g} to {m['max']:.3g} with 1..{sens['k']} points left out"
            + (" (outside its 95% bootstrap interval)." if m["outside_ci"] else "."),
            cls="flag" if m["outside_ci"] else "note",
        )


def write_chinchilla(r: ChinchillaResult, path: str | Path, source: str) -> Path:
    return chinchilla_page(r, source).write(path)


# ---------------------------------------------------------------- transfer
def transfer_page(r: TransferResult, source: str) -> Page:
    s = r.summary
    a = r.analysis
    page = Page(
        "Effective data transferred: D_T = k · D_F^alpha · N^beta",
        f"{source} · {a.scratch.n_points} scratch runs · {len(a.rows)} fine-tuning runs",
    )
    page.text(
        "D_E is the from-scratch data that a model of the same size needs to reach the fine-tuned loss "
        "(the fitted scratch law inverted), and D_T = D_E - D_F (Hernandez et al. 2021). "
        f"Names: {NAME_NOTE}: the textbook's alpha is our beta (N exponent) and its beta our alpha "
        "(D_F exponent)."
    )
    for w in s["warnings"]:
        page.text(f"Warning: {w}", cls="flag")

    page.heading("Fits")
    fit_rows = []
    for label, t in (("least squares (log space)", s["ols"]), ("Huber (robust)", s["robust"])):
        fit_rows.append(
            {
                "method": label,
                "k": t["k"],
                "k 95%": _ci_text(t["k_ci"]),
                "alpha (D_F exp.; textbook beta)": t["alpha"],
                "alpha 95%": _ci_text(t["alpha_ci"]),
                "beta (N exp.; textbook alpha)": t["beta"],
                "beta 95%": _ci_text(t["beta_ci"]),
                "rows": t["n_rows"],
                "R² (log)": t["r2_log"],
                "bootstrap ok": t["n_bootstrap_ok"],
            }
        )
    page.table(fit_rows)
    if a.ols.fixed:
        page.text(f"Held fixed in the transfer fit: {a.ols.fixed}.")

    used = [fr for fr in a.rows if fr.used]
    sizes = sorted({fr.N for fr in a.rows})
    color = {n: PALETTE[j % len(PALETTE)] for j, n in enumerate(sizes)}
    fig = go.Figure()
    for n in sizes:
        pts = [fr for fr in used if fr.N == n]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p.D_F for p in pts],
                    y=[p.D_T for p in pts],
                    mode="markers",
                    name=f"N={n:.3g}",
                    marker=dict(size=9, color=color[n]),
                )
            )
            x = np.geomspace(min(p.D_F for p in pts) / 1.5, max(p.D_F for p in pts) * 1.5, 50)
            fig.add_trace(
                go.Scatter(
                    x=x, y=a.ols.predict(x, n), mode="lines", showlegend=False, line=dict(color=color[n])
                )
            )
    fig.update_layout(
        xaxis=dict(type="log", title="fine-tuning data D_F"),
        yaxis=dict(type="log", title="effective data transferred D_T"),
        height=500,
    )
    page.heading("Effective data transferred")
    page.figure(
        fig,
        "D_T against D_F for each model size, with the least-squares fit (lines), as in Hernandez "
        "et al.'s figures. Rows with D_T <= 0 (ossified) or infinite D_E are not on these axes.",
    )

    fig = go.Figure()
    for n in sizes:
        pts = [fr for fr in a.rows if fr.N == n and fr.used]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p.D_F for p in pts],
                    y=[p.multiplier for p in pts],
                    mode="lines+markers",
                    name=f"N={n:.3g}",
                    marker=dict(color=color[n]),
                    line=dict(color=color[n]),
                )
            )
    fig.add_hline(y=1, line=dict(color="gray", dash="dot"))
    fig.update_layout(
        xaxis=dict(type="log", title="D_F"), yaxis=dict(type="log", title="D_E / D_F"), height=420
    )
    page.figure(
        fig,
        "Effective-data multiplier D_E / D_F: how many times more data pretraining is worth; "
        "1 means no transfer.",
    )

    law = a.law
    fig = go.Figure()
    sN = (r.scratch_N, r.scratch_D, r.scratch_loss)
    for j, n in enumerate(sorted(set(sN[0]) | set(sizes))):
        c = color.get(n, PALETTE[(len(sizes) + j) % len(PALETTE)])
        m = sN[0] == n
        if m.any():
            fig.add_trace(
                go.Scatter(
                    x=sN[1][m],
                    y=sN[2][m],
                    mode="markers",
                    name=f"scratch N={n:.3g}",
                    marker=dict(color=c, size=7),
                )
            )
        ft = [fr for fr in a.rows if fr.N == n]
        if ft:
            fig.add_trace(
                go.Scatter(
                    x=[p.D_F for p in ft],
                    y=[p.loss for p in ft],
                    mode="markers",
                    name=f"fine-tuned N={n:.3g}",
                    marker=dict(color=c, size=9, symbol="diamond-open"),
                )
            )
        d_all = np.concatenate([sN[1], [p.D_F for p in a.rows]])
        x = np.geomspace(d_all.min() / 2, d_all.max() * 2, 100)
        fig.add_trace(
            go.Scatter(x=x, y=law.loss(n, x), mode="lines", showlegend=False, line=dict(color=c, width=1))
        )
    fig.update_layout(
        xaxis=dict(type="log", title="target data D"), yaxis=dict(title="target loss"), height=480
    )
    page.heading("Scratch law and fine-tuned runs")
    page.figure(
        fig,
        "From-scratch runs (dots) with the fitted scratch law (lines), and fine-tuned runs (diamonds) "
        "at their D_F: the horizontal gap to the line is D_T on a log scale.",
    )
    sl = s["scratch_law"]
    page.table(
        [
            {
                "parameter": k,
                "estimate": sl[k],
                "95% interval": _ci_text(sl.get(f"{k}_ci", [])),
                "fixed": "yes" if k in sl["fixed"] else "",
            }
            for k in ("E", "A", "B", "alpha", "beta")
        ]
    )
    page.text(
        "Scratch law L_s(N, D) = E + A/N^alpha + B/D^beta (its exponents are the scratch law's own, not "
        "the transfer exponents), fitted with the Chinchilla procedure."
    )

    if a.ols.samples is not None:
        fig = make_subplots(
            rows=1, cols=3, subplot_titles=("log10 k", "alpha (D_F exponent)", "beta (N exponent)")
        )
        for label, t, col in (("least squares", a.ols, PALETTE[0]), ("Huber", a.robust, PALETTE[1])):
            smp = t.samples[np.isfinite(t.samples).all(1)] if t.samples is not None else np.empty((0, 3))
            for j, vals in enumerate((np.log10(smp[:, 0]), smp[:, 1], smp[:, 2])):
                fig.add_trace(
                    go.Histogram(
                        x=vals, nbinsx=40, name=label, marker_color=col, opacity=0.6, showlegend=j == 0
                    ),
                    1,
                    j + 1,
                )
        fig.update_layout(barmode="overlay", height=330)
        page.heading("Bootstrap distributions")
        scratch = "scratch law refitted" if a.scratch_bootstrap else "scratch law held at its fit"
        what = (
            f"residual bootstrap: losses simulated from the fitted laws with resampled log residuals ({scratch}); "
            "every resample keeps every size and D" if a.interval == "residual" else
            f"pairs bootstrap: the runs resampled with replacement ({scratch})"
        )
        page.figure(fig, f"{a.n_boot} resamples, {what}; fitted: {a.ols.n_boot_ok} of {a.n_boot} (least squares), "
                         f"{a.robust.n_boot_ok} of {a.n_boot} (Huber).")

    page.heading("Fine-tuning runs")
    page.table(
        [
            {
                "row": row["row"],
                "N": row["N"],
                "D_F": row["D_F"],
                "loss": row["loss"],
                "scratch loss at D_F": row["scratch_loss"],
                "D_E": row["D_E"],
                "D_T": row["D_T"],
                "D_E/D_F": row["multiplier"],
                "D_F/D_E": row["fraction_finetune"],
                "flags": ", ".join(row["flags"]),
                "in fit": "yes" if row["used"] else "no",
            }
            for row in s["rows"]
        ]
    )
    if r.plans:
        page.heading("Planner")
        page.text(
            "To reach a target loss at size N: target data needed from scratch (D_E of the target) and with "
            "pretraining (D_F solving k D_F^alpha N^beta + D_F = D_E), by the least-squares and Huber fits."
        )
        page.table(
            [
                {
                    "target loss": p["target_loss"],
                    "N": p["N"],
                    "from scratch": p["D_scratch"],
                    "fine-tuning (LS)": p["D_finetune"],
                    "fine-tuning (Huber)": p["D_finetune_robust"],
                    "saving x": p["data_saving"],
                    "flags": ", ".join(p["flags"]),
                }
                for p in r.plans
            ]
        )
    return page


def write_transfer(r: TransferResult, path: str | Path, source: str) -> Path:
    return transfer_page(r, source).write(path)
