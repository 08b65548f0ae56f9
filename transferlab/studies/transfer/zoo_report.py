"""Report pages of the zoo build and of the ``transferlab transfer`` sweep.

The transfer page starts from the fit page of :mod:`transferlab.studies.transfer.report` (D_T
against D_F per N with the fitted lines, the table of fits) and adds the sweep's own sections:
pretraining curves with the live monitor, learning curves, observed ossification, the runs table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from transferlab.report import Page

PALETTE = qualitative.Plotly + qualitative.D3


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
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
        recs = [r for r in _metrics(d) if r.get("step", 0) > 0 and "train_loss" in r]
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


def zoo_page(zb: Any, run_dirs: list[Path]) -> Page:
    page = Page("Model zoo", f"{zb.zoo.root} · corpus {zb.data.corpus} · {len(zb.entries)} models")
    info = zb.data.info
    page.text(
        f"Corpus '{zb.data.corpus}': {info.get('train_tokens', '?')} training and "
        f"{info.get('val_tokens', '?')} "
        f"validation tokens ({info.get('processing', info.get('source', ''))}). Tokenizer: byte-level BPE, "
        f"{len(zb.tokenizer)} tokens, {zb.tokenizer_dir}."
    )
    page.heading("Models")
    page.table(
        [
            {
                "name": e["name"],
                "size": e["size"],
                "non-embedding params": e["non_embedding_params"],
                "params": e["params"],
                "tokens seen": e["tokens_seen"],
                "train loss": e["train_loss"],
                "val loss": e["val_loss"],
                "tokens/s": e.get("tokens_per_second"),
                "monitor flags": len(e.get("monitor_deviations") or []),
                "reused": "yes" if e.get("reused") else "",
            }
            for e in zb.entries
        ]
    )
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


def _learning_curves(rows: list[dict[str, Any]], store: Any, kind: str) -> go.Figure:
    fig = go.Figure()
    sizes = sorted({r["size"] for r in rows}, key=lambda s: min(r["N"] for r in rows if r["size"] == s))
    color = {s: PALETTE[j % len(PALETTE)] for j, s in enumerate(sizes)}
    for r in rows:
        if r["kind"] != kind:
            continue
        recs = [m for m in _metrics(store.run_dir("lm", r["run_id"])) if "val_loss" in m]
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
    page.text(
        f"Pretraining: sizes {', '.join(cfg.sizes)} on '{cfg.pretrain_corpus}' for {cfg.pretrain_tokens:,} "
        f"tokens each. Target '{cfg.target_corpus}': from scratch at D in {cfg.scratch_D}, "
        f"fine-tuned at D_F in "
        f"{cfg.finetune_D} (tokens in the training pool; at most {cfg.max_epochs:g} passes, early stopping "
        f"with patience {cfg.patience}; the loss is the best validation loss). "
        f"Wall time {summary.get('wall_seconds', float('nan')):.0f} s."
    )
    if "D_T_by_size" in summary:
        page.text(
            "D_T grows with N: " + ("yes" if summary["D_T_grows_with_N"] else "no") + " — geometric-mean D_T "
            "over the shared D_F values: "
            + ", ".join(f"N={g['N']:,}: {g['geomean_D_T']:.4g}" for g in summary["D_T_by_size"])
            + f". Fitted N exponent beta = {summary['beta']:.3g} (textbook alpha); D_F exponent alpha = "
            f"{summary['alpha']:.3g} (textbook beta). Hernandez et al. (text->python): alpha 0.18, beta 0.38."
        )
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
