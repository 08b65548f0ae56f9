"""The EFT report: per-token component log-probs, and where the fine-tuning delta changed the argmax."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from transferlab.eft.results import TokenInfo
from transferlab.report import Page

MAX_SEQUENCES = 8


def _figure(tokens: Sequence[TokenInfo], title: str) -> go.Figure:
    x = list(range(1, len(tokens) + 1))
    labels = [f"{i}: {t.text!r}" for i, t in zip(x, tokens)]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[t.eft_logprob for t in tokens],
            name="EFT",
            mode="lines+markers",
            text=labels,
            line={"width": 3},
        )
    )
    fig.add_trace(
        go.Scatter(x=x, y=[t.base_logprob for t in tokens], name="base", mode="lines+markers", text=labels)
    )
    n_pairs = len(tokens[0].ft_logprob) if tokens else 0
    for i in range(n_pairs):
        sfx = "" if n_pairs == 1 else f" {i + 1}"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[t.ft_logprob[i] for t in tokens],
                name=f"ft{sfx}",
                mode="lines+markers",
                text=labels,
                line={"dash": "dot"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[t.ref_logprob[i] for t in tokens],
                name=f"ref{sfx}",
                mode="lines+markers",
                text=labels,
                line={"dash": "dash"},
            )
        )
    changed = [(i, t) for i, t in zip(x, tokens) if t.changed_argmax]
    fig.add_trace(
        go.Scatter(
            x=[i for i, _ in changed],
            y=[t.eft_logprob for _, t in changed],
            mode="markers",
            name="delta changed the argmax",
            marker={"symbol": "x", "size": 12, "color": "#b00020"},
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="token",
        yaxis_title="log-prob of the chosen token",
        height=420,
        xaxis={"tickmode": "array", "tickvals": x, "ticktext": [t.text for t in tokens]},
    )
    return fig


def _rows(tokens: Sequence[TokenInfo]) -> list[dict[str, Any]]:
    rows = []
    for i, t in enumerate(tokens, 1):
        row: dict[str, Any] = {
            "#": i,
            "token": t.text,
            "id": t.id,
            "EFT": t.eft_logprob,
            "base": t.base_logprob,
        }
        for j, (f, r) in enumerate(zip(t.ft_logprob, t.ref_logprob)):
            sfx = "" if len(t.ft_logprob) == 1 else str(j + 1)
            row[f"ft{sfx}"], row[f"ref{sfx}"] = f, r
        row["delta changed argmax"] = "yes" if t.changed_argmax else ""
        rows.append(row)
    return rows


def build_page(kind: str, items: Sequence[tuple[str, Sequence[TokenInfo]]], settings: dict[str, Any]) -> Page:
    """``items``: (label, tokens) per generated or scored sequence."""
    page = Page(
        f"Emulated fine-tuning: {kind}",
        "log p = log pi_base + beta (log pi_ft - log pi_ref), renormalized (Mitchell et al. 2023)",
    )
    page.heading("Settings").key_values(settings)
    for n, (label, tokens) in enumerate(items[:MAX_SEQUENCES], 1):
        page.heading(f"Sequence {n}")
        page.text(label)
        if not tokens:
            page.text("(no tokens)")
            continue
        changed = sum(t.changed_argmax for t in tokens)
        page.figure(
            _figure(tokens, f"sequence {n}"),
            caption=f"{changed} of {len(tokens)} positions: the fine-tuning delta moved the argmax "
            "away from the base model's choice (red x)",
        )
        page.table(_rows(tokens))
    if len(items) > MAX_SEQUENCES:
        page.text(f"{len(items) - MAX_SEQUENCES} more sequences are left out of this page.")
    return page


def write_report(
    path: str | Path, kind: str, items: Sequence[tuple[str, Sequence[TokenInfo]]], settings: dict[str, Any]
) -> Path:
    return build_page(kind, items, settings).write(path)
