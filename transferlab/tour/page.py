"""The tour's page: the chapter's sections in order, each with a paragraph, its figure(s), its numbers next to
what they are compared with, plain statements where our small models do not show the chapter's claim (computed
from the numbers), the commands to reproduce it and a link to the study's full report.

Builders are pure functions of a section's data (what tour/run.py collected); every string from a run or a user
is escaped (``esc``); data for the widgets goes through ``script_json``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from transferlab.report.html import Page, esc, script_json
from transferlab.store import Store
from transferlab.tour.sections import Section

_STYLE = """<style>
.tour-sec{margin-top:2.4rem}.tour-claim{background:#f5f5f7;border-left:4px solid #4a6fa5;padding:.5rem .8rem;
max-width:900px}.tour-gap{background:#fff4e5;border-left:4px solid #d98e04;padding:.5rem .8rem;max-width:900px}
.tour-fail{background:#fdecea;border-left:4px solid #b00020;padding:.5rem .8rem}
pre.tour-cmd{background:#1d1d1f;color:#f5f5f7;padding:.5rem .8rem;overflow-x:auto;font-size:.85rem}
.tour-widget{border:1px solid #ddd;padding:.6rem;margin:.6rem 0}.tour-phase{font-weight:700;font-size:1.1rem}
.tour-widget input[type=range]{width:60%}.tour-widget label{margin-right:1rem}
.tour-sec td{text-align:left}
</style>"""


@dataclass
class View:
    """What one section shows: figures are added to the page directly by the builder."""

    claim: str  # the chapter's claim, in the lab's words
    text: str  # what this run shows
    numbers: list[dict[str, Any]] = field(default_factory=list)  # quantity, ours, compared with
    gaps: list[str] = field(default_factory=list)  # where our small models do not show the claim
    reports: list[tuple[str, str]] = field(default_factory=list)  # (label, path)


class Canvas:
    """Where a builder puts its figures and widgets; the page places them after the section's claim and text."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str]] = []

    def figure(self, fig: go.Figure, caption: str = "") -> Canvas:
        self.items.append(("figure", fig, caption))
        return self

    def raw(self, markup: str) -> Canvas:
        self.items.append(("raw", markup, ""))
        return self

    def onto(self, page: Page) -> None:
        for kind, item, caption in self.items:
            page.figure(item, caption) if kind == "figure" else page.raw(item)


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        ax = abs(x)
        if 1000 <= ax < 1e6:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _ci(lo: Any, hi: Any) -> str:
    return f"[{_f(lo)}, {_f(hi)}]"


def _excludes_zero(lo: Any, hi: Any) -> bool:
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _num(quantity: str, ours: str, compared: str) -> dict[str, Any]:
    return {"quantity": quantity, "ours (this machine)": ours, "compared with": compared}


# ---- 1. scale multiplies data ------------------------------------------------------------------
def build_scale(page: Canvas, data: dict[str, Any]) -> View:
    s = data["transfer"]["summary"]
    v = View(
        claim="Pretraining is worth data. Fine-tuning a pretrained model on D_F tokens of a new distribution "
              "reaches the loss a model trained from scratch would need D_F + D_T tokens for; D_T, the effective "
              "data transferred, follows k·D_F^α·N^β, and a larger model transfers more (β > 0): scale multiplies "
              "data (Hernandez et al. 2021).",
        text="Each pretrained size is fine-tuned on a few amounts D_F of code and compared with scratch runs on "
             "code; D_T is read off the scratch law, and the law is fitted with bootstrap intervals.",
        reports=[("transfer report", s.get("report"))])
    rows = s.get("D_T") or []
    if rows:
        fig = go.Figure()
        palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
        for i, n in enumerate(sorted({r["N"] for r in rows})):
            pts = sorted((r["D_F"], r["D_T"]) for r in rows if r["N"] == n)
            color = palette[i % len(palette)]
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers+lines",
                                     name=f"N = {n:,}", line={"color": color}))
            if s.get("k") is not None and s.get("alpha") and s.get("beta"):
                k, a, b = s["k"], s["alpha"]["value"], s["beta"]["value"]
                xs = [pts[0][0] * (pts[-1][0] / pts[0][0]) ** (i / 20) for i in range(21)] if len(pts) > 1 else \
                    [pts[0][0]]
                fig.add_trace(go.Scatter(x=xs, y=[k * x ** a * n ** b for x in xs], mode="lines",
                                         line={"dash": "dot", "color": color}, name=f"fit, N = {n:,}",
                                         showlegend=False))
        fig.update_layout(title="Effective data transferred D_T against fine-tuning data D_F (dotted: the fit)",
                          xaxis={"type": "log", "title": "D_F (fine-tuning tokens)"},
                          yaxis={"type": "log", "title": "D_T (tokens transferred)"}, height=430)
        page.figure(fig, "One line per pretrained size N (non-embedding parameters).")
    if s.get("alpha"):
        a, b = s["alpha"], s["beta"]
        v.numbers += [
            _num("α (exponent of D_F)", f"{_f(a['value'])} {_ci(*a['ci'])}", "Hernandez et al. text→Python: 0.18"),
            _num("β (exponent of N)", f"{_f(b['value'])} {_ci(*b['ci'])}", "Hernandez et al. text→Python: 0.38"),
            _num("k", f"{_f(s.get('k'))} {_ci(*(s.get('k_ci') or [None, None]))}", "fitted jointly with α, β"),
            _num("D_T grows with N (geometric mean over D_F)", "yes" if s.get("D_T_grows_with_N") else "no",
                 "the chapter: larger models transfer more")]
        if not _excludes_zero(*b["ci"]) or b["ci"][0] is None or b["ci"][0] <= 0:
            v.gaps.append(f"β's 95% interval {_ci(*b['ci'])} includes 0: at this scale the data do not establish "
                          "that larger models transfer more.")
        if not s.get("D_T_grows_with_N_at_every_D_F"):
            v.gaps.append("D_T does not grow with N at every D_F here (a small model ossifies at the larger D_F: "
                          "see the transfer report's ossification table).")
    else:
        v.gaps.append(f"The transfer law could not be fitted: {s.get('analysis_error') or 'no usable rows'}.")
    if s.get("ossified_observed"):
        v.numbers.append(_num("ossified (fine-tuned worse than scratch)",
                              ", ".join(f"N={o.get('N')}, D_F={o.get('D_F')}" for o in s["ossified_observed"]),
                              "left out of the fit"))
    return v


# ---- 2. sizing -----------------------------------------------------------------------------------
_SIZING_JS = """
(function(){var L=%(law)s;
function nopt(C){var s=L.alpha+L.beta,G=Math.pow(L.alpha*L.A/(L.beta*L.B),1/s);return G*Math.pow(C/6,L.beta/s);}
function loss(N,D){return L.E+L.A/Math.pow(N,L.alpha)+L.B/Math.pow(D,L.beta);}
function dfor(N,t){var R=t-L.E-L.A/Math.pow(N,L.alpha);return R>0?Math.pow(L.B/R,1/L.beta):Infinity;}
function over(t,Dinf,Nc){if(!(Dinf>0))return Nc;var nmin=Math.pow(L.A/(t-L.E),1/L.alpha);
 function h(u){var N=Math.exp(u),aN=L.A*Math.pow(N,-L.alpha),R=t-L.E-aN;if(R<=0)return -Infinity;
  return 1-L.alpha*aN/(L.beta*R)+(2/6)*Dinf/dfor(N,t);}
 var lo=Math.log(nmin)*(1+1e-12)+1e-9,hi=Math.log(Nc);if(h(hi)<=0)return Nc;
 for(var i=0;i<200;i++){var m=(lo+hi)/2;if(h(m)<0)lo=m;else hi=m;}return Math.exp((lo+hi)/2);}
function plan(C,Dinf){var N=nopt(C),D=C/6/N,l=loss(N,D),No=over(l,Dinf,N),Do=dfor(No,l);
 return {N:N,D:D,loss:l,No:No,Do:Do,tot:6*N*D+2*N*Dinf,toto:6*No*Do+2*No*Dinf};}
function fmt(x){return x.toExponential(3);}
function update(){var lc=parseFloat(document.getElementById('tour-budget').value);
 var li=parseFloat(document.getElementById('tour-dinf').value);if(!isFinite(lc)||!isFinite(li))return;
 var C=Math.pow(10,lc),Dinf=Math.pow(10,li),p=plan(C,Dinf);window.__tourPlan=p;
 document.getElementById('tour-plan').innerHTML='<table><tr><th></th><th>N (parameters)</th><th>D (tokens)</th>'+
 '<th>tokens/param</th><th>loss</th><th>training + inference FLOPs</th></tr><tr><td>compute-optimal</td><td>'+
 fmt(p.N)+'</td><td>'+fmt(p.D)+'</td><td>'+(p.D/p.N).toFixed(1)+'</td><td>'+p.loss.toFixed(4)+'</td><td>'+
 fmt(p.tot)+'</td></tr><tr><td>inference-aware (same loss)</td><td>'+fmt(p.No)+'</td><td>'+fmt(p.Do)+
 '</td><td>'+(p.Do/p.No).toFixed(1)+'</td><td>'+p.loss.toFixed(4)+'</td><td>'+fmt(p.toto)+'</td></tr></table>'+
 '<p class="note">Serving 1e'+li.toFixed(1)+' tokens, the inference-aware model saves '+
 (100*(1-p.toto/p.tot)).toFixed(1)+'%% of the total compute.</p>';
 var cs=[],a=[],b=[];for(var e=18;e<=26.001;e+=0.25){var c=Math.pow(10,e),q=plan(c,Dinf);cs.push(c);a.push(q.N);
  b.push(q.No);}
 Plotly.react('tour-sizing-fig',[{x:cs,y:a,mode:'lines',name:'compute-optimal N'},
  {x:cs,y:b,mode:'lines',name:'inference-aware N (1e'+li.toFixed(1)+' inference tokens)'},
  {x:[C],y:[p.N],mode:'markers',marker:{size:11},name:'your budget: compute-optimal'},
  {x:[C],y:[p.No],mode:'markers',marker:{size:11,symbol:'diamond'},name:'your budget: inference-aware'}],
  {title:'Model size against training compute, under the fitted law',height:430,
   xaxis:{type:'log',title:'training FLOPs C'},yaxis:{type:'log',title:'parameters N'}},{displaylogo:false});}
document.getElementById('tour-budget').addEventListener('input',update);
document.getElementById('tour-dinf').addEventListener('input',update);update();})();
"""


def build_sizing(page: Canvas, data: dict[str, Any]) -> View:
    from transferlab.fit.chinchilla import ChinchillaLaw
    from transferlab.fit.sizing import compute_optimal, optimal_loss, overtrain

    f = data["fit"]
    law = {k: f[k] for k in ("E", "A", "B", "alpha", "beta")}
    budget = 1e22
    dinf = 1e12
    cl = ChinchillaLaw(**law)
    n, d = (float(x) for x in compute_optimal(cl, budget))
    ot = overtrain(cl, float(optimal_loss(cl, budget)), dinf)
    v = View(
        claim="A fitted L(N, D) = E + A/N^α + B/D^β says how to spend compute: the compute-optimal model grows as "
              "C^(β/(α+β)) with about 20 tokens per parameter (Hoffmann et al. 2022); a model that will serve many "
              "inference tokens should be smaller and trained longer (Sardana & Frankle 2023).",
        text=f"The fit on Epoch AI's {f.get('n_points', '?')} points extracted from the Chinchilla paper (Besiroglu "
             "et al. 2024), their Huber procedure. Change the budget and the inference tokens: the page recomputes "
             "both frontiers from the fitted law.",
        reports=[("Chinchilla fit report", f.get("report"))])
    page.raw(
        '<div class="tour-widget"><label>training budget: 10^<input id="tour-budget" type="number" step="0.1" '
        'min="15" max="30" value="22"> FLOPs</label><label>inference tokens: 10^<input id="tour-dinf" '
        'type="number" step="0.1" min="0" max="16" value="12"></label><div id="tour-plan"></div>'
        '<div id="tour-sizing-fig" class="plotly-fig" style="width:100%;height:430px"></div></div>'
        f"<script>{_SIZING_JS % {'law': script_json(law)}}</script>")
    co = f.get("compute_optimal") or {}
    v.numbers += [
        _num("α, β", f"{_f(f['alpha'], 4)} {_ci(*f['alpha_ci'])}, {_f(f['beta'], 4)} {_ci(*f['beta_ci'])}",
             "Epoch's replication: 0.3473 [0.317, 0.373], 0.3672 [0.331, 0.415]"),
        _num("E (irreducible loss)", f"{_f(f['E'], 4)} {_ci(*f['E_ci'])}", "Epoch: 1.817 [1.769, 1.871]"),
        _num("N_opt ∝ C^a", f"a = {_f(co.get('N_opt_exponent'))}", "Hoffmann et al.: a ≈ 0.5"),
        _num("compute-optimal at 1e22 FLOPs (page default)", f"N = {n:.3g}, D = {d:.3g}, {d / n:.1f} tokens/param",
             "Chinchilla's rule of thumb: ~20 tokens/param"),
        _num("inference-aware at 1e22 FLOPs' loss, 1e12 inference tokens",
             f"N = {ot.N:.3g}, {ot.tokens_per_param:.0f} tokens/param, saves {100 * ot.saving:.1f}% of total compute",
             "smaller and longer-trained than compute-optimal (Sardana & Frankle)")]
    if not (f["alpha_ci"][0] <= 0.3473 <= f["alpha_ci"][1] and f["beta_ci"][0] <= 0.3672 <= f["beta_ci"][1]):
        v.gaps.append("Our exponents' intervals do not contain Epoch's estimates (fewer bootstrap refits here, or "
                      "another procedure).")
    return v


# ---- 3. grokking ---------------------------------------------------------------------------------
_GROK_JS = """
(function(){var d=%(data)s;var s=document.getElementById('tour-grok-step'),
lab=document.getElementById('tour-grok-phase'),
vals=document.getElementById('tour-grok-values'),btn=document.getElementById('tour-grok-play'),timer=null;
function phase(t){if(d.t_mem===null||t<d.t_mem)return 'memorizing';
 if(d.t_gen===null||t<d.t_gen)return 'circuit formation';
 return 'generalized';}
function show(){var i=parseInt(s.value),t=d.step[i];lab.textContent=phase(t);
 vals.textContent='step '+t+' · train loss '+d.train[i].toPrecision(3)+' · validation loss '+d.val[i].toPrecision(3)+
 ' · ‖θ‖² '+d.norm[i].toPrecision(4)+' · validation accuracy '+(100*d.acc[i]).toFixed(1)+'%%';
 Plotly.relayout('tour-grok-fig',{shapes:[{type:'line',xref:'x',yref:'paper',x0:t,x1:t,y0:0,y1:1,
  line:{color:'#b00020',width:2}}]});}
s.addEventListener('input',show);
btn.addEventListener('click',function(){if(timer){clearInterval(timer);timer=null;btn.textContent='play';return;}
 if(parseInt(s.value)>=d.step.length-1)s.value=0;btn.textContent='pause';
 timer=setInterval(function(){var i=parseInt(s.value);if(i>=d.step.length-1){clearInterval(timer);timer=null;
 btn.textContent='play';return;}s.value=i+1;show();},60);});show();})();
"""


def _grok_widget(page: Canvas, recs: list[dict[str, Any]], t_mem: Any, t_gen: Any) -> None:
    recs = [r for r in recs if r.get("weight_norm_sq") is not None and "val_loss" in r]
    series = {"step": [int(r["step"]) for r in recs], "train": [float(r["train_loss"]) for r in recs],
              "val": [float(r["val_loss"]) for r in recs], "norm": [float(r["weight_norm_sq"]) for r in recs],
              "acc": [float(r.get("val_acc", float("nan"))) for r in recs], "t_mem": t_mem, "t_gen": t_gen}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=series["step"], y=series["train"], name="train loss"), secondary_y=False)
    fig.add_trace(go.Scatter(x=series["step"], y=series["val"], name="validation loss"), secondary_y=False)
    fig.add_trace(go.Scatter(x=series["step"], y=series["norm"], name="‖θ‖²", line={"dash": "dot"}),
                  secondary_y=True)
    for t, name in ((t_mem, "memorized"), (t_gen, "generalized")):
        if t is not None:
            fig.add_annotation(x=t, y=1.02, yref="paper", text=name, showarrow=False)
    fig.update_yaxes(type="log", title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="‖θ‖²", secondary_y=True)
    fig.update_layout(title="Grokking, step by step", xaxis_title="step", height=430)
    fig_json = fig.to_json()
    page.raw(
        '<div class="tour-widget"><div>phase: <span id="tour-grok-phase" class="tour-phase"></span></div>'
        f'<input id="tour-grok-step" type="range" min="0" max="{len(recs) - 1}" step="1" value="0" '
        'aria-label="training step"> <button id="tour-grok-play" type="button">play</button>'
        '<div id="tour-grok-values" class="note"></div>'
        '<div id="tour-grok-fig" class="plotly-fig" style="width:100%;height:430px"></div>'
        f"<script>(function(){{var s={script_json_raw(fig_json)};Plotly.newPlot('tour-grok-fig',s.data,s.layout,"
        "{responsive:true,displaylogo:false});})();</script>"
        f"<script>{_GROK_JS % {'data': script_json(series)}}</script></div>")


