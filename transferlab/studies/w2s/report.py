"""The weak-to-strong report: PGR per loss with CIs, accuracy against the ceiling, PGR against the size
gap, agreement, gold accuracy over training, paired tests between losses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from transferlab.report import Page


def _err(d: dict[str, float]) -> tuple[float, float, float]:
    v, lo, hi = d["value"], d["lo"], d["hi"]
    if lo != lo or hi != hi or v != v:
        return v, 0.0, 0.0
    return v, hi - v, v - lo


def pgr_figure(summary: dict[str, Any]) -> go.Figure:
    names = list(summary["losses"])
    vals = [_err(summary["losses"][m]["pgr"]) for m in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[v[0] for v in vals],
            name="PGR",
            error_y={"type": "data", "array": [v[1] for v in vals], "arrayminus": [v[2] for v in vals]},
        )
    )
    fig.add_hline(y=0, line_dash="dot")
    fig.add_hline(y=1, line_dash="dot", annotation_text="ceiling")
    fig.update_layout(
        title="Performance gap recovered per loss (95% bootstrap CI over seeds)",
        yaxis_title="PGR",
        height=400,
    )
    return fig


def accuracy_figure(summary: dict[str, Any]) -> go.Figure:
    names = list(summary["losses"])
    fig = go.Figure()
    for key, label in (("weak_acc", "weak (floor)"), ("student_acc", "student"), ("ceiling_acc", "ceiling")):
        vals = [_err(summary["losses"][m][key]) for m in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[v[0] for v in vals],
                name=label,
                error_y={"type": "data", "array": [v[1] for v in vals], "arrayminus": [v[2] for v in vals]},
            )
        )
    lo = min(min(summary["weak"]["acc_per_seed"]), 1.0)
    fig.update_layout(
        barmode="group",
        title="Test accuracy: floor, student, ceiling (95% t-interval)",
        yaxis={"title": "gold test accuracy", "range": [max(0.0, lo - 0.1), 1.0]},
        height=400,
    )
    return fig


def agreement_figure(summary: dict[str, Any]) -> go.Figure:
    names = [m for m in summary["losses"] if "agreement" in summary["losses"][m]]
    vals = [_err(summary["losses"][m]["agreement"]) for m in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[v[0] for v in vals],
            name="agreement",
            error_y={"type": "data", "array": [v[1] for v in vals], "arrayminus": [v[2] for v in vals]},
        )
    )
    fig.update_layout(
        title="Student-supervisor agreement on the test split", yaxis_title="agreement", height=380
    )
    return fig


def curves_figure(summary: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for m, d in summary["losses"].items():
        c = d.get("curve", {})
        if c and c.get("step"):
            fig.add_trace(go.Scatter(x=c["step"], y=c["mean"], mode="lines", name=m))
    c = summary["ceiling"].get("curve", {})
    if c and c.get("step"):
        fig.add_trace(
            go.Scatter(x=c["step"], y=c["mean"], mode="lines", name="ceiling", line={"dash": "dash"})
        )
    w = summary["weak"]["acc_per_seed"]
    fig.add_hline(y=sum(w) / len(w), line_dash="dot", annotation_text="weak")
    fig.update_layout(
        title="Gold test accuracy over training (mean over seeds; never used for selection)",
        xaxis_title="step",
        yaxis_title="gold accuracy",
        height=420,
    )
    return fig


def sweep_figure(summary: dict[str, Any]) -> go.Figure | None:
    sweep = summary.get("sweep") or []
    if not sweep:
        return None
    if "param_ratio" in sweep[0]:
        return _pair_sweep_figure(sweep)
    vals = [_err(r["pgr"]) for r in sweep]
    fig = go.Figure(
        go.Scatter(
            x=[r["layer_gap"] for r in sweep],
            y=[v[0] for v in vals],
            mode="lines+markers",
            text=[r["weak_view"] for r in sweep],
            name="xent",
            error_y={"type": "data", "array": [v[1] for v in vals], "arrayminus": [v[2] for v in vals]},
        )
    )
    fig.update_layout(
        title="PGR against the weak-strong layer gap (naive xent student)",
        xaxis_title="layer gap (strong layer - weak layer)",
        yaxis_title="PGR",
        height=380,
    )
    return fig


def _pair_sweep_figure(sweep: list[dict[str, Any]]) -> go.Figure:
    """Model ladders (zoo or local causal LMs): one line per strong model, x = strong / weak parameters."""
    fig = go.Figure()
    for strong in dict.fromkeys(r["strong_view"] for r in sweep):
        rows = sorted((r for r in sweep if r["strong_view"] == strong), key=lambda r: r["param_ratio"])
        vals = [_err(r["pgr"]) for r in rows]
        fig.add_trace(
            go.Scatter(
                x=[r["param_ratio"] for r in rows],
                y=[v[0] for v in vals],
                mode="lines+markers",
                text=[f"{r['weak_view']} -> {strong}" for r in rows],
                name=f"strong {strong}",
                error_y={"type": "data", "array": [v[1] for v in vals], "arrayminus": [v[2] for v in vals]},
            )
        )
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(
        title="PGR against the weak-strong size gap (naive xent student, every smaller weak / larger strong)",
        xaxis={"title": "strong / weak non-embedding parameters", "type": "log"},
        yaxis_title="PGR",
        height=400,
    )
    return fig


def _sweep_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "weak": r["weak_view"],
            "strong": r["strong_view"],
            "params ratio": f"{r['param_ratio']:.2f}",
            "weak_acc": _fmt(r["weak_acc"]),
            "student_acc": _fmt(r["student_acc"]),
            "ceiling_acc": _fmt(r["ceiling_acc"]),
            "pgr": _fmt(r["pgr"]),
        }
        for r in summary.get("sweep") or []
        if "param_ratio" in r
    ]


def _fmt(d: dict[str, float]) -> str:
    v, lo, hi = d["value"], d["lo"], d["hi"]
    if v != v:
        return "undefined"
    if lo != lo:
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


ICL_KEEPS = (
    "What the miniature keeps of Somerstep et al.: a latent concept prior learned in pretraining (a Llama decoder "
    "trained on sequences of (x, c(x)) pairs, c drawn from a prior over sparse parities); a weak supervisor that "
    "is biased, not noisy (its errors are a fixed set of inputs); naive fine-tuning of the strong model on the weak "
    "labels; refinement as in the paper: the strong model reads k weakly labelled examples in its prompt and its "
    "next-token probabilities over the label words give the refined label (sampled by default); a student "
    "fine-tuned on the refined labels; misalignment as the total-variation distance to the target concept's label "
    "distribution, against k. What it drops: language and real LLMs (the concepts are 42 boolean functions, a "
    "labelled example is one token, so the label words of an input x are its two tokens x -> 0 and x -> 1, and the "
    "student can memorize a 2^d-row table); the paper's persona, math and explanation tasks "
    "and its LLM judges; its theorem's constants (the fitted rate is an empirical decay, not its bound)."
)


def refinement_figure(summary: dict[str, Any]) -> go.Figure:
    """Misalignment of the refined labels (and of the students trained on them) against the refinement batch
    size k, with the fitted exponential and the naive student's level."""
    ref = summary["refinement"]
    ks = [r["k"] for r in ref["per_k"]]
    fig = go.Figure()
    for key, label in (("misalignment", "refined labels"), ("student_misalignment", "student on refined labels"),
                       ("bayes_misalignment", "Bayes predictor of the prior (same demonstrations)")):
        if key not in ref["per_k"][0]:
            continue
        vals = [_err(r[key]) for r in ref["per_k"]]
        fig.add_trace(go.Scatter(x=ks, y=[v[0] for v in vals], mode="lines+markers", name=label,
                                 error_y={"type": "data", "array": [v[1] for v in vals],
                                          "arrayminus": [v[2] for v in vals]}))
    fit = ref.get("fit") or {}
    if fit.get("decay_rate") == fit.get("decay_rate") and fit.get("amplitude") == fit.get("amplitude"):
        import math

        grid = [ks[0] + i * (ks[-1] - ks[0]) / 60 for i in range(61)]
        fig.add_trace(go.Scatter(x=grid, y=[fit["amplitude"] * math.exp(-fit["decay_rate"] * k) for k in grid],
                                 mode="lines", line={"dash": "dash"},
                                 name=f"fit A·exp(-r k): r = {fit['decay_rate']:.3f}, R² = {fit['r2']:.3f}"))
    for key, label, dash in (("naive_misalignment", "student of naive fine-tuning on weak labels", "dot"),
                             ("weak_misalignment", "weak labels", "dashdot")):
        if ref.get(key):  # a level as a trace (hline annotations land off the line on a log axis)
            fig.add_trace(go.Scatter(x=[ks[0], ks[-1]], y=[ref[key]["value"]] * 2, mode="lines", name=label,
                                     line={"dash": dash, "color": "black"}))
    fig.update_layout(title="Misalignment against the refinement batch size k (mean over seeds, 95% t-interval; "
                            "an exponential is a straight line here)",
                      xaxis={"title": "k (weakly labelled demonstrations in the prompt)"},
                      yaxis={"title": "misalignment (TV to the target concept)", "type": "log"}, height=440)
    return fig


