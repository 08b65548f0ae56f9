"""The sweep page of any study: every trial in a table, and each trial metric against each swept key.

Grokking has its own page (trial curves and the delay law, ``studies/grokking/report.py``); every other study
gets this one. It lives in the store as ``<store>/<study>/reports/<sweep>.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from transferlab.report.html import Page
from transferlab.store import Store

MAX_FIGURES = 12


def _numeric(trials: list[dict[str, Any]], key: str) -> bool:
    vals = [t.get(key) for t in trials]
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def metric_keys(trials: list[dict[str, Any]], swept: list[str]) -> list[str]:
    skip = {"run_id", "status", "error", "seed", *swept}
    keys: list[str] = []
    for t in trials:
        for k in t:
            if k not in skip and k not in keys and _numeric(trials, k):
                keys.append(k)
    return keys


def write_generic_sweep_report(result: dict[str, Any], store: Store, swept: list[str], study_name: str) -> Path:
    trials = result["trials"]
    metrics = metric_keys(trials, swept)
    page = Page(f"Sweep {result['sweep']}", f"{len(trials)} trials · {result['study']}")
    page.heading("Trials")
    page.table(trials, columns=["run_id", "status", *swept, *(["seed"] if any("seed" in t for t in trials) else []),
                                *metrics, "error"])
    page.heading("Each metric against each swept key")
    page.text("One point per trial; trials that did not finish are left out. The figures are the sweep's own "
              "trials, compared with one another, not with a paper's number.")
    n = 0
    for key in swept:
        xs_numeric = _numeric(trials, key)
        for m in metrics:
            if n >= MAX_FIGURES:
                break
            pts = [(t.get(key), t.get(m), t["run_id"]) for t in trials
                   if t.get("status") == "done" and t.get(m) is not None]
            if not pts:
                continue
            fig = go.Figure(go.Scatter(x=[p[0] if xs_numeric else str(p[0]) for p in pts], y=[p[1] for p in pts],
                                       mode="markers", marker={"size": 9}, text=[p[2] for p in pts],
                                       hovertemplate=f"{key}=%{{x}}<br>{m}=%{{y}}<br>%{{text}}<extra></extra>"))
            positive = xs_numeric and all(isinstance(p[0], (int, float)) and p[0] > 0 for p in pts)
            spread = positive and max(p[0] for p in pts) / min(p[0] for p in pts) >= 20
            fig.update_layout(title=f"{m} against {key}", xaxis_title=key, yaxis_title=m, height=360,
                              xaxis_type="log" if spread else None)
            page.figure(fig)
            n += 1
    if n == 0:
        page.text("No finished trial has a numeric metric to draw.", cls="flag")
    path = Path(store.root) / study_name / "reports" / f"{result['sweep']}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    return page.write(path)
