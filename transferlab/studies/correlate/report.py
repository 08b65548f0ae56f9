"""The correlate study's page: heatmaps of cross-stage correlations, ranked tables, calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from transferlab.report import Page

_COLS = [f"{m}_{q}" for q in ("accuracy", "confidence") for m in ("spearman", "kendall", "pearson")]


def _v(x: Any) -> float:
    return float(x) if x is not None and np.isfinite(x) else float("nan")


def _ci(x: Any) -> str:
    if not x or not all(v is not None and np.isfinite(v) for v in x):
        return "—"
    return f"[{x[0]:.2f}, {x[1]:.2f}]"


def _heatmap(rows: Mapping[str, Mapping[str, Any]], title: str, cols: Sequence[str] = _COLS) -> go.Figure:
    names = list(rows)
    vals = [[_v(rows[n].get(c)) for c in cols] for n in names]
    z = [[None if np.isnan(v) else v for v in r] for r in vals]
    text = [["" if np.isnan(v) else f"{v:.2f}" for v in r] for r in vals]
    fig = go.Figure(go.Heatmap(z=z, x=list(cols), y=names, zmin=-1, zmax=1, colorscale="RdBu",
                               text=text, texttemplate="%{text}", colorbar={"title": "r"},
                               hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=max(300, 120 + 26 * len(names)), margin={"l": 160},
                      yaxis={"autorange": "reversed"})
    return fig


def _matrix_heatmap(names: Sequence[str], mat: np.ndarray, title: str) -> go.Figure:
    z = [[None if not np.isfinite(v) else float(v) for v in row] for row in mat]
    fig = go.Figure(go.Heatmap(z=z, x=list(names), y=list(names), zmin=-1, zmax=1, colorscale="RdBu",
                               colorbar={"title": "Spearman"}))
    fig.update_layout(title=title, height=max(350, 140 + 22 * len(names)), margin={"l": 160},
                      yaxis={"autorange": "reversed"})
    return fig


def _ranked_rows(rank: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"rank": r["rank"], "benchmark": r["benchmark"], "category": r["category"],
             "Spearman": r["spearman"], "95% interval": _ci(r["ci"]), "Kendall": r["kendall"],
             "Pearson": r["pearson"], "verdict": r["verdict"]} for r in rank]


def build_page(result: Mapping[str, Any], *, source: str, matrices: Mapping[str, tuple[list[str], np.ndarray]]
               ) -> Page:
    pre, post = result["stages"]
    s = result["settings"]
    page = Page("Cross-stage correlations", f"{source} · {result['n_models']} models · {pre} → {post}")
    page.text(
        f"Each cell is a correlation across models between a benchmark's score before ({pre}) and after "
        f"({post}) fine-tuning. Intervals: {int(s['ci'] * 100)}% percentile bootstrap over models, "
        f"{s['n_boot']} resamples. A benchmark is a reliable cross-stage predictor when Spearman ≥ "
        f"{s['reliable_threshold']} and its interval's lower end > 0."
    )
    for note in result.get("notes", []):
        page.text(note, cls="flag" if note.startswith("no confidence") else "note")
    page.heading("Per benchmark")
    page.figure(_heatmap(result["benchmarks"], "Cross-stage correlation per benchmark"),
                caption="accuracy and confidence (p(gold)); blank = undefined")
    page.heading("Per capability category")
    page.figure(_heatmap(result["categories"], "Cross-stage correlation per category"),
                caption="category score = mean over its benchmarks, per model")
    page.table([{"category": c, "benchmarks": ", ".join(v["benchmarks"]),
                 "Spearman acc": v.get("spearman_accuracy"), "interval": _ci(v.get("spearman_accuracy_ci")),
                 "Spearman conf": v.get("spearman_confidence"),
                 "interval ": _ci(v.get("spearman_confidence_ci"))} for c, v in result["categories"].items()])
    page.heading("Benchmarks ranked as cross-stage predictors (accuracy)")
    page.table(_ranked_rows(result["ranking_accuracy"]))
    page.heading("Benchmarks ranked as cross-stage predictors (confidence)")
    page.table(_ranked_rows(result["ranking_confidence"]))
    if result["by_scale"]:
        page.heading("Split by scale")
        scales = list(result["by_scale"])
        for q in ("accuracy", "confidence"):
            rows = {b: {sc: result["by_scale"][sc]["benchmarks"][b].get(f"spearman_{q}") for sc in scales}
                    for b in result["benchmarks"]}
            page.figure(_heatmap(rows, f"Spearman of {q} per scale", cols=scales),
                        caption="benchmarks × scale")
            crow = {c: {sc: result["by_scale"][sc]["categories"].get(c, {}).get(f"spearman_{q}")
                        for sc in scales} for c in result["categories"]}
            page.figure(_heatmap(crow, f"Spearman of {q} per category and scale", cols=scales),
                        caption="categories × scale")
    add_decisions(page, result)
    page.heading("Calibration")
    cal = result["calibration"]
    page.table(cal["per_model"],
               columns=["model", "stage", "mixture", "scale", "ece", "brier", "gap", "alignment",
                        "n_benchmarks_confidence"])
    page.text("ece/brier: pooled over docs of all benchmarks (from samples_*.jsonl; absent for a tidy CSV). "
              "gap: mean over benchmarks of confidence − accuracy. alignment: Pearson across benchmarks "
              "between accuracy and confidence. Both use only the benchmarks that have a confidence "
              "(n_benchmarks_confidence).")
    fig = _calibration_scatter(cal["per_model"], pre, post)
    if fig is not None:
        page.figure(fig, caption=f"each point is a model: its calibration in {pre} (x) and {post} (y)")
    if cal["transfer"]:
        page.table([{"metric": k, "Spearman pre→post": v["spearman"], "interval": _ci(v["spearman_ci"]),
                     "mean pre": v["mean_pre"], "mean post": v["mean_post"], "mean change": v["mean_change"]}
                    for k, v in cal["transfer"].items()])
    page.heading("Intra-category coherence")
    page.table([{"category": c, "benchmarks": len(v["benchmarks"]), pre: v.get(pre), post: v.get(post)}
                for c, v in result["coherence"].items()])
    for stage, (names, mat) in matrices.items():
        if len(names) >= 2:
            page.figure(_matrix_heatmap(names, mat, f"Benchmark × benchmark Spearman of accuracy ({stage})"),
                        caption="coherence: do benchmarks rank the models alike?")
    return page


def _da(x: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """(value, low, high) of one {value, ci} entry, NaN where absent."""
    if not x or x.get("value") is None:
        return float("nan"), float("nan"), float("nan")
    ci = x.get("ci") or [float("nan")] * 2
    return float(x["value"]), float(ci[0]), float(ci[1])


def decision_rows(result: Mapping[str, Any], key: str = "decision_accuracy") -> list[dict[str, Any]]:
    """One row per benchmark and comparison of sizes: decision accuracy of accuracy and of the continuous score."""
    rows = []
    for b, r in result["benchmarks"].items():
        d = r.get(key)
        if not d:
            continue
        for c in d["by_sizes"]:
            row: dict[str, Any] = {"benchmark": b, "sizes": f"{c['small']} → {c['target']}",
                                   "mixtures": len(c["mixtures"]), "pairs": c["n_pairs"]}
            for q in ("accuracy", "continuous"):
                v, lo, hi = _da(c.get(q))
                row[f"{q}"] = v
                row[f"{q} interval"] = _ci([lo, hi]) if np.isfinite(lo) else "—"
                row[f"{q} ties"] = (c.get(q) or {}).get("tied_pairs")
            rows.append(row)
    return rows


def decision_figure(result: Mapping[str, Any], key: str = "decision_accuracy") -> go.Figure | None:
    """Bars per benchmark: decision accuracy of accuracy and of the continuous score, smallest -> largest size,
    with their intervals over items; 0.5 is what a ranking by coin flips scores."""
    names = [b for b, r in result["benchmarks"].items() if r.get(key)]
    if not names:
        return None
    fig = go.Figure()
    for q, color in (("accuracy", "#1f77b4"), ("continuous", "#ff7f0e")):
        vals = [_da(result["benchmarks"][b][key].get(q)) for b in names]
        y = [None if not np.isfinite(v) else v for v, _, _ in vals]
        plus = [0 if not np.isfinite(hi) else hi - v for v, _, hi in vals]
        minus = [0 if not np.isfinite(lo) else v - lo for v, lo, _ in vals]
        fig.add_trace(go.Bar(x=names, y=y, name=q, marker_color=color,
                             error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                             hovertemplate="%{x} · " + q + ": %{y:.2f}<extra></extra>"))
    d0 = result["benchmarks"][names[0]][key]
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="coin-flip ranking")
    fig.update_layout(title=f"Decision accuracy, {d0['small']} → {d0['target']} ({d0['stage']})", barmode="group",
                      yaxis={"range": [0, 1.05], "title": "fraction of mixture pairs ranked as at the target"},
                      height=420)
    return fig


def add_decisions(page: Page, result: Mapping[str, Any]) -> None:
    """The decision-accuracy section: a figure of every benchmark and a table of every comparison of sizes."""
    dec = result.get("decision") or {}
    if not any(r.get("decision_accuracy") for r in result["benchmarks"].values()):
        return
    page.heading("Decisions across scale (DataDecide's decision accuracy)")
    page.text(
        f"Does the ranking of the pretraining mixtures at a small size predict their ranking at a larger one? "
        f"Decision accuracy is the fraction of pairs of mixtures that both sizes order the same way (a pair tied "
        f"at either size counts 1/2); 1 is the same ranking, 0 the reversed one, 0.5 a coin flip. Two scores "
        f"rank the mixtures: accuracy, and a continuous one, {dec.get('continuous', 'the gold log-probability')}. "
        f"Stage: {dec.get('stage')}; sizes, smallest first: {', '.join(map(str, dec.get('sizes', [])))}. "
        f"Intervals: {int(result['settings']['ci'] * 100)}% percentile bootstrap over the benchmark's items "
        f"(one draw for every model), {result['settings']['n_boot']} resamples; none where per-item scores are "
        "not available (a CSV).")
    fig = decision_figure(result)
    if fig is not None:
        page.figure(fig, caption="per benchmark, smallest → largest size; whiskers: the interval over items")
    page.table(decision_rows(result))
    post = decision_rows(result, "decision_accuracy_post")
    if post:
        page.text(f"The same after fine-tuning ({result['stages'][1]}): do the small fine-tuned models rank the "
                  "mixtures as the large fine-tuned ones do?")
        page.table(post)


def _calibration_scatter(rows: Sequence[Mapping[str, Any]], pre: str, post: str) -> go.Figure | None:
    by = {(r["model"], r["stage"]): r for r in rows}
    models = sorted({r["model"] for r in rows})
    key = "ece" if any(r["ece"] is not None for r in rows) else "gap"
    xs = [by.get((m, pre), {}).get(key) for m in models]
    ys = [by.get((m, post), {}).get(key) for m in models]
    pts = [(m, x, y) for m, x, y in zip(models, xs, ys) if x is not None and y is not None]
    if not pts:
        return None
    fig = go.Figure(go.Scatter(x=[p[1] for p in pts], y=[p[2] for p in pts], text=[p[0] for p in pts],
                               mode="markers+text", textposition="top center"))
    fig.update_layout(title=f"Calibration transfer ({key})", xaxis_title=f"{key} ({pre})",
                      yaxis_title=f"{key} ({post})", height=420)
    return fig


def write(result: Mapping[str, Any], path: str | Path, *, source: str,
          matrices: Mapping[str, tuple[list[str], np.ndarray]]) -> Path:
    return build_page(result, source=source, matrices=matrices).write(path)
