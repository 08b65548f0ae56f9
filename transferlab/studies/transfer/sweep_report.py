"""The transfer sweep's report page: the fit page of :mod:`transferlab.studies.transfer.report` (D_T against
D_F per N with the fitted lines, the table of fits) plus the sweep's own sections: pretraining curves with
the live monitor, learning curves, observed ossification, the runs table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from transferlab.report import Page
from transferlab.zoo.report import PALETTE, metrics_of, pretraining_figure


def _learning_curves(rows: list[dict[str, Any]], store: Any, kind: str) -> go.Figure:
    fig = go.Figure()
    sizes = sorted({r["size"] for r in rows}, key=lambda s: min(r["N"] for r in rows if r["size"] == s))
    color = {s: PALETTE[j % len(PALETTE)] for j, s in enumerate(sizes)}
    for r in rows:
        if r["kind"] != kind:
            continue
        recs = [m for m in metrics_of(store.run_dir("lm", r["run_id"])) if "val_loss" in m]
        fig.add_trace(
            go.Scatter(
                x=[m["step"] for m in recs],
                y=[m["val_loss"] for m in recs],
                mode="lines",
                name=f"{r['size']} D={r['D']}",
                line=dict(color=color[r["size"]]),
            )
        )
    fig.update_layout(
        xaxis=dict(title="step"), yaxis=dict(type="log", title="target validation loss"), height=420
    )
    return fig


def _ci(p: dict[str, Any]) -> str:
    ci = p.get("ci")
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else "(no interval)"


def write_transfer_report(
    cfg: Any,
    rows: list[dict[str, Any]],
    result: Any,
    error: str | None,
    oss: list[dict[str, Any]],
    zb: Any,
    store: Any,
    path: Path,
    summary: dict[str, Any],
) -> Path:
    from transferlab.studies.transfer.report import transfer_page

    source = f"transferlab transfer --preset {cfg.preset}"
    if result is not None:
        page = transfer_page(result, source)
    else:
        page = Page("Effective data transferred", source)
        page.text(f"The transfer analysis could not be made: {error}", cls="flag")
    page.heading("The sweep")
    proto = summary.get("protocol", {})
    if proto:
        page.text(
            f"Protocol: {proto['name']}: {proto['note']}. Pretraining tokens per size: "
            + ", ".join(f"{s} {t:,} ({proto['tokens_per_param'][s]:.3g} per parameter)"
                        for s, t in proto["pretrain_tokens"].items()) + "."
        )
    page.text(
        f"Pretraining: sizes {', '.join(cfg.sizes)} on '{cfg.pretrain_corpus}' for "
        + (f"{cfg.pretrain_tokens:,} tokens each" if cfg.pretrain_tokens else
           f"{cfg.pretrain_tokens_per_param:g} tokens per parameter")
        + f". Target '{cfg.target_corpus}': from scratch at D in {cfg.scratch_D}, "
        f"fine-tuned at D_F in "
        f"{cfg.finetune_D} (tokens in the training pool; at most {cfg.max_epochs:g} passes, early stopping "
        f"with patience {cfg.patience}; the loss is the best validation loss). "
        f"Wall time {summary.get('wall_seconds', float('nan')):.0f} s."
    )
    if "D_T_by_size" in summary:
        page.text(
            "D_T grows with N: " + ("yes" if summary["D_T_grows_with_N"] else "no") + " in the geometric-mean D_T "
            "over the shared D_F values ("
            + ", ".join(f"N={g['N']:,}: {g['geomean_D_T']:.4g}" for g in summary["D_T_by_size"])
            + "); at every D_F: " + ("yes" if summary.get("D_T_grows_with_N_at_every_D_F") else "no") + " ("
            + "; ".join(f"D_F={p['D_F']:,}: " + ("rises" if p["grows"] else "does not rise")
                        + (f", undefined for N={', '.join(f'{n:,}' for n in p['undefined_for_N'])}"
                           if p["undefined_for_N"] else "") for p in summary.get("D_T_by_D_F", []))
            + ")"
            + f". Fitted N exponent beta = {summary['beta']['value']:.3g} {_ci(summary['beta'])} (textbook alpha); "
            f"D_F exponent alpha = {summary['alpha']['value']:.3g} {_ci(summary['alpha'])} (textbook beta); "
            + (f"the intervals rest on {summary['bootstrap']['fitted']} of {summary['bootstrap']['resamples']} "
               f"{summary['bootstrap']['method']} bootstrap resamples (the others could not be fitted). "
               if summary.get("bootstrap") else "")
            + "Hernandez et al. (text->python): alpha 0.18, beta 0.38."
        )
    if "budget_axis" in summary:
        _budget_section(page, summary["budget_axis"])
    page.heading("Ossification (observed)")
    flagged = [o for o in oss if o["ossified"]]
    page.text(
        f"{len(flagged)} of {len(oss)} fine-tuning runs are no better than the scratch run of the same size "
        "and "
        "data: pretraining hurt there."
        if flagged
        else f"None of the {len(oss)} fine-tuning runs is worse than the scratch run of the same size and "
        "data.",
        cls="flag" if flagged else "note",
    )
    page.table(oss)
    page.heading("Pretraining (the zoo)")
    page.figure(
        pretraining_figure(zb.entries, [store.run_dir("lm", e["run_id"]) for e in zb.entries]),
        "Pretraining curves with the live power-law monitor (see the zoo report).",
    )
    page.heading("Learning curves on the target")
    page.figure(
        _learning_curves(rows, store, "scratch"), "From-scratch runs: validation loss per evaluation."
    )
    page.figure(
        _learning_curves(rows, store, "finetune"), "Fine-tuning runs: validation loss per evaluation."
    )
    page.heading("Runs")
    page.table(rows)
    return page.write(path)


def _budget_section(page: Page, b: dict[str, Any]) -> None:
    """The third axis: D_T of one size against its pretraining budget, the power law and Barnett's form."""
    page.heading(f"The pretraining budget at fixed N ({b['size']}, N = {b['N']:,})")
    if "error" in b:
        page.text(f"The budget axis could not be fitted: {b['error']}", cls="flag")
        return
    pw, bn, cmp_ = b.get("power_law", {}), b.get("barnett", {}), b.get("comparison", {})
    parts = []
    if "gamma" in pw:
        bs = pw.get("bootstrap", {})
        ci = pw.get("gamma_ci", [float("nan")] * 2)
        parts.append(f"Power law {pw['form']}: gamma = {pw['gamma']:.3g} [{ci[0]:.3g}, {ci[1]:.3g}] "
                     f"({bs.get('fitted', 0)} of {bs.get('resamples', 0)} residual-bootstrap resamples fitted), "
                     f"over {pw['n_rows']} runs.")
    elif "error" in pw:
        parts.append(f"Power law: {pw['error']}.")
    if "G" in bn:
        bs = bn.get("bootstrap", {})
        ci = bn.get("G_ci", [float("nan")] * 2)
        parts.append(f"{bn['reference']}; E held at {bn['E']:.4g} ({bn['E_held_at']}): A = {bn['A']:.3g}, "
                     f"a = {bn['a']:.3g}, G = {bn['G']:.3g} [{ci[0]:.3g}, {ci[1]:.3g}], b = {bn['b']:.3g}; "
                     f"the gap is {bn['gap_share']:.0%} of the fine-tuning-data term at the largest budget "
                     f"({bs.get('fitted', 0)} of {bs.get('resamples', 0)} resamples fitted).")
    elif "error" in bn:
        parts.append(f"Barnett's form: {bn['error']}.")
    if "closer" in cmp_:
        parts.append(f"RMS of log D_T residuals: power law {cmp_['power_law_rms_log_D_T']:.3g}, Barnett "
                     f"{cmp_['barnett_rms_log_D_T']:.3g}.")
    page.text(" ".join(parts))
    rows = b.get("rows", [])
    fig = go.Figure()
    dfs = sorted({r["D_F"] for r in rows})
    for j, f in enumerate(dfs):
        pts = [r for r in rows if r["D_F"] == f and r["used"]]
        fig.add_trace(go.Scatter(x=[r["P"] for r in pts], y=[r["D_T"] for r in pts], mode="markers",
                                 name=f"D_F={f:,.0f}", marker=dict(color=PALETTE[j % len(PALETTE)], size=9)))
        for c in cmp_.get("curves", []):
            if c["D_F"] != f:
                continue
            for key, dash, label in (("power_law", "dash", "power law"), ("barnett", "dot", "Barnett")):
                if key in c:
                    fig.add_trace(go.Scatter(x=c["P"], y=c[key], mode="lines", name=f"{label}, D_F={f:,.0f}",
                                             line=dict(color=PALETTE[j % len(PALETTE)], dash=dash)))
    fig.update_layout(xaxis=dict(type="log", title="pretraining tokens P"),
                      yaxis=dict(type="log", title="effective data transferred D_T (tokens)"), height=420)
    page.figure(fig, "D_T of the budget axis's fine-tuning runs against their pretraining budget, with the fitted "
                     "power law (dashed) and the D_T that Barnett's fitted form implies through the scratch law "
                     "(dotted; it levels off where the transfer gap G dominates), to 4x the largest budget. Runs "
                     "with no positive D_T are not drawn.")
    page.table([{k: r[k] for k in ("P", "D_F", "loss", "D_T", "used")} for r in rows])