def script_json_raw(spec: str) -> str:
    """A JSON string (already serialized, e.g. plotly's) made safe inside <script>."""
    import json

    return script_json(json.loads(spec))


def build_grokking(page: Canvas, data: dict[str, Any]) -> View:
    run = data["run"]
    m = run["summary"]["members"][0]
    v = View(
        claim="Grokking is a phase transition driven by the weight norm: the network first memorizes the "
              "training set, then, while weight decay shrinks ‖θ‖², a generalizing circuit forms, and validation "
              "accuracy jumps long after training accuracy (Power et al. 2022; Nanda et al. 2023). The delay "
              "follows the norm: T_grok − T_mem ≈ c·log(‖θ_mem‖²/‖θ_post‖²)/(lr·wd).",
        text="Move the slider (or press play) through the run: the label names the phase from the run's own "
             "memorization and generalization steps.",
        reports=[("grokking run report", run.get("report"))])
    _grok_widget(page, run.get("records") or [], m.get("steps_to_memorize"), m.get("steps_to_generalize"))
    t_mem, t_gen = m.get("steps_to_memorize"), m.get("steps_to_generalize")
    v.numbers += [
        _num("memorized (train acc ≥ 99%)", f"step {_f(t_mem)}", "the chapter: memorization comes first"),
        _num("generalized (val acc ≥ 99%)", f"step {_f(t_gen)}",
             f"{_f(t_gen / t_mem if t_mem and t_gen else None)}x the memorization step")]
    if t_gen is None:
        v.gaps.append("This run did not generalize within its budget, so it shows no grokking.")
    # (b) the delay law
    sw = data["delay"]["sweep"]
    law = sw.get("delay_law") or {}
    page.raw("<h3>The delay law</h3>")
    pts = law.get("points") or []
    if pts:
        fig = go.Figure()
        for cens in (False, True):
            sel = [p for p in pts if bool(p.get("censored")) == cens]
            if sel:
                fig.add_trace(go.Scatter(x=[p["x"] for p in sel], y=[p["delay"] for p in sel], mode="markers",
                                         name="censored (not generalized)" if cens else "generalized",
                                         marker={"symbol": "triangle-up" if cens else "circle", "size": 10}))
        if law.get("constant") is not None:
            xs = sorted(p["x"] for p in pts)
            fig.add_trace(go.Scatter(x=xs, y=[law["constant"] * x for x in xs], mode="lines",
                                     name=f"fit: c = {law['constant']:.3g}"))
            fig.add_trace(go.Scatter(x=xs, y=[law.get("theory_constant", 0.5) * x for x in xs], mode="lines",
                                     line={"dash": "dot"}, name="weight decay alone: c = 1/2"))
        fig.update_layout(title="Delay against x = log(‖θ_mem‖²/‖θ_post‖²)/(lr·wd)", xaxis_title="x",
                          yaxis_title="T_grok − T_mem (steps)", height=400)
        page.figure(fig, data["delay"].get("why", ""))
    trials = sw.get("trials") or []
    if law.get("constant") is not None:
        ci = law.get("constant_ci") or [None, None]
        v.numbers += [
            _num("delay-law constant c", f"{_f(law['constant'])} {_ci(*ci)}",
                 f"weight decay alone: {law.get('theory_constant', 0.5)}; the full delay-law sweep (docs/RESULTS.md, "
                 "20 trials): 4.89 [3.38, 7.05]"),
            _num("held-out error (MAPE)", _f(law.get("mape_heldout")),
                 f"{law.get('heldout_rule', '')}; the follow-up paper reports 17.7%")]
        for form in (law.get("forms") or {}).values():
            if form.get("mape_heldout") is not None:
                v.numbers.append(_num(f"held-out MAPE, {form.get('form')}", _f(form["mape_heldout"]),
                                      "the same split, fitted by least squares on the relative error"))
        theory = law.get("theory_constant", 0.5)
        if ci[0] is not None and ci[1] is not None and not ci[0] <= theory <= ci[1]:
            v.gaps.append(f"The fitted delay constant c = {_f(law['constant'])} {_ci(*ci)} excludes {theory}, the "
                          "value weight decay alone would give: the norm does not fall at the pure weight-decay rate "
                          "after memorization here (the gradient slows or speeds it).")
        if law.get("mape_heldout") is not None and law["mape_heldout"] > 0.25:
            better = [f for f in (law.get("forms") or {}).values()
                      if f.get("mape_heldout") is not None and f["mape_heldout"] <= 0.25]
            v.gaps.append(f"The delay law as stated predicts the held-out trials with {100 * law['mape_heldout']:.0f}% "
                          "error, above the 25% the follow-up paper's 17.7% suggests"
                          + (f"; {better[0]['form']} does ({100 * better[0]['mape_heldout']:.0f}%)" if better else "")
                          + f" ({law.get('heldout_rule', '')}).")
    else:
        v.gaps.append(f"The delay law could not be fitted on this small sweep: {law.get('why_not') or 'no trials'}.")
    n_gen = sum(t.get("steps_to_generalize") is not None for t in trials)
    v.numbers.append(_num("sweep trials", f"{len(trials)} ({n_gen} generalized)",
                          "`sweep grok --plan delay-law`: 20 trials"))
    v.reports.append(("delay-law sweep report", sw.get("report")))
    # (c) the diagnosis of a run that does not grok
    st = data["stalled"]
    sm = st["summary"]["members"][0]
    page.raw("<h3>A run that does not grok, diagnosed</h3>")
    diag = sm.get("diagnosis")
    recs = [r for r in (st.get("records") or []) if "val_acc" in r]
    if recs:
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_trace(go.Scatter(x=[r["step"] for r in recs], y=[r["train_acc"] for r in recs], name="train acc"))
        fig.add_trace(go.Scatter(x=[r["step"] for r in recs], y=[r["val_acc"] for r in recs], name="val acc"))
        fig.add_trace(go.Scatter(x=[r["step"] for r in recs], y=[r.get("weight_norm_sq") for r in recs],
                                 name="‖θ‖²", line={"dash": "dot"}), secondary_y=True)
        fig.update_layout(title="The stalled run: accuracy and ‖θ‖²", xaxis_title="step", height=380)
        fig.update_yaxes(title_text="accuracy", secondary_y=False)
        fig.update_yaxes(title_text="‖θ‖²", type="log", secondary_y=True)
        page.figure(fig, st.get("why", ""))
    if diag:
        page.raw(f'<p class="tour-claim"><b>diagnosis ({esc(diag.get("code"))}):</b> {esc(diag.get("message"))}</p>')
        v.numbers.append(_num("stalled run's diagnosis", str(diag.get("code")),
                              "norm_stalled / norm_falling / not_memorized / no_weight_decay"))
    else:
        v.gaps.append("The run meant to show a failure generalized after all (val acc ≥ 99%), so there is no "
                      "diagnosis to show at this scale.")
    v.reports.append(("stalled run's report", st.get("report")))
    return v


