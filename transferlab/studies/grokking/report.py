"""Figures and pages for the grokking study."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from transferlab.report import Page
from transferlab.report.png import line_png
from transferlab.store import Store
from transferlab.studies.grokking import analysis
from transferlab.studies.grokking.config import GrokConfig
from transferlab.studies.grokking.study import GrokStudy
from transferlab.train.monitors import MONITORS, monitor_value

PHASE_COLORS = {"memorizing": "rgba(255,127,14,0.10)", "circuit formation": "rgba(148,103,189,0.12)",
                "generalized": "rgba(44,160,44,0.10)"}


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def phase_figure(records: Sequence[dict[str, Any]], title: str = "") -> go.Figure:
    """Training loss, validation loss and weight norm over steps in one view, phases shaded."""
    ph = analysis.detect_phases(records)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, name, color in (("train_loss", "train loss", "#1f77b4"), ("val_loss", "validation loss", "#d62728")):
        x, y = _series(records, key)
        fig.add_trace(go.Scatter(x=x, y=y, name=name, line={"color": color}), secondary_y=False)
    x, y = _series(records, "weight_norm_sq")
    fig.add_trace(go.Scatter(x=x, y=y, name="‖θ‖²", line={"color": "#555", "dash": "dot"}), secondary_y=True)
    last = records[-1]["step"] if records else 0
    for name, a, b in analysis.phase_spans(ph, last):
        if b > a:
            fig.add_vrect(x0=a, x1=b, fillcolor=PHASE_COLORS[name], line_width=0, annotation_text=name,
                          annotation_position="top left")
    if ph.grok_onset is not None:
        fig.add_vline(x=ph.grok_onset, line_dash="dash", line_color="#9467bd")
    fig.update_yaxes(type="log", title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="squared weight norm", secondary_y=True)
    fig.update_layout(title=title or "Phase transition", xaxis_title="step", hovermode="x unified", height=480)
    return fig


def accuracy_figure(members: Sequence[Any]) -> go.Figure:
    """Train and validation accuracy of every member: the spread over seeds."""
    fig = go.Figure()
    for m in members:
        label = f"seed {m.config['seed']} lr {m.config['lr']:g} wd {m.config['weight_decay']:g}"
        x, y = _series(m.records, "val_acc")
        fig.add_trace(go.Scatter(x=x, y=y, name=f"val · {label}", line={"width": 1.5}))
        x, y = _series(m.records, "train_acc")
        fig.add_trace(go.Scatter(x=x, y=y, name=f"train · {label}", line={"width": 1, "dash": "dot"},
                                 opacity=0.6))
    fig.update_layout(title="Accuracy over steps (each member)", xaxis_title="step", yaxis_title="accuracy",
                      height=420)
    return fig


def forecast_figure(members: Sequence[Any]) -> go.Figure | None:
    """Each member's forecast of its generalization step against the step it was made at (each from the rows up
    to then), with the step it did generalize at (dashed) and the no-hindsight diagonal."""
    fig = go.Figure()
    drawn = False
    for m in members:
        fcs = analysis.forecasts(m.records, m.config["lr"], m.config["weight_decay"], m.config.get("model", "mlp"),
                                 n=20)
        pts = [(f["made_at_step"], f["predicted_generalize_step"]) for f in fcs if f["predicted_generalize_step"]]
        if not pts:
            continue
        drawn = True
        label = f"seed {m.config['seed']} lr {m.config['lr']:g} wd {m.config['weight_decay']:g}"
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=f"forecast · {label}"))
        actual = m.summary.get("steps_to_generalize")
        if actual is not None:
            fig.add_hline(y=actual, line_dash="dash", line_color="#2ca02c", opacity=0.6)
    if not drawn:
        return None
    last = max((m.records[-1]["step"] for m in members if m.records), default=0)
    fig.add_trace(go.Scatter(x=[0, last], y=[0, last], mode="lines", name="made at = predicted",
                             line={"color": "#aaa", "dash": "dot"}))
    fig.update_layout(title="Forecast of the generalization step (dashed: where it generalized)",
                      xaxis_title="forecast made at step", yaxis_title="predicted 99% validation step", height=400)
    return fig


def collapse_figure(records: Sequence[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    for key, name in (("collapse_frac", "softmax-collapse fraction"), ("zero_loss_frac", "zero-loss fraction")):
        x, y = _series(records, key)
        fig.add_trace(go.Scatter(x=x, y=y, name=name))
    fig.update_layout(title="Numerical stability (Prieto et al. 2025)", xaxis_title="step",
                      yaxis_title="fraction of training samples", height=360)
    return fig


def progress_figure(records: Sequence[dict[str, Any]]) -> go.Figure | None:
    if not any("restricted_loss" in r for r in records):
        return None
    fig = go.Figure()
    for key, name in (("restricted_loss", "restricted loss (key frequencies only)"),
                      ("excluded_loss", "excluded loss (train, key frequencies removed)"),
                      ("train_loss", "train loss"), ("val_loss", "validation loss")):
        x, y = _series(records, key)
        fig.add_trace(go.Scatter(x=x, y=y, name=name))
    fig.update_yaxes(type="log")
    fig.update_layout(title="Progress measures (Nanda et al. 2023)", xaxis_title="step", yaxis_title="loss",
                      height=400)
    return fig


def plasticity_figure(records: Sequence[dict[str, Any]]) -> go.Figure | None:
    """The engine's monitors over steps: one panel for each row of the monitor table marked ``plot`` that
    the records hold, in table order."""
    panels = [m for m in MONITORS if m.plot and any(monitor_value(r, m.key) is not None for r in records)]
    if not panels:
        return None
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[m.label for m in panels])
    for row, m in enumerate(panels, start=1):
        pts = [(r["step"], monitor_value(r, m.key)) for r in records if monitor_value(r, m.key) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=m.label, mode="lines+markers"),
                      row=row, col=1)
        fig.update_yaxes(type=m.scale, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    fig.update_layout(title="Plasticity and memorization monitors (per-sample gradients on a training probe)",
                      height=170 * len(panels) + 80, showlegend=False)
    return fig


def delay_law_figure(law: analysis.DelayLaw) -> go.Figure:
    """Delay against the law's x: generalized trials as points, censored ones as upward triangles at their
    lower bound, the fitted line and the theory's c = 1/2."""
    fig = go.Figure()
    for censored, name, symbol in ((False, "generalized", "circle"), (True, "censored (not yet at the cap)",
                                                                       "triangle-up-open")):
        pts = [p for p in law.points if p["censored"] == censored]
        if pts:
            fig.add_trace(go.Scatter(
                x=[p["x"] for p in pts], y=[p["delay"] for p in pts], mode="markers", name=name,
                marker={"symbol": symbol, "size": 9},
                text=[f"{p['run_id']} lr {p['lr']:g} wd {p['weight_decay']:g}" for p in pts]))
    xs = sorted(p["x"] for p in law.points)
    if xs and law.constant is not None:
        fig.add_trace(go.Scatter(x=xs, y=[law.constant * v for v in xs], mode="lines",
                                 name=f"fit c = {law.constant:.3g}"))
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=[law.theory_constant * v for v in xs], mode="lines",
                                 line={"dash": "dot", "color": "#888"}, name="theory c = 1/2"))
    title = "Delay law" + (f": R² = {law.r2:.3f}" if law.r2 is not None else "")
    fig.update_layout(title=title,
                      xaxis_title="x = log(‖θ_mem‖² / ‖θ_post‖²) / (lr · wd), ‖θ_post‖² from the other trials",
                      yaxis_title="T_grok − T_mem (steps)", xaxis_type="log", yaxis_type="log", height=440)
    return fig


