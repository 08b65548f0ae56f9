"""The zoo demo's report: the paper's 2x2 (target and source loss), a bar figure, the beta sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from transferlab.report import Page

COLORS = {
    "small": "#9ecae1",
    "large": "#3182bd",
    "small-ft": "#fdae6b",
    "large-ft": "#e6550d",
    "eft-up": "#31a354",
    "eft-down": "#756bb1",
}


def bar_figure(summary: dict[str, Any]) -> go.Figure:
    rows = summary["table"]
    fig = go.Figure()
    for split, name in (("target", summary["target_corpus"]), ("source", summary["source_corpus"])):
        fig.add_trace(
            go.Bar(
                x=[r["label"] for r in rows],
                y=[r[f"{split}_loss"] for r in rows],
                name=f"{split} held-out loss ({name})",
                marker_color=[COLORS[r["model"]] for r in rows],
                marker_pattern_shape="" if split == "target" else "/",
                text=[f"{r[f'{split}_loss']:.3f}" for r in rows],
                textposition="outside",
            )
        )
    lo = min(min(r["target_loss"], r["source_loss"]) for r in rows)
    hi = max(max(r["target_loss"], r["source_loss"]) for r in rows)
    pad = 0.15 * (hi - lo) + 0.05
    fig.update_layout(
        barmode="group",
        yaxis={"title": "mean per-token NLL (nats)", "range": [max(0.0, lo - pad), hi + pad]},
        height=460,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def sweep_figure(summary: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    names = {"eft-up": "up-scaled EFT", "eft-down": "down-scaled EFT"}
    for k, pts in summary["beta_sweep"].items():
        for split, dash in (("target", "solid"), ("source", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=[p["beta"] for p in pts],
                    y=[p[f"{split}_loss"] for p in pts],
                    mode="lines+markers",
                    name=f"{names[k]}, {split} ({summary[f'{split}_corpus']})",
                    line={"color": COLORS[k], "dash": dash},
                )
            )
    for r in summary["table"]:
        if r["model"] in ("small-ft", "large-ft"):
            fig.add_hline(
                y=r["target_loss"],
                line={"color": COLORS[r["model"]], "dash": "dash", "width": 1},
                annotation_text=f"{r['label']}, target",
            )
    fig.update_layout(xaxis_title="beta", yaxis_title="mean per-token NLL (nats)", height=460)
    return fig


def _grid_rows(summary: dict[str, Any], split: str) -> list[dict[str, Any]]:
    g = summary["grid"][f"{split}_loss"]
    return [
        {
            "fine-tuning scale \\ knowledge (pretraining) scale": "small fine-tune (delta small-ft - small)",
            "small pretrained": f"small-ft: {g['ft_small']['pretrain_small']:.4f}",
            "large pretrained": f"up-scaled EFT: {g['ft_small']['pretrain_large']:.4f}",
        },
        {
            "fine-tuning scale \\ knowledge (pretraining) scale": "large fine-tune (delta large-ft - large)",
            "small pretrained": f"down-scaled EFT: {g['ft_large']['pretrain_small']:.4f}",
            "large pretrained": f"large-ft: {g['ft_large']['pretrain_large']:.4f}",
        },
    ]


def _fmt_frac(x: float | None, ci: list[float] | None) -> str:
    if x is None:
        return "undefined (large-ft is not better than small-ft)"
    s = f"{x:.3f}"
    if ci is not None:
        s += f" (95% bootstrap interval over windows {ci[0]:.3f} to {ci[1]:.3f})"
    return s


def build_page(cfg: Any, summary: dict[str, Any]) -> Page:
    m = summary["models"]
    page = Page(
        "Emulated fine-tuning on the model zoo",
        f"preset {summary['preset']} · knowledge from {summary['source_corpus']}, behaviour from "
        f"{summary['target_corpus']} · small = {m['small']['size']} "
        f"({m['small']['non_embedding_params']:,} non-embedding params), large = {m['large']['size']} "
        f"({m['large']['non_embedding_params']:,}) · beta = {summary['beta']:g}",
    )
    g = summary["gap"]["target"]
    frac = g["up_fraction_closed"]
    verdict = (
        "meets" if summary["target_met"] else "misses"
    ) + f" the issue's target of closing at least {summary['target_fraction']:.0%} of it"
    page.text(
        f"On held-out {summary['target_corpus']} (the target), small-ft scores {g['small_ft']:.4f} nats/token "
        f"and large-ft {g['large_ft']:.4f}: a gap of {g['gap']:.4f}. Up-scaled EFT (large pretrained + "
        f"beta x (small-ft - small)) scores {g['eft_up']:.4f}, closing a fraction "
        f"{_fmt_frac(frac, g['up_fraction_ci95'])} of that gap; this run {verdict}. The large base alone "
        f"(beta = 0) closes {_fmt_frac(g.get('base_fraction_closed'), g.get('base_fraction_ci95'))}, so the small "
        f"fine-tune's delta adds {_fmt_frac(g.get('delta_fraction_added'), g.get('delta_fraction_ci95'))} beyond "
        f"the large base (issue 12's aim: at least {summary.get('target_delta', 0.25):.2f})."
    )
    page.text(
        "EFT log p(y_t) = log pi_base(y_t) + beta [log pi_ft(y_t) - log pi_ref(y_t)], renormalized over the "
        "vocabulary at every position (Mitchell et al. 2023). Losses are mean negative log-likelihoods per "
        f"token over {summary['scored']['windows']['target']} target and {summary['scored']['windows']['source']} "
        f"source held-out windows of {summary['scored']['tokens_per_window']} predicted tokens (validation split, "
        "never trained on), computed with the EFT scoring mode on token windows."
    )
    for split in ("target", "source"):
        what = "behaviour learned" if split == "target" else "knowledge kept"
        page.heading(f"2x2: {split} held-out loss ({summary[f'{split}_corpus']}, {what}; lower is better)")
        page.table(_grid_rows(summary, split))
    page.heading("Every model")
    page.figure(
        bar_figure(summary),
        caption="Mean per-token held-out loss of the pretrained bases, the two fine-tunes and the two EFT mixes "
        "(solid: target corpus; hatched: source corpus).",
    )
    page.table(
        [
            {
                "model": r["label"],
                "knowledge from": r["knowledge_scale"],
                "fine-tuning from": r["finetune_scale"],
                "EFT base / ft / ref": f"{r['base']} / {r['ft']} / {r['ref']}" if r["base"] else "",
                f"target loss ({summary['target_corpus']})": r["target_loss"],
                f"source loss ({summary['source_corpus']})": r["source_loss"],
            }
            for r in summary["table"]
        ]
    )
    page.heading("Gaps")
    gap_rows = []
    for split in ("target", "source"):
        s = summary["gap"][split]
        gap_rows.append(
            {
                "held-out corpus": f"{split} ({summary[f'{split}_corpus']})",
                "small-ft": s["small_ft"],
                "large-ft": s["large_ft"],
                "gap small-ft - large-ft": s["gap"],
                "up-scaling closes": _fmt_frac(s["up_fraction_closed"], s["up_fraction_ci95"]),
                "large base alone closes": _fmt_frac(s.get("base_fraction_closed"), s.get("base_fraction_ci95")),
                "the delta adds": _fmt_frac(s.get("delta_fraction_added"), s.get("delta_fraction_ci95")),
                "down-scaling closes": _fmt_frac(s["down_fraction_closed"], s["down_fraction_ci95"]),
            }
        )
    page.table(gap_rows)
    page.text(
        "Fraction closed = (L[small-ft] - L[EFT]) / (L[small-ft] - L[large-ft]): 1 means as good as large-ft, "
        "0 as good as small-ft, negative worse than small-ft. Intervals resample held-out windows (windows of "
        "one file are not independent, so they are optimistic)."
    )
    page.heading("Which scale matters where")
    page.table(
        [
            {
                "held-out corpus": f"{split} ({summary[f'{split}_corpus']})",
                "scaling up the knowledge (pretrained model)": summary["scale_effects"][split]["knowledge_scale"],
                "scaling up the fine-tuning delta": summary["scale_effects"][split]["finetune_scale"],
            }
            for split in ("target", "source")
        ]
    )
    page.text(
        "Main effects in the 2x2, in nats (negative = the larger scale lowers the loss): large minus small "
        "pretrained model averaged over both fine-tuning deltas, and large minus small fine-tuning delta "
        "averaged over both pretrained models. The paper's reading is that knowledge follows the pretraining "
        "scale and behaviour the fine-tuning scale."
    )
    page.heading("beta sweep")
    page.figure(
        sweep_figure(summary),
        caption="EFT held-out loss against beta (beta = 0 is the base model alone). The 2x2 uses the beta "
        "fixed in the config; the sweep is shown beside it, not used to choose it.",
    )
    page.heading("Sanity checks")
    page.key_values(summary["checks"])
    page.heading("Models")
    page.table(
        [
            {
                "model": k,
                "size": v["size"],
                "path": v["path"],
                "run": v["run_id"][:8],
                "tokens trained": v.get("pretrain_tokens") or v.get("tokens_seen"),
                "steps": v.get("steps"),
                "val loss at the end of training": v.get("pretrain_val_loss") or v.get("final_val_loss"),
            }
            for k, v in m.items()
        ]
    )
    page.text(f"Try the up-scaled mix yourself: {summary['try']['up']}")
    page.heading("Config")
    page.key_values({k: v for k, v in cfg.to_dict().items()})
    return page


def write_demo_report(cfg: Any, summary: dict[str, Any], path: str | Path) -> Path:
    return build_page(cfg, summary).write(path)