# ---- 4. weak-to-strong ---------------------------------------------------------------------------
LOSS_NAMES = {"xent": "naive cross-entropy", "confidence": "the chapter's confidence loss (KL + c·entropy)",
              "logconf": "Burns et al.'s auxiliary confidence loss"}


def build_w2s(page: Canvas, data: dict[str, Any]) -> View:
    w = data["w2s"]
    view = w["view"]
    losses = view["losses"]
    first = next(iter(losses.values()))
    v = View(
        claim="A strong model trained on a weak model's labels can beat its supervisor: the performance gap "
              "recovered, PGR = (student − weak)/(ceiling − weak), is positive, and a confidence loss that lets "
              "the student trust itself over the weak labels recovers more (Burns et al. 2023).",
        text=f"Task {view.get('task')}, {view.get('seeds')} seeds; the weak supervisor, the strong ceiling (trained "
             "on gold) and one student per loss, all measured on the same held-out split.",
        reports=[("weak-to-strong report", w.get("report"))])
    names = list(losses)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=["weak (floor)"] + [f"student, {n}" for n in names] + ["strong ceiling"],
                         y=[first["weak_acc"]["value"]] + [losses[n]["student_acc"]["value"] for n in names]
                         + [first["ceiling_acc"]["value"]],
                         error_y={"type": "data", "symmetric": False,
                                  "array": [first["weak_acc"]["hi"] - first["weak_acc"]["value"]]
                                  + [losses[n]["student_acc"]["hi"] - losses[n]["student_acc"]["value"] for n in names]
                                  + [first["ceiling_acc"]["hi"] - first["ceiling_acc"]["value"]],
                                  "arrayminus": [first["weak_acc"]["value"] - first["weak_acc"]["lo"]]
                                  + [losses[n]["student_acc"]["value"] - losses[n]["student_acc"]["lo"] for n in names]
                                  + [first["ceiling_acc"]["value"] - first["ceiling_acc"]["lo"]]}))
    lo = min(first["weak_acc"]["lo"], *(losses[n]["student_acc"]["lo"] for n in names))
    fig.update_layout(title="Held-out accuracy: floor, students, ceiling (95% intervals over seeds)",
                      yaxis={"title": "accuracy", "range": [max(0.0, lo - 0.05), 1.0]}, height=420)
    page.figure(fig, "; ".join(f"{n}: {LOSS_NAMES.get(n, n)}" for n in names))
    v.numbers.append(_num("weak floor / strong ceiling", f"{_f(first['weak_acc']['value'])} / "
                          f"{_f(first['ceiling_acc']['value'])}", "the gap PGR measures the student in"))
    for n in names:
        p = losses[n]["pgr"]
        v.numbers.append(_num(f"PGR, {LOSS_NAMES.get(n, n)}", f"{_f(p['value'])} {_ci(p.get('lo'), p.get('hi'))}",
                              "0 = no better than the weak labels, 1 = the ceiling; Burns et al.: 0.2-0.8 with "
                              "the confidence loss on NLP tasks"))
        if not _excludes_zero(p.get("lo"), p.get("hi")):
            v.gaps.append(f"PGR with {LOSS_NAMES.get(n, n)} is {_f(p['value'])} but its 95% interval "
                          f"{_ci(p.get('lo'), p.get('hi'))} includes 0: at {view.get('seeds')} seeds we cannot say "
                          "the student beats its supervisor.")
    if "confidence" in losses and "xent" in losses:
        dc = losses["confidence"]["pgr"]["value"] - losses["xent"]["pgr"]["value"]
        test = next((t for t in view.get("paired_tests") or [] if {t["a"], t["b"]} == {"xent", "confidence"}), None)
        v.numbers.append(_num("confidence − xent PGR", _f(dc),
                              "paired test over seeds: p = " + (_f(test.get("t_p_holm")) if test else "n/a")))
        if dc <= 0 or (test and (test.get("t_p_holm") or 1) >= 0.05):
            v.gaps.append("The chapter's confidence loss does not recover significantly more of the gap than naive "
                          f"cross-entropy here (difference {_f(dc)}" + (f", Holm-adjusted p = {_f(test['t_p_holm'])}"
                                                                       if test else "") + ").")
    return v


