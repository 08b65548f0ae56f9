"""Figures and pages for the grokking study."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from transferlab.report import Page
from transferlab.report.png import line_png
from transferlab.store import Store
from transferlab.studies.grokking import analysis
from transferlab.studies.grokking.config import GrokConfig

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


PLASTICITY_PANELS = (("fisher_trace", "Fisher trace", "log"), ("grad_coherence", "gradient coherence α", "log"),
                     ("grad_noise_scale", "gradient noise scale", "log"), ("dormant_frac", "dormant units", "linear"),
                     ("feature_erank", "feature effective rank", "linear"))


def plasticity_figure(records: Sequence[dict[str, Any]]) -> go.Figure | None:
    """The engine's plasticity monitors over steps, one panel each, with the validation accuracy."""
    panels = [p for p in PLASTICITY_PANELS if any(r.get(p[0]) is not None for r in records)]
    if not panels:
        return None
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[p[1] for p in panels])
    for row, (key, name, scale) in enumerate(panels, start=1):
        x, y = _series(records, key)
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers"), row=row, col=1)
        fig.update_yaxes(type=scale, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    fig.update_layout(title="Plasticity and memorization monitors (per-sample gradients on a training probe)",
                      height=170 * len(panels) + 80, showlegend=False)
    return fig


def delay_law_figure(fit: analysis.DelayLawFit) -> go.Figure:
    fig = go.Figure(go.Scatter(x=fit.x, y=fit.delay, mode="markers", name="runs"))
    xs = sorted(fit.x)
    fig.add_trace(go.Scatter(x=xs, y=[fit.c * v + fit.intercept for v in xs], name=f"fit c={fit.c:.3g}"))
    fig.update_layout(title=f"Delay law: R²={fit.r2:.3f}, κ={fit.kappa:.3g}",
                      xaxis_title="log(‖θ_mem‖² / ‖θ_post‖²) / (lr · wd)", yaxis_title="T_grok − T_mem (steps)",
                      height=420)
    return fig


def write_group_report(cfg: GrokConfig, members: Sequence[Any], store: Store) -> Path:
    if len(members) == 1:
        path = store.run_dir("grokking", members[0].run_id) / "report.html"
    else:
        tag = hashlib.sha256("".join(m.run_id for m in members).encode()).hexdigest()[:12]
        path = store.root / "grokking" / "reports" / f"group-{tag}.html"
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
    page = Page(f"Grokking · {cfg.operation} mod {cfg.p}",
                f"{cfg.model}, train fraction {cfg.train_fraction}, {len(members)} member(s)")
    page.heading("Summary")
    agg: dict[str, Any] = {}
    for key in ("steps_to_memorize", "grok_onset", "steps_to_95", "steps_to_generalize", "final_val_acc"):
        st = analysis.mean_ci([m.summary.get(key) for m in members])
        agg[key] = (f"{st['mean']:.4g} (95% CI {st['ci'][0]:.4g} – {st['ci'][1]:.4g}; n={st['n']})"
                    if st["mean"] is not None else f"not reached by {st['missing']} member(s)")
    page.key_values(agg)
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
    page.key_values(cfg.to_dict())
    return page


def delay_law_from_trials(trials: Sequence[dict[str, Any]]) -> analysis.DelayLawFit | None:
    xs, ys = [], []
    for t in trials:
        if t.get("status") != "done" or not t.get("weight_decay"):
            continue
        if None in (t.get("steps_to_memorize"), t.get("steps_to_generalize"), t.get("norm_at_memorize"),
                    t.get("norm_at_generalize")):
            continue
        if t["norm_at_generalize"] >= t["norm_at_memorize"]:
            continue
        xs.append(analysis.delay_law_x(t["lr"], t["weight_decay"], t["norm_at_memorize"], t["norm_at_generalize"]))
        ys.append(t["steps_to_generalize"] - t["steps_to_memorize"])
    if len(xs) < 3:
        return None
    return analysis.fit_delay_law(xs, ys)


def write_sweep_report(result: dict[str, Any], store: Store) -> tuple[Path, analysis.DelayLawFit | None]:
    trials = result["trials"]
    page = Page(f"Sweep {result['sweep']}", f"{len(trials)} trials · grokking")
    page.heading("Trials")
    page.table(trials, columns=["run_id", "status", "seed", "lr", "weight_decay", "steps_to_memorize",
                                "steps_to_generalize", "final_val_acc", "error"])
    done = [t for t in trials if t.get("steps_to_generalize") is not None]
    if done:
        fig = go.Figure(go.Scatter(
            x=[t["lr"] * t["weight_decay"] for t in done], y=[t["steps_to_generalize"] for t in done],
            mode="markers", text=[t["run_id"] for t in done], name="trials"))
        fig.update_layout(title="Steps to 99% validation accuracy against lr × weight decay",
                          xaxis_type="log", yaxis_type="log", xaxis_title="lr × wd", yaxis_title="steps",
                          height=400)
        page.figure(fig)
    fit = delay_law_from_trials(trials)
    page.heading("Delay law")
    if fit is None:
        page.text("Fewer than 3 trials grokked with weight decay > 0: the delay law is not fitted.")
    else:
        page.figure(delay_law_figure(fit), "Each point is a run; the line is the least-squares fit through the "
                                           "origin (arXiv 2603.13331; κ as in arXiv 2605.18845).")
        page.key_values({"c (steps per unit x)": fit.c, "R²": fit.r2, "κ = 1/(2c)": fit.kappa,
                         "held-out MAPE (leave-one-out)": fit.heldout_mape, "runs": fit.n})
    from transferlab.store.run import Run

    runs = [{**t, "records": Run(store, "grokking", t["run_id"]).metrics()} for t in done if t["status"] == "done"]
    preds = analysis.early_predictions(runs)
    result["early_predictions"] = preds
    if preds:
        page.heading("Predicting T_grok early")
        page.text("Each run's T_grok predicted from its own weight-norm decay seen only halfway from memorization "
                  "to generalization, with the norm drop taken from the other runs of the sweep.")
        page.table(preds)
    path = store.root / "grokking" / "reports" / f"{result['sweep']}.html"
    page.write(path)
    return path, fit