def clamp_figure(laws: list[tuple[dict[str, Any], analysis.ClampLaw]]) -> go.Figure:
    """Delay against the clamped ‖θ‖², one colour per group of trials: generalized trials as points, censored
    ones as upward triangles at their lower bound, and each group's fitted exponential."""
    fig = go.Figure()
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]
    for i, (group, law) in enumerate(laws):
        colour = palette[i % len(palette)]
        label = ", ".join(f"{k}={v}" for k, v in group.items()) or "trials"
        for censored, what, symbol in ((False, "generalized", "circle"), (True, "censored", "triangle-up-open")):
            pts = [p for p in law.points if p["censored"] == censored]
            if pts:
                fig.add_trace(go.Scatter(x=[p["rho"] for p in pts], y=[p["delay"] for p in pts], mode="markers",
                                         name=f"{label}: {what}", marker={"symbol": symbol, "size": 9,
                                                                          "color": colour},
                                         text=[f"{p['run_id']} seed {p['seed']}" for p in pts]))
        fitted = [p["rho"] for p in law.points if not p["censored"]]
        if law.alpha is not None and law.log_a is not None and fitted:
            xs = np.linspace(min(fitted), max(fitted), 50)
            fig.add_trace(go.Scatter(x=xs, y=np.exp(law.log_a + law.alpha * xs), mode="lines",
                                     line={"color": colour},
                                     name=f"{label}: alpha = {law.alpha:.3g}, R² = {law.r2:.3f}"))
    fig.update_layout(title="Delay under a clamped norm", xaxis_title="rho: ‖θ‖² held after every step",
                      yaxis_title="T_grok − T_mem (steps)", yaxis_type="log", height=440)
    return fig