# ---- 5. emulated fine-tuning ------------------------------------------------------------------------
_EFT_JS = """
(function(){var d=%(data)s;var s=document.getElementById('tour-eft-beta'),o=document.getElementById('tour-eft-out');
function show(){var i=parseInt(s.value),r=d.up[i],q=d.down[i];var f=(d.small_ft-r.target_loss)/(d.small_ft-d.large_ft);
 o.textContent='β = '+r.beta+' · up-scaled (large base + β × small fine-tune delta): '+r.target_loss.toFixed(3)+
 ' nats (closes '+(100*f).toFixed(0)+'%% of the small→large fine-tuned gap) · down-scaled: '+q.target_loss.toFixed(3);
 Plotly.relayout('tour-eft-fig',{shapes:[{type:'line',xref:'x',yref:'paper',x0:r.beta,x1:r.beta,y0:0,y1:1,
  line:{color:'#b00020',width:2}}]});}
s.addEventListener('input',show);show();})();
"""


def build_eft(page: Canvas, data: dict[str, Any]) -> View:
    e = data["eft"]
    s = e["summary"]
    g = s["gap"]["target"]
    v = View(
        claim="Pretraining and fine-tuning scale separately: a large base plus the log-probability change a small "
              "model learned in fine-tuning (emulated fine-tuning, up-scaling) gets much of the way to fine-tuning "
              "the large model itself, mostly from the large base's knowledge (Mitchell et al. 2023).",
        text=f"Two zoo bases pretrained on {s.get('source_corpus')}, both fine-tuned on {s.get('target_corpus')}; "
             "held-out loss on the target corpus for each cell of the 2x2 (pretraining scale x fine-tuning scale) "
             "and for the emulated mixes. The β slider scales the fine-tuning delta.",
        reports=[("EFT demo report", s.get("report"))])
    grid = s["grid"]["target_loss"]
    fig = go.Figure(go.Heatmap(z=[[grid["ft_small"]["pretrain_small"], grid["ft_small"]["pretrain_large"]],
                                  [grid["ft_large"]["pretrain_small"], grid["ft_large"]["pretrain_large"]]],
                               x=["small pretraining", "large pretraining"], y=["small fine-tune", "large fine-tune"],
                               text=[[f"{grid['ft_small']['pretrain_small']:.3f} (small-ft)",
                                      f"{grid['ft_small']['pretrain_large']:.3f} (EFT up)"],
                                     [f"{grid['ft_large']['pretrain_small']:.3f} (EFT down)",
                                      f"{grid['ft_large']['pretrain_large']:.3f} (large-ft)"]],
                               texttemplate="%{text}", colorscale="Blues_r", colorbar={"title": "loss"}))
    fig.update_layout(title="Held-out target loss (nats/token): pretraining scale x fine-tuning scale", height=380)
    page.figure(fig, "Off the diagonal: the emulated combinations (one model's base with the other's delta).")
    up, down = s["beta_sweep"]["eft-up"], s["beta_sweep"]["eft-down"]
    if up:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[r["beta"] for r in up], y=[r["target_loss"] for r in up], name="EFT up",
                                 mode="lines+markers"))
        fig.add_trace(go.Scatter(x=[r["beta"] for r in down], y=[r["target_loss"] for r in down], name="EFT down",
                                 mode="lines+markers"))
        for val, name in ((g["small_ft"], "small-ft"), (g["large_ft"], "large-ft")):
            fig.add_hline(y=val, line_dash="dot", annotation_text=name)
        fig.update_layout(title="Target loss against β", xaxis_title="β", yaxis_title="loss (nats/token)", height=380)
        eft_data = {"up": up, "down": down, "small_ft": g["small_ft"], "large_ft": g["large_ft"]}
        page.raw('<div class="tour-widget"><label>β: <input id="tour-eft-beta" type="range" min="0" '
                 f'max="{len(up) - 1}" step="1" value="{min(range(len(up)), key=lambda i: abs(up[i]["beta"] - 1))}"'
                 ' aria-label="beta"></label><div id="tour-eft-out" class="note"></div>'
                 '<div id="tour-eft-fig" class="plotly-fig" style="width:100%;height:380px"></div>'
                 f"<script>(function(){{var s={script_json_raw(fig.to_json())};Plotly.newPlot('tour-eft-fig',s.data,"
                 "s.layout,{responsive:true,displaylogo:false});})();</script>"
                 f"<script>{_EFT_JS % {'data': script_json(eft_data)}}"
                 "</script></div>")
    ci = g.get("up_fraction_ci95") or [None, None]
    bci = g.get("base_fraction_ci95") or [None, None]
    dci = g.get("delta_fraction_ci95") or [None, None]
    v.numbers += [
        _num("gap closed by up-scaling (EFT up)", f"{_f(g.get('up_fraction_closed'))} {_ci(*ci)}",
             "0 = the small fine-tune, 1 = the large fine-tune"),
        _num("... by the large base alone (β = 0)", f"{_f(g.get('base_fraction_closed'))} {_ci(*bci)}",
             "what pretraining scale gives by itself"),
        _num("... added by the small fine-tune's delta", f"{_f(g.get('delta_fraction_added'))} {_ci(*dci)}",
             f"the lab's target: ≥ {s.get('target_delta')}")]
    if dci[0] is not None and dci[0] <= 0:
        v.gaps.append("The small fine-tune's delta does not add significantly beyond the large base here: its "
                      f"interval {_ci(*dci)} includes 0.")
    if g.get("up_fraction_closed") is not None and g["up_fraction_closed"] < 0.5:
        v.gaps.append(f"Up-scaling closes {100 * g['up_fraction_closed']:.0f}% of the gap, less than half: our bases "
                      "are far smaller than the paper's.")
    return v


