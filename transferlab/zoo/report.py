"""The zoo build's report page: the models, held-out loss against N with the fitted power law, and the
pretraining curves with the live loss monitor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from transferlab.report import Page

PALETTE = qualitative.Plotly + qualitative.D3


def metrics_of(run_dir: Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def pretraining_figure(entries: list[dict[str, Any]], run_dirs: list[Path]) -> go.Figure:
    fig = go.Figure()
    for j, (e, d) in enumerate(zip(entries, run_dirs)):
        recs = [r for r in metrics_of(d) if r.get("step", 0) > 0 and "train_loss" in r]
        c = PALETTE[j % len(PALETTE)]
        x = [r["tokens"] for r in recs]
        label = f"{e['size']} (N={e['non_embedding_params']:,})"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["train_loss"] for r in recs],
                mode="lines+markers",
                name=f"{label} train",
                line=dict(color=c),
                marker=dict(size=4),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["val_loss"] for r in recs],
                mode="lines",
                name=f"{label} val",
                line=dict(color=c, dash="dot"),
            )
        )
        pred = [r for r in recs if "loss_pred" in r]
        if pred:
            xs = [r["tokens"] for r in pred]
            fig.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=[r["loss_pred_hi"] for r in pred] + [r["loss_pred_lo"] for r in pred][::-1],
                    fill="toself",
                    mode="lines",
                    line=dict(width=0),
                    fillcolor=c,
                    opacity=0.15,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        dev = [r for r in pred if r.get("loss_deviation")]
        if dev:
            fig.add_trace(
                go.Scatter(
                    x=[r["tokens"] for r in dev],
                    y=[r["train_loss"] for r in dev],
                    mode="markers",
                    name=f"{e['size']} off the power law",
                    marker=dict(symbol="x", size=11, color="red"),
                )
            )
    fig.update_layout(
        xaxis=dict(type="log", title="tokens seen"), yaxis=dict(type="log", title="loss"), height=480
    )
    return fig


def loss_vs_n_figure(fit: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for j, (c, r) in enumerate(fit.get("corpora", {}).items()):
        color = PALETTE[j % len(PALETTE)]
        fig.add_trace(go.Scatter(x=r["N"], y=r["loss"], mode="markers+text", name=f"held-out {c}",
                                 text=r["sizes"], textposition="top center", marker=dict(size=9, color=color)))
        f = r.get("fit")
        if f:
            xs = [min(r["N"]) * (max(r["N"]) / min(r["N"])) ** (i / 40) for i in range(41)]
            fig.add_trace(go.Scatter(x=xs, y=[f["k"] * x ** -f["a"] for x in xs], mode="lines",
                                     name=f"{c}: L = {f['k']:.3g} N^-{f['a']:.3f} (R^2 {f['r2']:.3f})",
                                     line=dict(color=color, dash="dash")))
    fig.update_layout(xaxis=dict(type="log", title="non-embedding parameters N"),
                      yaxis=dict(type="log", title="held-out loss (nats/token)"), height=440)
    return fig


def zoo_page(zb: Any, run_dirs: list[Path]) -> Page:
    page = Page("Model zoo", f"{zb.zoo.root} · corpus {zb.data.corpus} · {len(zb.entries)} models")
    info = zb.data.info
    dists = info.get("distributions") or []
    page.text(
        f"Corpus '{zb.data.corpus}': {info.get('train_tokens', '?'):,} training and "
        f"{info.get('val_tokens', '?'):,} validation tokens ({info.get('train_chars', 0):,} + "
        f"{info.get('val_chars', 0):,} characters, {info.get('processing', info.get('source', ''))}); "
        f"fingerprint {info.get('fingerprint', '?')}; from the Python {info.get('python', '?')} standard library"
        + (f" and {len(dists)} installed distributions" if dists else "")
        + f". Tokenizer: byte-level BPE, {len(zb.tokenizer)} tokens."
    )
    fit = zb.fit or {}
    page.heading("Held-out loss against N")
    for c, r in fit.get("corpora", {}).items():
        f = r.get("fit")
        if f:
            msg = (f"{c}: L(N) = {f['k']:.3g} N^-a with a = {f['a']:.3f} [{f['a_ci'][0]:.3f}, {f['a_ci'][1]:.3f}] "
                   f"(95% t-interval over {f['n']} sizes), R^2 = {f['r2']:.3f}. For comparison, Kaplan et al. 2020 "
                   "report a = 0.076 for L(N) of converged models on WebText2.")
        else:
            msg = f"{c}: no fit ({r.get('why_no_fit')})."
        if r.get("flagged"):
            msg += " FLAGGED: the loss does not fall with N (" + "; ".join(r.get("rises", [])) + ")."
        page.text(msg, cls="flag" if r.get("flagged") else "note")
    page.figure(loss_vs_n_figure(fit), "Held-out loss of each model on each corpus's validation split, with "
                "the power law fitted across the family (dashed).")
    page.heading("Models")
    page.table(
        [
            {
                "name": e["name"],
                "size": e["size"],
                "non-embedding params": e["non_embedding_params"],
                "tokens seen": e["tokens_seen"],
                "tokens / param": round(e.get("tokens_per_param", 0), 1),
                "passes": round(e.get("epochs", 0), 2),
                "dtype": e.get("dtype"),
                "val loss (first eval_tokens)": e["val_loss"],
                **{f"held-out {c}": v for c, v in (e.get("heldout_loss") or {}).items()},
                "tokens/s": e.get("tokens_per_second"),
                "wall s": e.get("build_wall_seconds"),
                "monitor flags": len(e.get("monitor_deviations") or []),
                "reused": "yes" if e.get("reused") else "",
            }
            for e in zb.entries
        ]
    )
    notes = [e["repetition_note"] for e in zb.entries if e.get("repetition_note")]
    for n in notes:
        page.text(n, cls="flag")
    page.heading("Training curves and the live loss monitor")
    page.figure(
        pretraining_figure(zb.entries, run_dirs),
        "Train (solid) and validation (dotted) loss. Shaded: the interval of the power law "
        "L(t) = E + A t^-alpha fitted on the earlier evaluations; red crosses: points outside it "
        "(flagged live during training).",
    )
    return page


def write_zoo_report(zb: Any, run_dirs: list[Path]) -> Path:
    return zoo_page(zb, run_dirs).write(zb.zoo.root / "report.html")