def trial_curves_figure(trials: Sequence[dict[str, Any]]) -> go.Figure:
    """One curve per trial: validation accuracy (top) and ‖θ‖² (bottom) over steps, coloured by lr x wd."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=["validation accuracy", "squared weight norm ‖θ‖²"])
    gammas = [t["lr"] * t["weight_decay"] for t in trials]
    lo, hi = (min(gammas), max(gammas)) if gammas else (0, 1)
    # the other settings that differ between trials (operation, norm_clamp, layer_norm, ...) go in the labels
    varied = analysis.varied_settings(trials, ignore=("lr", "weight_decay"))
    for t in trials:
        rec = t.get("records") or []
        g = t["lr"] * t["weight_decay"]
        frac = 0.0 if hi <= lo or g <= 0 or lo <= 0 else (math.log(g) - math.log(lo)) / (math.log(hi) - math.log(lo))
        color = f"rgb({int(40 + 200 * frac)},{int(90 + 40 * (1 - frac))},{int(220 - 180 * frac)})"
        label = " ".join([f"lr {t['lr']:g} wd {t['weight_decay']:g} s{t.get('seed', 0)}",
                          *(f"{k}={t.get(k)}" for k in varied)])
        for row, key in ((1, "val_acc"), (2, "weight_norm_sq")):
            x, y = _series(rec, key)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=label, legendgroup=label, showlegend=row == 1,
                                     line={"color": color, "width": 1.4}), row=row, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title="Every trial (blue: small lr × wd, red: large)", height=640)
    return fig


def steps_vs_gamma_figure(trials: Sequence[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    gen = [t for t in trials if t.get("steps_to_generalize") is not None]
    cens = [t for t in trials if t.get("steps_to_generalize") is None and t.get("status") == "done"
            and t.get("weight_decay")]
    fig.add_trace(go.Scatter(x=[t["lr"] * t["weight_decay"] for t in gen], y=[t["steps_to_generalize"] for t in gen],
                             mode="markers", name="99% validation accuracy at", text=[t["run_id"] for t in gen]))
    fig.add_trace(go.Scatter(x=[t["lr"] * t["weight_decay"] for t in gen], y=[t["steps_to_memorize"] for t in gen],
                             mode="markers", marker={"symbol": "x"}, name="memorized at"))
    if cens:
        fig.add_trace(go.Scatter(x=[t["lr"] * t["weight_decay"] for t in cens], y=[t.get("last_step") for t in cens],
                                 mode="markers", marker={"symbol": "triangle-up-open", "size": 9},
                                 name="not generalized by (censored)", text=[t["run_id"] for t in cens]))
    fig.update_layout(title="Steps against γ_eff = lr × weight decay", xaxis_type="log", yaxis_type="log",
                      xaxis_title="lr × wd", yaxis_title="steps", height=420)
    return fig


def write_group_report(cfg: GrokConfig, members: Sequence[Any], store: Store) -> Path:
    if len(members) == 1:
        path = store.run_dir(GrokStudy.name, members[0].run_id) / "report.html"
    else:
        tag = hashlib.sha256("".join(m.run_id for m in members).encode()).hexdigest()[:12]
        path = store.root / GrokStudy.name / "reports" / f"group-{tag}.html"
    page = build_page(cfg, members)
    page.write(path)
    first = members[0].records
    if first:
        x1, y1 = _series(first, "train_loss")
        x2, y2 = _series(first, "val_loss")
        line_png(path.with_name(path.stem + "_phases.png"), [("train loss", x1, y1), ("validation loss", x2, y2)],
                 title="Grokking: loss over steps", xlabel="step", ylabel="loss", logy=True)
    return path


def build_page(cfg: GrokConfig, members: Sequence[Any]) -> Page:
    page = Page(f"Grokking · {cfg.task.operation} mod {cfg.task.p}",
                f"{cfg.model.kind}, train fraction {cfg.task.train_fraction}, {len(members)} member(s)")
    page.heading("Summary")
    agg: dict[str, Any] = {}
    for key in ("steps_to_memorize", "grok_onset", "steps_to_95", "steps_to_generalize", "final_val_acc"):
        st = analysis.mean_ci([m.summary.get(key) for m in members])
        agg[key] = (f"{st['mean']:.4g} (95% CI {st['ci'][0]:.4g} – {st['ci'][1]:.4g}; n={st['n']})"
                    if st["mean"] is not None else f"not reached by {st['missing']} member(s)")
    page.key_values(agg)
    diagnosed = [m for m in members if m.summary.get("diagnosis")]
    if diagnosed:
        page.heading("Why it did not generalize")
        for m in diagnosed:
            d = m.summary["diagnosis"]
            page.text(f"Seed {m.config['seed']} ({d['code']}): {d['message']}.")
    page.table([{"run": m.run_id, "seed": m.config["seed"], "lr": m.config["lr"],
                 "weight_decay": m.config["weight_decay"], "status": m.summary.get("status"),
                 "memorized at": m.summary.get("steps_to_memorize"),
                 "99% val at": m.summary.get("steps_to_generalize"),
                 "final val acc": m.summary.get("final_val_acc")} for m in members])
    if members and members[0].records:
        rec = members[0].records
        page.heading("Phase transition")
        page.figure(phase_figure(rec, f"Phase transition (seed {members[0].config['seed']})"),
                    "Memorization first (train loss falls, validation loss stays high), then the weight norm "
                    "decays and the validation loss collapses: circuit formation, then generalization.")
        page.heading("Spread over members")
        page.figure(accuracy_figure(members))
        fc = forecast_figure(members)
        if fc is not None:
            page.heading("Forecast")
            page.figure(fc, "From the rows logged up to each point only: the delay law's K/(lr·wd) after the "
                            "memorization step, blended with where the ILDR (inter/intra-class distance ratio "
                            "of the readout's representation on validation pairs, arXiv 2604.20923) reaches its "
                            "level at generalization as it climbs; 'never' when neither the norm nor the ILDR moves "
                            "(analysis.forecast_generalization). `grok --json` carries them as `forecasts`.")
        page.heading("Numerical stability")
        page.figure(collapse_figure(rec))
        prog = progress_figure(rec)
        if prog is not None:
            page.heading("Progress measures")
            freqs = next((r["key_freqs"] for r in reversed(rec) if "key_freqs" in r), [])
            page.figure(prog, "Restricted loss keeps only the key Fourier frequencies of the logits (the "
                              f"{len(freqs)} strongest in the token embedding, now {freqs}); excluded loss removes "
                              "them (evaluated on the training set). These measures are Nanda et al.'s for their "
                              "1-layer transformer; an x² MLP spreads its solution over many frequencies (Gromov "
                              "2023), so its restricted loss need not fall.")
        plast = plasticity_figure(rec)
        if plast is not None:
            page.heading("Plasticity monitors")
            page.figure(plast, "Logged by the engine every monitor_every evaluations. Gradient coherence "
                               "(Chatterjee & Zielinski) is |E g|² / E|g|² over per-sample gradients of the "
                               "training probe: low while examples pull in unrelated directions (memorization), "
                               "higher when they share directions. The noise scale is tr Σ / |G|² (McCandlish et "
                               "al.); dormant units are τ = 0.025 (Sokar et al.).")
    page.heading("Configuration")
    page.key_values(cfg.flat())
    return page


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _pct_n(v: dict[str, Any] | None) -> str:
    return "—" if not v else f"{100 * v['mape']:.1f}% ({v['n']})"


def _form_row(name: str, v: dict[str, Any]) -> dict[str, Any]:
    ci = v.get("mape_heldout_ci") or [None, None]
    cc = v.get("constant_ci") or [None, None]
    const = v.get("constant")
    by_arch = v.get("constant_by_architecture") or {}
    return {"form": f"{name}: {v['form']}", "calibrated on": v.get("calibration", ""),
            "held-out MAPE [95% CI]": f"{_pct(v.get('mape_heldout'))} [{_pct(ci[0])}, {_pct(ci[1])}]",
            "held-out runs": v.get("n_heldout"),
            "constant [95% CI]": "—" if const is None else (
                f"{v.get('constant_name', '')} = {const:.3g} [{'—' if cc[0] is None else f'{cc[0]:.3g}'}, "
                f"{'—' if cc[1] is None else f'{cc[1]:.3g}'}]"
                + ("; " + ", ".join(f"{a}: {k:.3g}" for a, k in by_arch.items()) if by_arch else "")),
            "theory": "none" if v.get("theory_constant") is None else v["theory_constant"],
            "LOO MAPE (all)": _pct(v.get("mape_loo")),
            "parameters (all trials)": ", ".join(f"{k} = {x:.4g}" for k, x in v["params"].items())}


def write_sweep_report(result: dict[str, Any], store: Store) -> tuple[Path, analysis.DelayLaw]:
    from transferlab.store.run import Run

    trials = result["trials"]
    for t in trials:
        t.setdefault("records", Run(store, GrokStudy.name, t["run_id"]).metrics() if t.get("status") else [])
    law = analysis.delay_law(trials)
    page = Page(f"Sweep {result['sweep']}", f"{len(trials)} trials · grokking")
    page.heading("Trials")
    page.table([{k: v for k, v in t.items() if k != "records"} for t in trials],
               columns=["run_id", "status", *[k for k in ("model", "operation") if any(k in t for t in trials)],
                        "seed", "lr", "weight_decay", "steps_to_memorize", "steps_to_generalize", "last_step",
                        "final_val_acc", "error"])
    page.figure(trial_curves_figure(trials))
    page.figure(steps_vs_gamma_figure(trials))
    all_clamped = bool(trials) and all(t.get("norm_clamp") not in (None, "none") for t in trials)
    if all_clamped:  # the delay law needs a norm that decays; the JSON keeps its verdict (every trial excluded)
        page.text("Every trial clamped its norm, so the delay law (which needs the norm to decay) does not apply "
                  "here: see “Clamping the norm”.")
    else:
        page.heading("Delay law")
        page.text("T_grok − T_mem = c · log(‖θ_mem‖² / ‖θ_post‖²) / (lr · wd) (arXiv 2603.13331; κ = 1/(2c) in "
                  "arXiv 2605.18845). ‖θ_post‖² for each trial is the geometric mean of the other generalized trials' "
                  "norms at generalization, not its own; trials not generalized by their last step are censored "
                  "(their delay only has a lower bound) and fitted as such. Weight decay alone gives c = 1/2.")
        mixed = [k for k in ("model", "operation") if len({t.get(k) for t in trials}) > 1]
        if mixed and law.forms:
            page.text(f"This one fit pools trials of every {' and '.join(mixed)} with one c and one ‖θ_post‖² "
                      "reference, so its R² and errors mix them; the held-out comparison below calibrates "
                      "per architecture and takes ‖θ_post‖² per architecture and operation.")
        if law.points:
            page.figure(delay_law_figure(law))
        if law.constant is None:
            page.text(f"Not fitted: {law.why_not}.")
        else:
            page.key_values({
                "c (fitted, 95% interval)": f"{law.constant:.3g} [{law.constant_ci[0]:.3g}, {law.constant_ci[1]:.3g}] "
                                            f"(theory: {law.theory_constant})",
                "R² (generalized trials)": law.r2, "leave-one-out MAPE": law.mape_loo,
                "held-out MAPE": ("n/a" if law.mape_heldout is None else f"{law.mape_heldout:.3f}")
                                 + f" ({law.heldout_rule})",
                "trials used / censored": f"{law.n_used} / {law.n_censored}",
                "spread of log ‖θ_post‖² across trials (sd)": law.log_norm_post_sd})
        if law.forms:
            page.heading("The law against other forms, held out")
            page.text("Each form is calibrated on a stated set and predicts every other generalized trial (censored "
                      "trials left out): the law, the affine form, the decay rate alone and the power form by least "
                      "squares on the relative error (the power form on log delays) over seed 0's trials (V_post per "
                      "architecture and operation from them; constants per architecture); arXiv 2605.18845's "
                      "first-passage form on one cell per architecture, as the paper does. The power form is no "
                      "law: its exponents say how far the delay departs from 1/(lr·wd). The "
                      "held-out MAPE's interval is a bootstrap over the held-out trials; the constant's, over the "
                      "calibration trials. Goal: ≤ 15% on ≥ 26 held-out runs across architectures and operations "
                      "(the paper: 17.7% on 26).")
            page.table([_form_row(name, v) for name, v in law.forms.items()],
                       columns=["form", "calibrated on", "held-out MAPE [95% CI]", "held-out runs", "constant [95% CI]",
                                "theory", "LOO MAPE (all)", "parameters (all trials)"])
            fl = law.seed_floor
            if fl:
                page.text(
                    f"How much no form can predict: {fl['n_cells']} cells (every setting the same but the seed) had "
                    f"≥ 2 seeds generalize; their delays differ {fl['median_spread']:.2g}x between seeds at the "
                    f"median cell, {fl['max_spread']:.2g}x at most. A form of the settings gives one prediction per "
                    f"cell, so its mean relative error on those {fl['n_trials']} trials is at least "
                    f"{_pct(fl['mape_floor'])} ("
                    + ", ".join(f"{a}: {_pct(v['mape_floor'])} on {v['n']}" for a, v in fl["by_architecture"].items())
                    + "), whatever it is calibrated on. The held-out MAPEs above are on seed 1's trials only, so "
                      "this is their scale, not a strict bound.")
            archs = sorted({a for v in law.forms.values() for a in v.get("by_architecture", {})})
            ops = sorted({o for v in law.forms.values() for o in v.get("by_operation", {})})
            if len(archs) > 1 or len(ops) > 1:
                page.heading("Held-out MAPE per architecture and per operation")
                page.table([{"form": name, **{f"{k} (n)": _pct_n(v.get(grp, {}).get(k))
                                              for grp, keys in (("by_architecture", archs), ("by_operation", ops))
                                              for k in keys}} for name, v in law.forms.items()],
                           columns=["form", *[f"{k} (n)" for k in archs], *[f"{k} (n)" for k in ops]])
        if law.excluded:
            page.heading("Excluded trials")
            page.table(law.excluded)
    laws = analysis.clamp_laws(trials)
    if laws:
        result["norm_clamp_law"] = {**laws[0][1].as_dict(), "group": laws[0][0]} if len(laws) == 1 else {
            "groups": [{**law.as_dict(), "group": group} for group, law in laws]}
        page.heading("Clamping the norm")
        page.text("The causal test of the norm account: ‖θ‖² held fixed after every step (`norm_clamp`). Held at its "
                  "value at memorization, the norm cannot fall, and grokking should not happen within the budget "
                  "(arXiv 2605.18845: 0 of 6 runs); held at a range of values, the delay should grow as "
                  "exp(alpha·rho) (arXiv 2606.13753), and a final LayerNorm should remove that dependence. "
                  "Trials that differ in other swept keys (say layer_norm) are fitted apart. Trials not generalized "
                  "by their last step are censored: drawn as triangles at their lower bound, not fitted.")
        if any(law.points for _, law in laws):
            page.figure(clamp_figure(laws))
        page.table([{"trials": ", ".join(f"{k}={v}" for k, v in group.items()) or "all",
                     "alpha (per unit of ‖θ‖²)": law.alpha, "R² (log delay)": law.r2,
                     "fitted / censored": f"{law.n_used} / {law.n_censored}",
                     "clamped at memorization: generalized / trials": (
                         f"{law.memorization['generalized']} / {law.memorization['trials']}"
                         if law.memorization else "—"),
                     "not fitted": law.why_not or ""} for group, law in laws])
    done = [t for t in trials if t.get("steps_to_generalize") is not None and t.get("status") == "done"
            and t.get("norm_clamp") in (None, "none")]  # a clamped norm does not decay: nothing to predict from
    preds = analysis.early_predictions(done)
    result["early_predictions"] = preds
    if preds:
        page.heading("Predicting T_grok early")
        page.text("Each run's T_grok predicted from its own weight-norm decay seen only halfway from memorization "
                  "to generalization, with the norm drop taken from the other runs of the sweep (mean absolute "
                  f"error {100 * sum(p['abs_pct_error'] for p in preds) / len(preds):.1f}% over {len(preds)} runs).")
        page.table(preds)
    seeds = sorted({t.get("seed") for t in done}, key=lambda v: (v is None, v))
    if len(seeds) > 1 and any(r.get("ildr") for t in done for r in (t.get("records") or [])[-1:]):
        cal = analysis.calibrate_forecast([t for t in done if t.get("seed") == seeds[0]])
        fc = analysis.forecast_errors([t for t in done if t.get("seed") != seeds[0]], calibration=cal or None)
        result["forecast"] = {"calibrated_on_seed": seeds[0], "calibration": cal, **fc}
        consts = ", ".join(f"{a}: K {c['k']:.3g}, ILDR rise {c['ildr_rise']:.3g}" for a, c in cal.items())
        page.heading("The forecast, held out")
        page.text(f"The forecast of each run's generalization step (analysis.forecast_generalization: the law's "
                  f"K/(lr·wd) blended with the ILDR's climb), its constants calibrated on seed {seeds[0]}'s runs "
                  f"({consts}), "
                  "made from each other run's rows up to 25% and 50% of its own T_grok. Median absolute relative "
                  f"error at 25%: {_pct(fc['median_abs_rel_error_at_0.25'])} ({fc['n_forecast_at_0.25']} runs), at "
                  f"50%: {_pct(fc['median_abs_rel_error_at_0.5'])} ({fc['n_forecast_at_0.5']} runs); a run not yet "
                  "memorized at the point has no forecast. Goal: ≤ 20% at 50%. Per architecture: "
                  + "; ".join(f"{a}: {_pct(d['median_abs_rel_error_at_0.25'])} ({d['n_forecast_at_0.25']}) at 25%, "
                              f"{_pct(d['median_abs_rel_error_at_0.5'])} ({d['n_forecast_at_0.5']}) at 50%"
                              for a, d in fc["by_architecture"].items()) + ".")
        page.table(fc["runs"])
    path = store.root / GrokStudy.name / "reports" / f"{result['sweep']}.html"
    page.write(path)
    for t in trials:
        t.pop("records", None)
    return path, law