# ---- 6. cross-stage correlations -------------------------------------------------------------------
def build_correlations(page: Canvas, data: dict[str, Any]) -> View:
    p = data["pairs"]
    s = p["summary"]
    c = s["correlate"]
    v = View(
        claim="Benchmark rankings made before fine-tuning mostly survive it: models that are better (and more "
              "confident) before SFT are better after, so cheap pretraining evaluations can pick models, "
              "though not on every benchmark.",
        text=f"{c.get('n_models')} zoo models (prose/code mixtures x sizes), each scored before and after SFT on "
             "the same multiple-choice benchmarks; Spearman's rank correlation across models, with bootstrap "
             "intervals.",
        reports=[("correlate-zoo report", s.get("report")), ("cross-stage analysis", s.get("correlate_report"))])
    fig = go.Figure()
    for q, name in (("accuracy", "accuracy"), ("confidence", "confidence")):
        rows = c.get(f"ranking_{q}") or []
        ys, lo, hi = [], [], []
        for r in rows:
            val = r.get("spearman")
            ci = r.get("ci") or [None, None]
            ys.append(val)
            lo.append(None if val is None or ci[0] is None else val - ci[0])
            hi.append(None if val is None or ci[1] is None else ci[1] - val)
        fig.add_trace(go.Bar(x=[r["benchmark"] for r in rows], y=ys, name=name,
                             error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
        for r in rows:
            ci = r.get("ci") or [None, None]
            v.numbers.append(_num(f"Spearman {name}, {r['benchmark']}", f"{_f(r.get('spearman'))} {_ci(*ci)}",
                                  f"0 = no ranking survives; verdict: {r.get('verdict')}"))
            if ci[0] is not None and ci[0] <= 0:
                v.gaps.append(f"{r['benchmark']}: the {name} ranking before SFT does not significantly predict the "
                              f"ranking after (interval {_ci(*ci)} includes 0, {c.get('n_models')} models).")
            elif ci[0] is None:
                v.gaps.append(f"{r['benchmark']}: no {name} correlation could be computed (constant scores).")
    fig.update_layout(title="Rank correlation before → after SFT, per benchmark (95% bootstrap intervals)",
                      yaxis={"title": "Spearman ρ", "range": [-1, 1]}, barmode="group", height=420)
    page.figure(fig, "")
    return v


# ---- 7. monitors ---------------------------------------------------------------------------------------
def build_monitors(page: Canvas, data: dict[str, Any]) -> View:
    e, recs, pl = data["entry"], data["records"], data.get("power_law") or {}
    tps = data.get("tokens_per_step") or 1
    v = View(
        claim="Training can be watched as it runs: plasticity (the Fisher trace, the fraction of dormant units, "
              "the effective rank of the features) shows a network losing its ability to learn, and a training "
              "loss that leaves its own predicted power law flags a problem early.",
        text=f"A zoo pretraining run ({e.get('size')}, {_f(e.get('non_embedding_params'))} non-embedding "
             f"parameters, {_f(e.get('tokens_seen'))} tokens of stdlib prose) with the plasticity monitors at "
             "every evaluation, and the zoo's live power-law monitor of its training loss.",
        reports=[("pretraining run folder", data.get("run_dir"))])
    keys = [("fisher_trace", "Fisher trace", "log"), ("dormant_fraction", "dormant units (fraction)", "linear"),
            ("effective_rank", "feature effective rank", "linear")]
    mon = [r for r in recs if r.get("fisher_trace") is not None]
    if mon:
        fig = make_subplots(rows=1, cols=3, subplot_titles=[k[1] for k in keys])
        for i, (k, name, scale) in enumerate(keys, 1):
            fig.add_trace(go.Scatter(x=[r["step"] for r in mon], y=[r[k] for r in mon], name=name,
                                     mode="lines+markers"), row=1, col=i)
            fig.update_yaxes(type=scale, row=1, col=i)
            fig.update_xaxes(title_text="step", row=1, col=i)
        fig.update_layout(title="Plasticity monitors during pretraining", height=360, showlegend=False)
        page.figure(fig, "")
        first, last = mon[0], mon[-1]
        v.numbers += [_num(name, f"{_f(first[k])} → {_f(last[k])}", "first → last evaluation") for k, name, _ in keys]
        if last["dormant_fraction"] is not None and last["dormant_fraction"] <= first["dormant_fraction"]:
            v.gaps.append("No plasticity loss shows in a run this short: the dormant fraction does not grow "
                          f"({_f(first['dormant_fraction'])} → {_f(last['dormant_fraction'])}).")
    else:
        v.gaps.append("This pretraining run logged no plasticity monitors (it was reused from a run made without "
                      "them); delete its folder to measure them.")
    tr = [r for r in recs if r.get("train_loss") is not None and r["step"] > 0]
    if tr:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[r["step"] * tps for r in tr], y=[r["train_loss"] for r in tr], mode="markers",
                                 name="training loss"))
        pr = [r for r in tr if r.get("loss_pred") is not None]
        if pr:
            fig.add_trace(go.Scatter(x=[r["step"] * tps for r in pr], y=[r["loss_pred"] for r in pr], mode="lines",
                                     name="live prediction (fit on earlier points)"))
            fig.add_trace(go.Scatter(x=[r["step"] * tps for r in pr] + [r["step"] * tps for r in pr][::-1],
                                     y=[r["loss_pred_hi"] for r in pr] + [r["loss_pred_lo"] for r in pr][::-1],
                                     fill="toself", mode="lines", line={"width": 0}, opacity=0.25,
                                     name="its 3σ band"))
        if pl.get("alpha") is not None:
            xs = [r["step"] * tps for r in tr]
            fig.add_trace(go.Scatter(x=xs, y=[pl["E"] + pl["A"] * x ** (-pl["alpha"]) for x in xs], mode="lines",
                                     line={"dash": "dot"}, name="E + A·t^−α on the whole run"))
        fig.update_layout(title="Training loss against its predicted power law", height=400,
                          xaxis={"type": "log", "title": "tokens seen"}, yaxis={"type": "log", "title": "loss"})
        page.figure(fig, "")
        flagged = [r for r in tr if r.get("loss_deviation")]
        v.numbers.append(_num("evaluations off the live prediction (3σ)", f"{len(flagged)} of {len(pr)}",
                              "a healthy run: few or none"))
        if pl.get("alpha") is not None:
            v.numbers.append(_num("fitted power law", f"E = {_f(pl['E'])}, α = {_f(pl['alpha'])}",
                                  "L(t) = E + A·t^−α, t = tokens seen"))
    return v