def refinement_section(page: Page, summary: dict[str, Any]) -> None:
    ref = summary["refinement"]
    page.heading("Refinement by in-context learning (Somerstep et al.)").figure(
        refinement_figure(summary),
        "misalignment: the total-variation distance between a label distribution and the target concept's "
        "(1 - noise on c*(x)), averaged over examples; the line is the exponential fitted to the mean curve")
    rows = [{"k": r["k"], "misalignment": _fmt(r["misalignment"]),
             "Bayes misalignment": _fmt(r["bayes_misalignment"]) if "bayes_misalignment" in r else None,
             "student misalignment": _fmt(r["student_misalignment"]), "student_acc": _fmt(r["student_acc"]),
             "pgr": _fmt(r["pgr"])} for r in ref["per_k"]]
    if ref.get("naive_pgr"):
        rows.append({"k": "naive (weak labels)", "misalignment": _fmt(ref["weak_misalignment"]),
                     "Bayes misalignment": None,
                     "student misalignment": _fmt(ref["naive_misalignment"]),
                     "student_acc": _fmt(summary["losses"]["xent"]["student_acc"]) if "xent" in summary["losses"]
                     else None, "pgr": _fmt(ref["naive_pgr"])})
    page.table(rows)
    info = summary.get("icl_model") or {}
    bayes = ref.get("bayes_fit") or {}
    page.key_values({"decay rate r (per demonstration)": ref["decay_rate"], "R² (log scale)": ref["r2"],
                     "Bayes predictor's decay rate (R²)": f"{bayes.get('decay_rate', float('nan')):.4f} "
                     f"({bayes.get('r2', float('nan')):.4f})",
                     "labels": f"{ref.get('read')} (from the next-token probabilities over the label words)",
                     "in-context model": f"{info.get('concepts')} concepts over {info.get('bits')} bits, "
                     f"{info.get('pretrain_steps')} pretraining steps, "
                     f"{'reused from the store' if info.get('reused') else 'pretrained in this run'}"})
    page.text(ICL_KEEPS)