BUILDERS: dict[str, Callable[[Canvas, dict[str, Any]], View]] = {
    "scale": build_scale, "sizing": build_sizing, "grok": build_grokking, "w2s": build_w2s,
    "eft": build_eft, "correlations": build_correlations, "monitors": build_monitors}


def _link(page_path: Path, target: str | None) -> str:
    if not target:
        return ""
    try:
        rel = os.path.relpath(target, page_path.parent)
    except ValueError:
        rel = target
    return rel


def write_page(path: Path, sections: Sequence[Section], results: dict[str, dict[str, Any]],
               rows: list[dict[str, Any]], scale: str, store: Store) -> Path:
    path = Path(path)
    status = {r["name"]: r for r in rows}
    page = Page("Transfer learning and generalization, run on this machine",
                f"transferlab tour · scale {scale} · {sum(r['status'] == 'done' for r in rows)} of {len(rows)} "
                "sections ran")
    page.raw(_STYLE)
    page.text("Each section below states a claim of the chapter, shows what this machine just measured with the lab's "
              f"small models ({scale} presets), sets each number beside what it is compared with, and says plainly "
              "where our models do not show the claim. Every figure was made by the runs this page links to; the "
              "commands reproduce them or go further.")
    page.table([{"section": r["title"], "status": r["status"], "seconds": round(r["seconds"], 1)} for r in rows])
    for i, sec in enumerate(sections, 1):
        page.raw(f'<section class="tour-sec" id="tour-{esc(sec.name)}" data-section="{esc(sec.name)}" '
                 f'data-status="{esc(status[sec.name]["status"])}">')
        page.heading(f"{i}. {sec.title}")
        row = status[sec.name]
        if row["status"] != "done":
            page.raw(f'<div class="tour-fail"><b>This section failed:</b> {esc(row.get("error"))}<br>rerun it: '
                     f'<code>{esc(row.get("rerun"))}</code>'
                     + (f'<details><summary>traceback</summary><pre>{esc(row["traceback"])}</pre></details>'
                        if row.get("traceback") else "") + "</div>")
        else:
            canvas = Canvas()
            try:
                view = BUILDERS[sec.name](canvas, results[sec.name])
            except Exception as err:  # the runs are done but the page cannot be drawn: say so, keep the rest
                row.update(status="failed", error=f"page: {type(err).__name__}: {err}",
                           rerun=f"transferlab tour --sections {sec.name} --scale {scale}")
                page.raw(f'<div class="tour-fail"><b>This section could not be drawn:</b> {esc(row["error"])}</div>')
                view = None
            if view is not None:
                page.raw(f'<p class="tour-claim"><b>The claim.</b> {esc(view.claim)}</p>')
                page.text(view.text)
                canvas.onto(page)
                if view.numbers:
                    page.table(view.numbers)
                if view.gaps:
                    page.raw('<div class="tour-gap"><b>Where our small models do not show it.</b><ul>'
                             + "".join(f"<li>{esc(g)}</li>" for g in view.gaps) + "</ul></div>")
                else:
                    page.raw('<p class="note">At this scale our numbers agree with the claim.</p>')
                links = [(label, _link(path, p)) for label, p in view.reports if p]
                if links:
                    page.raw("<p>Full reports: " + " · ".join(f'<a href="{esc(h)}">{esc(label)}</a>'
                                                              for label, h in links) + "</p>")
        page.raw("<p>Reproduce it, or go deeper:</p><pre class=\"tour-cmd\">"
                 + esc("\n".join(sec.commands(scale))) + "</pre></section>")
    return page.write(path)