def build_page(summary: dict[str, Any]) -> Page:
    page = Page(
        f"Weak-to-strong: {summary['task']}",
        f"{summary.get('task_description', '')} · {summary['seeds']} seeds · "
        f"{summary['n_examples']} examples",
    )
    page.heading("PGR per loss").figure(pgr_figure(summary), "PGR = (student - weak) / (ceiling - weak)")
    rows = []
    for m, d in summary["losses"].items():
        rows.append(
            {
                "loss": m,
                "weak_acc": _fmt(d["weak_acc"]),
                "student_acc": _fmt(d["student_acc"]),
                "ceiling_acc": _fmt(d["ceiling_acc"]),
                "pgr": _fmt(d["pgr"]),
                "agreement": _fmt(d["agreement"]) if "agreement" in d else None,
                "misfit": _fmt(d["misfit"]) if "misfit" in d else None,
                "ece": _fmt(d["ece"]) if "ece" in d else None,
                "auroc": _fmt(d["auroc"]) if "auroc" in d else None,
            }
        )
    page.table(rows)
    if summary.get("refinement"):
        refinement_section(page, summary)
    page.heading("Accuracy against the ceiling").figure(accuracy_figure(summary))
    page.heading("Agreement").figure(
        agreement_figure(summary),
        "how often the student picks the supervisor's class; misfit in the table above",
    )
    page.heading("Gold accuracy over training").figure(curves_figure(summary))
    fig = sweep_figure(summary)
    if fig is not None:
        page.heading("PGR against the size gap").figure(fig)
        rows = _sweep_rows(summary)
        if rows:
            page.table(rows)
            page.key_values(
                {
                    name: f"{m.get('zoo_name') or m.get('encoder')} ({m['non_embedding_params']:,} params)"
                    for name, m in (summary.get("models") or {}).items()
                }
            )
    page.heading("Paired tests between losses (across seeds)")
    page.table(
        [
            {k: r[k] for k in ("a", "b", "n", "mean_diff", "t_p", "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm")}
            for r in summary["paired_tests"]
        ]
    )
    page.text(
        "Student accuracies are paired by seed (same splits, weak labels and initialization). "
        "With few seeds the Wilcoxon test cannot reach small p-values (n=5: p >= 0.0625). The *_holm columns "
        "are Holm-adjusted over all the pairs shown, for reading several comparisons at once."
    )
    page.heading("Floor and ceiling").key_values(
        {
            "weak AUROC": summary["weak"]["auroc"],
            "weak ECE": summary["weak"]["ece"],
            "ceiling AUROC": summary["ceiling"]["auroc"],
            "ceiling ECE": summary["ceiling"]["ece"],
        }
    )
    return page


def write_report(summary: dict[str, Any], path: str | Path) -> Path:
    return build_page(summary).write(path)


def write_multi_task_report(summaries: list[dict], pooled: list[dict], store) -> Path:
    """PGR per loss for each task, and the paired tests pooled across tasks and seeds."""
    import hashlib

    tasks = [s["task"] for s in summaries]
    page = Page("Weak-to-strong across tasks", ", ".join(tasks))
    fig = go.Figure()
    for s in summaries:
        names = list(s["losses"])
        vals = [s["losses"][m]["pgr"]["value"] for m in names]
        fig.add_trace(go.Bar(name=s["task"], x=names, y=vals))
    fig.update_layout(barmode="group", title="PGR per loss and task", yaxis_title="PGR", height=420)
    page.heading("PGR per loss and task").figure(fig)
    page.heading("Paired tests between losses, pooled across tasks and seeds")
    cols = ("a", "b", "n", "mean_diff", "t_p", "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm")
    page.table([{k: r[k] for k in cols} for r in pooled])
    tag = hashlib.sha256(",".join(s.get("run_dir") or s["task"] for s in summaries).encode()).hexdigest()[:12]
    return page.write(Path(store.root) / "w2s" / "reports" / f"tasks-{tag}.html")
