"""Pure functions from grokking results to findings: phases, seed statistics, the delay law,
and Nanda et al.'s Fourier progress measures. No I/O, no training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats

# a member's phases: the one list the summary, the --json contract, the aggregate and the sweep rows read
PHASE_KEYS = ("steps_to_memorize", "steps_to_generalize", "steps_to_95", "grok_onset", "steps_to_val_loss_001",
              "final_val_acc")

# ---------------------------------------------------------------------------- phases


def first_sustained(steps: Sequence[int], values: Sequence[float], threshold: float, window: int = 5,
                    below: bool = False) -> int | None:
    """First step at which ``values`` crosses ``threshold`` and the median of that evaluation and the
    next ``window - 1`` stays across it. One-evaluation slingshot spikes neither trigger nor block it."""
    v = np.asarray(values, dtype=float)
    for i in range(len(v)):
        hit = v[i] <= threshold if below else v[i] >= threshold
        if not hit:
            continue
        med = float(np.median(v[i:i + window]))
        if (med <= threshold) if below else (med >= threshold):
            return int(steps[i])
    return None


@dataclass
class Phases:
    steps_to_memorize: int | None  # train accuracy >= 99%
    grok_onset: int | None  # validation accuracy leaves its memorization level
    steps_to_95: int | None
    steps_to_generalize: int | None  # validation accuracy >= 99%
    steps_to_val_loss_001: int | None  # validation loss < 0.01 (Nanda et al.'s criterion)
    final_val_acc: float
    final_train_acc: float
    norm_at_memorize: float | None
    norm_at_generalize: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def detect_phases(records: Sequence[dict[str, Any]], window: int = 5) -> Phases:
    steps = [int(r["step"]) for r in records]
    tr = [float(r["train_acc"]) for r in records]
    va = [float(r["val_acc"]) for r in records]
    vl = [float(r["val_loss"]) for r in records]
    norms = [float(r.get("weight_norm_sq", float("nan"))) for r in records]
    t_mem = first_sustained(steps, tr, 0.99, window)
    t95 = first_sustained(steps, va, 0.95, window)
    t99 = first_sustained(steps, va, 0.99, window)
    onset = None
    if t_mem is not None:
        i_mem = steps.index(t_mem)
        base = float(np.median(va[max(0, i_mem - 2):i_mem + 3]))
        level = base + 0.1 * (1.0 - base)
        after = [(s, v) for s, v in zip(steps, va) if s >= t_mem]
        onset = first_sustained([s for s, _ in after], [v for _, v in after], level, window)
    return Phases(
        steps_to_memorize=t_mem, grok_onset=onset, steps_to_95=t95, steps_to_generalize=t99,
        steps_to_val_loss_001=first_sustained(steps, vl, 0.01, window, below=True),
        final_val_acc=va[-1] if va else float("nan"), final_train_acc=tr[-1] if tr else float("nan"),
        norm_at_memorize=norms[steps.index(t_mem)] if t_mem is not None else None,
        norm_at_generalize=norms[steps.index(t99)] if t99 is not None else None,
    )


def diagnose(records: Sequence[dict[str, Any]], lr: float, weight_decay: float,
             weight_decay_style: str = "decoupled") -> dict[str, Any] | None:
    """Why a run did not generalize, from its metrics log: a short ``code``, a ``message`` with the numbers
    and what to change, and the figures behind it. ``None`` when the run generalized (99% validation).

    After memorization, weight decay alone shrinks ‖θ‖² by (1 − lr·wd)² per step, a rate of ≈ 2·lr·wd in
    log ‖θ‖²; the delay law puts generalization where the norm has fallen to the generalizing solution's.
    A norm falling far slower than that (under 10% of it) is held by the gradient: waiting will not help."""
    if not records:
        return {"code": "no_records", "message": "the run logged no evaluations"}
    ph = detect_phases(records)
    if ph.steps_to_generalize is not None:
        return None
    last = int(records[-1]["step"])
    if ph.steps_to_memorize is None:
        best = max(float(r["train_acc"]) for r in records)
        return {"code": "not_memorized", "last_step": last, "best_train_acc": best,
                "message": f"never memorized: train accuracy reached {100 * best:.1f}% by step {last} (99% needed); "
                           "run longer, or raise lr or the model's width"}
    gamma = lr * weight_decay
    t_mem = ph.steps_to_memorize
    if gamma <= 0:
        return {"code": "no_weight_decay", "steps_to_memorize": t_mem, "last_step": last,
                "message": f"memorized at step {t_mem} but not generalized by step {last}, with no weight decay "
                           "(lr x wd = 0): nothing pulls the weight norm down to a generalizing solution; set "
                           "weight_decay > 0 (e.g. 1), or use the orthograd / stablemax options"}
    after = [(int(r["step"]), float(r["weight_norm_sq"])) for r in records
             if int(r["step"]) >= t_mem and r.get("weight_norm_sq") and float(r["weight_norm_sq"]) > 0]
    tail = after[len(after) * 2 // 3:]  # the last third of the time since memorization
    theory_rate = -2 * math.log1p(-min(gamma, 0.999))  # per step in log ‖θ‖², from weight decay alone
    out: dict[str, Any] = {"steps_to_memorize": t_mem, "last_step": last, "gamma_eff": gamma,
                           "weight_decay_style": weight_decay_style, "final_val_acc": ph.final_val_acc,
                           "theory_log_norm_rate": theory_rate}
    if len(tail) < 3:
        return {**out, "code": "too_short", "message": f"memorized at step {t_mem}, and too few evaluations after it "
                f"to judge the weight norm; run longer (e.g. steps={2 * last})"}
    t = np.array([p[0] for p in tail], float)
    lv = np.log(np.array([p[1] for p in tail], float))
    rate = -float(np.polyfit(t, lv, 1)[0])
    span = int(t[-1] - t[0])
    change = math.exp(lv[-1] - lv[0]) - 1
    pure = math.exp(-theory_rate * span) - 1
    out.update(observed_log_norm_rate=rate, norm_change_last=change, window_steps=span,
               steps_per_halving_observed=math.log(2) / rate if rate > 0 else None,
               steps_per_halving_theory=math.log(2) / theory_rate)
    if rate < 0.1 * theory_rate:
        fix = (f"weight_decay={2 * weight_decay:g}" if lr * 2 * weight_decay < 0.5 else f"lr={lr / 2:g}")
        return {**out, "code": "norm_stalled",
                "message": f"memorized at step {t_mem} but not generalized by step {last} (val acc "
                           f"{100 * ph.final_val_acc:.1f}%), and the weight norm stopped falling: ‖θ‖² changed "
                           f"{100 * change:+.1f}% over the last {span} steps, where weight decay alone (lr x wd = "
                           f"{gamma:.3g}) would shrink it {100 * pure:.0f}%; the gradient holds the memorizing "
                           f"solution, so waiting will not help: try more weight decay ({fix}) or a larger "
                           "train_fraction"}
    need = math.log(2) / rate
    return {**out, "code": "norm_falling",
            "message": f"memorized at step {t_mem}, not generalized by step {last} (val acc "
                       f"{100 * ph.final_val_acc:.1f}%), but ‖θ‖² is still falling, halving every {need:,.0f} steps "
                       f"({rate / theory_rate:.0%} of the pure weight-decay rate at lr x wd = {gamma:.3g}): by the "
                       "delay law it generalizes once the norm reaches the generalizing solution's; run longer "
                       f"(e.g. steps={last + int(2 * need)}), or measure that norm with "
                       "`transferlab sweep grok --plan delay-law`"}


def phase_spans(ph: Phases, last_step: int) -> list[tuple[str, int, int]]:
    """(name, start, end) for memorizing, circuit formation, generalized."""
    spans = []
    t_mem = ph.steps_to_memorize if ph.steps_to_memorize is not None else last_step
    spans.append(("memorizing", 0, t_mem))
    if ph.steps_to_memorize is not None:
        end = ph.steps_to_generalize if ph.steps_to_generalize is not None else last_step
        spans.append(("circuit formation", t_mem, end))
        if ph.steps_to_generalize is not None:
            spans.append(("generalized", ph.steps_to_generalize, last_step))
    return spans


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean and t-interval over seeds; members that never reached the event are counted, not averaged."""
    xs = np.array([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                  dtype=float)
    out: dict[str, Any] = {"n": int(len(xs)), "missing": int(len(values) - len(xs))}
    if len(xs) == 0:
        return {**out, "mean": None, "ci": [None, None]}
    mean = float(xs.mean())
    if len(xs) == 1:
        return {**out, "mean": mean, "ci": [mean, mean]}
    half = float(stats.t.ppf(0.5 + level / 2, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))
    return {**out, "mean": mean, "ci": [mean - half, mean + half]}


# ---------------------------------------------------------------------------- delay law


def predict_grok_step(steps: Sequence[int], norms: Sequence[float], t_mem: int, log_ratio: float) -> float | None:
    """Predict T_grok early from a running run's weight-norm decay after memorization.

    log V(t) ≈ log V_mem - r (t - T_mem) is fitted on the observed points; the run groks when the norm
    has fallen by ``log_ratio`` = log(V_mem / V_post) (its typical value comes from a sweep), so
    T_grok ≈ T_mem + log_ratio / r.
    """
    pts = [(s, v) for s, v in zip(steps, norms) if s >= t_mem and v > 0]
    if len(pts) < 3:
        return None
    t = np.array([p[0] for p in pts], float)
    lv = np.log(np.array([p[1] for p in pts], float))
    slope = np.polyfit(t - t_mem, lv, 1)[0]
    r = -slope
    if r <= 0:
        return None
    return float(t_mem + log_ratio / r)


# ---------------------------------------------------------------------------- the delay law on a sweep

THEORY_CONSTANT = 0.5  # weight decay alone shrinks ||θ||² by (1 - lr wd)² ≈ exp(-2 lr wd) per step: c = 1/2


@dataclass
class DelayLaw:
    """The delay law T_grok − T_mem = c · x, x = log(V_mem / V_post) / (lr · wd), fitted across a sweep.

    V_post (‖θ‖² of the generalizing solution) is *not* the run's own norm at its T_grok: for each trial
    it is the geometric mean of the other generalized trials' norms at generalization, so x is known
    before the trial generalizes. Trials that had not generalized by their last step are right-censored:
    their delay is only known to exceed ``last_step − T_mem``, and the fit treats them so (a Tobit model
    on log delay: log delay = log c + log x + ε, ε ~ N(0, σ²)), instead of dropping them.
    """

    constant: float | None
    constant_ci: list[float | None]
    sigma: float | None  # spread of log delay around the law
    r2: float | None  # of delay against c·x over the generalized trials
    mape_loo: float | None  # leave-one-out over generalized trials (refit without it, V_post without it)
    mape_heldout: float | None  # fit on one part of the sweep, predicted on the other (see heldout_rule)
    heldout_rule: str
    n_used: int
    n_censored: int
    points: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    log_norm_post_sd: float | None  # spread of log V_post across generalized trials (is it one norm?)
    theory_constant: float = THEORY_CONSTANT
    why_not: str | None = None
    forms: dict[str, dict[str, Any]] = field(default_factory=dict)  # the law next to two simpler forms
    seed_floor: dict[str, Any] | None = None  # the least MAPE any function of the cell can reach (``seed_floor``)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _tobit_loglik(log_c: float, log_sigma: float, lx: np.ndarray, ly: np.ndarray, cens: np.ndarray) -> float:
    sigma = math.exp(log_sigma)
    z = (ly - (log_c + lx)) / sigma
    ll = np.where(cens, stats.norm.logsf(z), stats.norm.logpdf(z) - log_sigma)
    return float(ll.sum())


def fit_censored_constant(x: Sequence[float], delay: Sequence[float], censored: Sequence[bool],
                          level: float = 0.95) -> tuple[float, list[float], float]:
    """Maximum likelihood of c (and σ) in log delay = log c + log x + ε with right-censored delays, and a
    profile-likelihood interval for c (critical value t²(n−1) of the uncensored count, which with no
    censoring gives the exact t-interval of the mean of log(delay / x))."""
    from scipy.optimize import brentq, minimize_scalar

    lx, ly, cens = np.log(np.asarray(x, float)), np.log(np.asarray(delay, float)), np.asarray(censored, bool)
    n_unc = int((~cens).sum())
    if n_unc < 2:
        raise ValueError(f"need at least 2 generalized trials, got {n_unc}")
    r = ly[~cens] - lx[~cens]

    def profile(log_c: float) -> tuple[float, float]:
        if not cens.any():  # closed form: σ² = mean squared residual
            s2 = float(np.mean((r - log_c) ** 2))
            return -0.5 * n_unc * (math.log(2 * math.pi * s2) + 1), 0.5 * math.log(s2)
        res = minimize_scalar(lambda ls: -_tobit_loglik(log_c, ls, lx, ly, cens), bounds=(-8, 4), method="bounded")
        return -float(res.fun), float(res.x)

    if not cens.any():
        best = float(r.mean())
    else:
        lo_b, hi_b = float(r.min()) - 3, float(max(r.max(), (ly - lx).max())) + 3
        best = float(minimize_scalar(lambda lc: -profile(lc)[0], bounds=(lo_b, hi_b), method="bounded").x)
    ll_best, log_sigma = profile(best)
    crit = float(stats.t.ppf(0.5 + level / 2, max(n_unc - 1, 1))) ** 2
    if not cens.any():  # exact t-interval of the mean log ratio
        half = float(stats.t.ppf(0.5 + level / 2, n_unc - 1) * r.std(ddof=1) / math.sqrt(n_unc))
        return math.exp(best), [math.exp(best - half), math.exp(best + half)], math.exp(log_sigma)

    def gap(lc: float) -> float:
        return 2 * (ll_best - profile(lc)[0]) - crit

    ends = []
    for direction in (-1, 1):
        step, edge = 0.25, best
        while gap(edge + direction * step) < 0 and step < 40:
            step *= 2
        far = edge + direction * step
        ends.append(math.exp(brentq(gap, min(best, far), max(best, far))) if gap(far) >= 0 else
                    (0.0 if direction < 0 else math.inf))
    return math.exp(best), ends, math.exp(log_sigma)


FORMS = {
    "law": "T_grok − T_mem = c · log(V_mem / V_post) / (lr · wd)  (the chapter's law, no intercept)",
    "affine": "T_grok − T_mem = (a + c · log(V_mem / V_post)) / (lr · wd)  (the law plus a constant term)",
    "inverse": "T_grok − T_mem = K / (lr · wd)  (the decay rate alone, no norms)",
    "power": "T_grok − T_mem = K / (lr^a · wd^b)  (an empirical power law with no theory behind it: it tests the "
             "decay-rate forms' a = b = 1)",
}
# each form's parameters, and which of them is reported as its constant (beside THEORY_FORM_CONSTANT)
FORM_PARAMS: dict[str, tuple[list[str], int]] = {"law": (["c"], 0), "affine": (["a", "c"], 1),
                                                 "inverse": (["K"], 0), "power": (["log_K", "a", "b"], 1)}


def _fit_form(form: str, pts: Sequence[dict[str, Any]]) -> list[float] | None:
    """Parameters of ``form`` over generalized points, by least squares on the relative error (what the MAPE
    measures): rows r = log(V_mem / V_post) = x·γ and γ = lr·wd. The power form is fitted on log delays (to first
    order the relative error too); where the points have one weight decay (or one lr), its exponent is not
    identified and lstsq's minimum-norm solution sets it to what log(1) = 0 leaves (K takes the rest)."""
    if len(pts) < len(FORM_PARAMS[form][0]) + 1:
        return None
    g = np.array([p["gamma_eff"] for p in pts])
    d = np.array([p["delay"] for p in pts])
    if form == "power":
        x = np.stack([np.ones(len(d)), -np.log([p["lr"] for p in pts]), -np.log([p["weight_decay"] for p in pts])], 1)
        w, *_ = np.linalg.lstsq(x, np.log(d), rcond=None)
        return [float(v) for v in w]
    r = np.array([p["x"] for p in pts]) * g
    if form == "law":
        a = (r / g / d)[:, None]
    elif form == "affine":
        a = np.stack([1 / g / d, r / g / d], 1)
    else:
        a = (1 / g / d)[:, None]
    w, *_ = np.linalg.lstsq(a, np.ones(len(d)), rcond=None)
    return [float(v) for v in w]


def _predict_form(form: str, w: list[float], p: dict[str, Any]) -> float:
    if form == "power":
        return math.exp(w[0] - w[1] * math.log(p["lr"]) - w[2] * math.log(p["weight_decay"]))
    g, r = p["gamma_eff"], p["x"] * p["gamma_eff"]
    return {"law": w[0] * r, "affine": w[0] + (w[-1] * r), "inverse": w[0]}[form] / g


def compare_forms(points: Sequence[dict[str, Any]], fit_pts: Sequence[dict[str, Any]],
                  test_pts: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The law against two simpler forms on the same generalized trials (censored ones are left out here: the
    least-squares fits take exact delays): parameters on all of them, leave-one-out and held-out MAPE with the
    same split as the law's own fit."""
    unc = [p for p in points if not p["censored"]]
    fit_u = [p for p in fit_pts if not p["censored"]]
    out: dict[str, dict[str, Any]] = {}
    for form, text in FORMS.items():
        w = _fit_form(form, unc)
        if w is None:
            continue
        loo = []
        for i, p in enumerate(unc):
            wi = _fit_form(form, unc[:i] + unc[i + 1:])
            if wi is not None:
                loo.append((_predict_form(form, wi, p), p["delay"]))
        w_ho = _fit_form(form, fit_u)
        # several architectures: each its own constants (arXiv 2605.18845 fits κ per architecture), the pooled
        # fit where an architecture has too few calibration trials
        archs = sorted({str(p.get("architecture")) for p in fit_u})
        w_arch = {a: _fit_form(form, [p for p in fit_u if str(p.get("architecture")) == a])
                  for a in archs} if len(archs) > 1 else {}

        ho = [(_predict_form(form, w_arch.get(str(p.get("architecture"))) or w_ho, p), p["delay"])
              for p in test_pts] if w_ho else []
        names, key = FORM_PARAMS[form]
        boot = _bootstrap_params(form, fit_u, key)
        out[form] = {"form": text, "params": dict(zip(names, w)),
                     "mape_loo": _mape([a for a, _ in loo], [b for _, b in loo]),
                     "mape_heldout": _mape([a for a, _ in ho], [b for _, b in ho]) if ho else None,
                     "calibration": "seed 0's trials (V_post per architecture and operation from them"
                                    + ("; constants per architecture)" if w_arch else ")"),
                     "constant": w_ho[key] if w_ho else None, "constant_name": names[key],
                     **({"constant_by_architecture": {a: w[key] for a, w in w_arch.items() if w},
                         "params_by_architecture": {a: dict(zip(names, w)) for a, w in w_arch.items() if w}}
                        if w_arch else {}),
                     "constant_ci": boot, "theory_constant": THEORY_FORM_CONSTANT[form],
                     "params_calibrated": dict(zip(names, w_ho)) if w_ho else None,
                     **heldout_stats([(pr, p) for (pr, _), p in zip(ho, test_pts)])}
        if w_arch:
            out[form]["constant_note"] = ("constant: fitted on all calibration trials; predictions use each "
                                          "architecture's")
    return out


# each form's constant as the theory gives it (weight decay alone: c = 1/2, κ = 1; the power form's lr exponent
# a = 1, as its b; K has no theory value)
THEORY_FORM_CONSTANT: dict[str, float | None] = {"law": THEORY_CONSTANT, "affine": THEORY_CONSTANT, "inverse": None,
                                                 "power": 1.0, "first_passage": 1.0}
FIRST_PASSAGE = ("T_grok − T_mem = log(V_mem / V*) / (2κ · lr · wd)  (arXiv 2605.18845: κ per architecture and V* "
                 "per architecture and operation, from one cell)")


def _bootstrap_params(form: str, pts: Sequence[dict[str, Any]], key: int, n_boot: int = 300,
                      seed: int = 0) -> list[float | None]:
    """95% percentile interval of one parameter of ``form`` refitted on calibration points resampled with
    replacement."""
    if len(pts) < 3:
        return [None, None]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        sample = [pts[i] for i in rng.integers(0, len(pts), len(pts))]
        w = _fit_form(form, sample)
        if w is not None and np.isfinite(w[key]):
            vals.append(w[key])
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else [None, None]


def heldout_stats(pairs: Sequence[tuple[float, dict[str, Any]]], n_boot: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    """Held-out MAPE with its 95% bootstrap interval over the held-out trials, their number, and the MAPE per
    architecture and per operation. ``pairs``: (prediction, point) for every generalized held-out trial."""
    errs = np.array([abs(pr - p["delay"]) / p["delay"] for pr, p in pairs if p["delay"] > 0])
    out: dict[str, Any] = {"n_heldout": int(len(errs)), "mape_heldout_ci": [None, None],
                           "by_architecture": {}, "by_operation": {}}
    if len(errs) >= 2:
        rng = np.random.default_rng(seed)
        means = errs[rng.integers(0, len(errs), (n_boot, len(errs)))].mean(1)
        out["mape_heldout_ci"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    for field_, name in (("architecture", "by_architecture"), ("operation", "by_operation")):
        groups: dict[str, list[float]] = {}
        for pr, p in pairs:
            if p["delay"] > 0:
                groups.setdefault(str(p.get(field_)), []).append(abs(pr - p["delay"]) / p["delay"])
        out[name] = {k: {"mape": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}
    return out


def task_of(t: dict[str, Any]) -> tuple[Any, Any]:
    """The task a trial's norms belong to: its architecture and operation (None where the sweep fixed them)."""
    return (t.get("model"), t.get("operation"))


def first_passage_form(cand: Sequence[dict[str, Any]], rule_seed: Any = None) -> dict[str, Any] | None:
    """arXiv 2605.18845's protocol: for each architecture, one hyperparameter cell (the lr x wd of the median
    lr·wd among the cells of the calibration seed's generalized trials) calibrates κ (relative least squares over
    that cell's trials, one per operation) and V* (each operation's norm at generalization in that cell); every other
    generalized trial is predicted as T_mem + log(V_mem / V*) / (2κ·lr·wd). ``cand``: the usable trials."""
    seed0 = rule_seed if rule_seed is not None else min((t.get("seed") for t in cand), default=None,
                                                      key=lambda s: (s is None, s))
    gen = [t for t in cand if t.get("steps_to_generalize") is not None and t.get("norm_at_generalize")
           and t["steps_to_generalize"] > t["steps_to_memorize"]]
    archs = sorted({str(t.get("model")) for t in gen})
    cal_ids: set[int] = set()
    kappa: dict[str, float] = {}
    v_star: dict[tuple[Any, Any], float] = {}
    cells: dict[str, dict[str, float]] = {}
    rows_all: list[tuple[float, float, float]] = []
    for arch in archs:
        mine = [t for t in gen if str(t.get("model")) == arch and t.get("seed") == seed0]
        if not mine:
            continue
        grid = sorted({(t["lr"] * t["weight_decay"], t["lr"], t["weight_decay"]) for t in mine})
        g_cell, lr_cell, wd_cell = grid[(len(grid) - 1) // 2]
        cell = [t for t in mine if (t["lr"], t["weight_decay"]) == (lr_cell, wd_cell)]
        rows = []
        for t in cell:
            cal_ids.add(id(t))
            v_star[task_of(t)] = float(t["norm_at_generalize"])
            r = math.log(t["norm_at_memorize"] / t["norm_at_generalize"])
            if r > 0:
                rows.append((r, g_cell, float(t["steps_to_generalize"] - t["steps_to_memorize"])))
        if not rows:
            continue
        u = np.array([r / (2 * g * d) for r, g, d in rows])  # delay_pred / delay = u / κ
        kappa[arch] = float((u ** 2).sum() / u.sum())  # relative least squares in 1/κ
        cells[arch] = {"lr": cell[0]["lr"], "weight_decay": cell[0]["weight_decay"]}
        rows_all += rows
    if not kappa:
        return None
    pairs = []
    for t in gen:
        if id(t) in cal_ids or str(t.get("model")) not in kappa or task_of(t) not in v_star:
            continue
        r = math.log(t["norm_at_memorize"] / v_star[task_of(t)])
        if r <= 0:
            continue
        g = t["lr"] * t["weight_decay"]
        pred = r / (2 * kappa[str(t.get("model"))] * g)
        pairs.append((pred, {"run_id": t.get("run_id"), "delay": float(t["steps_to_generalize"]
                                                                        - t["steps_to_memorize"]),
                             "architecture": t.get("model"), "operation": t.get("operation")}))
    u_all = np.array([r / (2 * g * d) for r, g, d in rows_all])
    pooled = float((u_all ** 2).sum() / u_all.sum())
    ci: list[float | None] = [None, None]
    if len(u_all) >= 3:
        rng = np.random.default_rng(0)
        bs = [float((b ** 2).sum() / b.sum()) for b in (u_all[rng.integers(0, len(u_all), len(u_all))]
                                                        for _ in range(300))]
        ci = [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))]
    stats_ = heldout_stats(pairs)
    return {"form": FIRST_PASSAGE, "params": {"kappa": pooled},
            "mape_loo": None, "mape_heldout": _mape([a for a, _ in pairs], [p["delay"] for _, p in pairs]),
            "calibration": "one cell per architecture (seed " + str(seed0) + ", the median lr·wd): "
                           + "; ".join(f"{a}: lr {c['lr']:g}, wd {c['weight_decay']:g}" for a, c in cells.items()),
            "constant": pooled, "constant_name": "kappa", "constant_ci": ci,
            "constant_by_architecture": kappa, "theory_constant": THEORY_FORM_CONSTANT["first_passage"],
            "params_calibrated": {"kappa": pooled, **{f"kappa[{a}]": k for a, k in kappa.items()}},
            **stats_}


def _best_constant(delays: Sequence[float]) -> float:
    """The one number with the least mean relative error over ``delays``: mean |c − d|/d is convex and piecewise
    linear in c, so its minimum is at one of the d."""
    return min(delays, key=lambda c: sum(abs(c - d) / d for d in delays))


# the keys of a sweep's trial dict that are not its settings: its identity, its seed and its measurements
NOT_SETTINGS = {"run_id", "status", "error", "seed", "last_step", "final_val_acc", "norm_at_memorize",
                "norm_at_generalize", *PHASE_KEYS}


def settings_of(t: dict[str, Any]) -> dict[str, Any]:
    """A sweep trial's settings: its scalar keys apart from its identity, seed and measurements."""
    return {k: v for k, v in t.items() if k not in NOT_SETTINGS and isinstance(v, (str, int, float, bool))}


def varied_settings(trials: Sequence[dict[str, Any]], ignore: Sequence[str] = ()) -> list[str]:
    """The settings (``settings_of``) that take more than one value across ``trials``, apart from ``ignore``."""
    return sorted({k for t in trials for k in settings_of(t) if k not in ignore
                   and len({str(u.get(k)) for u in trials}) > 1})


def seed_floor(cand: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How much of the delay no form can predict: trials that share a cell (architecture, operation, lr, weight
    decay and every other setting but the seed) differ only in their seed, and a form of the settings gives them
    one prediction. Over cells where ≥ 2 seeds generalized, the least mean relative error any single prediction
    per cell reaches on those trials (in-sample: a bound below every form's MAPE on them, held out or not), with
    the cells' seed-to-seed spread (max / min delay). None with no such cell."""
    cells: dict[tuple[Any, ...], list[tuple[float, dict[str, Any]]]] = {}
    for t in cand:
        if t.get("steps_to_generalize") is None or t["steps_to_generalize"] <= t["steps_to_memorize"]:
            continue
        key = tuple(sorted((k, str(v)) for k, v in settings_of(t).items()))
        cells.setdefault(key, []).append((float(t["steps_to_generalize"] - t["steps_to_memorize"]), t))
    errs: list[tuple[float, dict[str, Any]]] = []
    spreads: list[float] = []
    for members in cells.values():
        if len(members) < 2:
            continue
        d = [x for x, _ in members]
        c = _best_constant(d)
        errs += [(abs(c - x) / x, t) for x, t in members]
        spreads.append(max(d) / min(d))
    if not errs:
        return None
    by_arch: dict[str, list[float]] = {}
    for e, t in errs:
        by_arch.setdefault(str(t.get("model")), []).append(e)
    return {"mape_floor": float(np.mean([e for e, _ in errs])), "n_trials": len(errs), "n_cells": len(spreads),
            "median_spread": float(np.median(spreads)), "max_spread": float(max(spreads)),
            "by_architecture": {a: {"mape_floor": float(np.mean(v)), "n": len(v)} for a, v in sorted(by_arch.items())}}


def _mape(pred: Sequence[float], actual: Sequence[float]) -> float | None:
    errs = [abs(p - a) / a for p, a in zip(pred, actual) if a > 0]
    return float(np.mean(errs)) if errs else None


def delay_law(trials: Sequence[dict[str, Any]]) -> DelayLaw:
    """The delay law over a sweep's trials (dicts with run_id, status, seed, lr, weight_decay,
    steps_to_memorize, steps_to_generalize, norm_at_memorize, norm_at_generalize, last_step).

    Every trial is used, censored or excluded with its reason. The held-out MAPE fits on the first seed's
    trials and predicts the others' (with one seed: every second trial in order of lr·wd is held out)."""
    excluded: list[dict[str, Any]] = []
    cand: list[dict[str, Any]] = []
    for t in trials:
        why = None
        if t.get("status") not in ("done", None):
            why = f"status {t.get('status')}" + (f": {t['error']}" if t.get("error") else "")
        elif t.get("norm_clamp") not in (None, "none"):
            why = f"norm clamped ({t['norm_clamp']}): its norm cannot decay as the law assumes (see the clamp law)"
        elif not t.get("weight_decay") or not t.get("lr"):
            why = "lr x weight_decay = 0: the law has no decay rate to predict with"
        elif t.get("steps_to_memorize") is None:
            why = f"never memorized (train accuracy < 99% by step {t.get('last_step')})"
        elif t.get("norm_at_memorize") is None:
            why = "no weight norm logged at memorization"
        if why:
            excluded.append({"run_id": t.get("run_id"), "reason": why})
        else:
            cand.append(t)
    gen = [t for t in cand if t.get("steps_to_generalize") is not None and t.get("norm_at_generalize")]
    log_post = {id(t): math.log(t["norm_at_generalize"]) for t in gen}
    sd = float(np.std(list(log_post.values()), ddof=1)) if len(log_post) > 1 else None

    def post_for(t: dict[str, Any], pool: Sequence[dict[str, Any]]) -> float | None:
        others = [log_post[id(o)] for o in pool if id(o) in log_post and o is not t and task_of(o) == task_of(t)]
        return math.exp(float(np.mean(others))) if others else None

    def point(t: dict[str, Any], pool: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
        post = post_for(t, pool)
        if post is None:
            return None, "no other generalized trial to estimate the generalizing norm from"
        if t["norm_at_memorize"] <= post:
            return None, (f"‖θ‖² at memorization ({t['norm_at_memorize']:.4g}) is not above the generalizing norm "
                          f"({post:.4g}): the law predicts no delay, the norm need not fall")
        x = math.log(t["norm_at_memorize"] / post) / (t["lr"] * t["weight_decay"])
        censored = t.get("steps_to_generalize") is None
        end = t["steps_to_generalize"] if not censored else t.get("last_step")
        delay = (end or 0) - t["steps_to_memorize"]
        if delay <= 0:
            return None, "generalized no later than it memorized (no delay to explain)"
        return {"run_id": t.get("run_id"), "lr": t["lr"], "weight_decay": t["weight_decay"],
                "gamma_eff": t["lr"] * t["weight_decay"], "seed": t.get("seed"), "x": x, "delay": float(delay),
                "censored": censored, "norm_post": post, "architecture": t.get("model"),
                "operation": t.get("operation"), "norm_mem": t["norm_at_memorize"]}, None

    points = []
    for t in cand:
        pt, why = point(t, cand)
        if pt is None:
            excluded.append({"run_id": t.get("run_id"), "reason": why})
        else:
            points.append(pt)
    n_unc = sum(not p["censored"] for p in points)
    n_cens = len(points) - n_unc

    def empty(why_not: str) -> DelayLaw:
        return DelayLaw(None, [None, None], None, None, None, None, "", n_unc, n_cens, points, excluded, sd,
                        why_not=why_not)

    if n_unc < 3:
        return empty(f"{n_unc} trial(s) generalized with a usable x (need 3): {len(trials)} trials, "
                     f"{n_cens} censored (not generalized by their last step), {len(excluded)} excluded"
                     + (f" ({excluded[0]['reason']})" if excluded else ""))
    xs, ds, cs = ([p[k] for p in points] for k in ("x", "delay", "censored"))
    c, ci, sigma = fit_censored_constant(xs, ds, cs)
    unc = [p for p in points if not p["censored"]]
    ya = np.array([p["delay"] for p in unc])
    pred = c * np.array([p["x"] for p in unc])
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    r2 = 1 - float(((ya - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else None
    # leave one out: its V_post from the rest (already), the constant refitted without it
    loo_pred, loo_act = [], []
    for i, p in enumerate(points):
        if p["censored"]:
            continue
        rest = [q for j, q in enumerate(points) if j != i]
        if sum(not q["censored"] for q in rest) < 2:
            continue
        ci_, _, _ = fit_censored_constant([q["x"] for q in rest], [q["delay"] for q in rest],
                                          [q["censored"] for q in rest])
        loo_pred.append(ci_ * p["x"])
        loo_act.append(p["delay"])
    # held out: fit on one part, predict the other (their V_post from the fit part only)
    seeds = sorted({t.get("seed") for t in cand})
    if len(seeds) > 1:
        fit_part = [t for t in cand if t.get("seed") == seeds[0]]
        rule = f"fit on seed {seeds[0]}'s trials, predicted the other seeds'"
    else:
        order = sorted(cand, key=lambda t: t["lr"] * t["weight_decay"])
        fit_part = order[::2]
        rule = "fit on every other trial in order of lr x wd, predicted the rest"
    test_part = [t for t in cand if all(t is not f for f in fit_part)]
    fit_pts = [pt for pt in (point(t, fit_part)[0] for t in fit_part) if pt is not None]
    mape_ho = None
    test_pts: list[dict[str, Any]] = []
    if sum(not p["censored"] for p in fit_pts) >= 2:
        c_ho, _, _ = fit_censored_constant([p["x"] for p in fit_pts], [p["delay"] for p in fit_pts],
                                           [p["censored"] for p in fit_pts])
        test_pts = [pt for pt in (point(t, fit_part)[0] for t in test_part) if pt is not None and not pt["censored"]]
        mape_ho = _mape([c_ho * p["x"] for p in test_pts], [p["delay"] for p in test_pts])
        rule += f" ({len(test_pts)} generalized held-out trials)"
    for p in points:
        p["predicted"] = c * p["x"]
    forms = compare_forms(points, fit_pts, test_pts)
    fp = first_passage_form(cand, rule_seed=seeds[0] if len(seeds) > 1 else None)
    if fp is not None:
        forms["first_passage"] = fp
    return DelayLaw(c, ci, sigma, r2, _mape(loo_pred, loo_act), mape_ho, rule, n_unc, n_cens, points, excluded, sd,
                    forms=forms, seed_floor=seed_floor(cand))


# ---------------------------------------------------------------------------- progress measures


def key_frequencies(embedding: torch.Tensor, n_keys: int = 5) -> list[int]:
    """Frequencies 1..(p-1)/2 with the largest Fourier power in a [p, d] token embedding."""
    p = embedding.shape[0]
    spec = torch.fft.rfft(embedding.double(), dim=0).abs().pow(2).sum(-1)  # [p//2 + 1]
    spec[0] = 0
    order = torch.argsort(spec[1:(p - 1) // 2 + 1], descending=True) + 1
    return sorted(int(w) for w in order[:n_keys])


def _sum_basis(p: int, freqs: Sequence[int]) -> torch.Tensor:
    """Orthonormal directions cos(w(a+b)), sin(w(a+b)) over the p×p input grid: [2·|freqs|, p*p]."""
    a = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64).repeat(p)
    rows = []
    for w in freqs:
        ang = 2 * math.pi * w * (a + b) / p
        for f in (torch.cos(ang), torch.sin(ang)):
            rows.append(f / f.norm())
    return torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64)


def restricted_and_excluded_logits(logits: torch.Tensor, p: int, freqs: Sequence[int]) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """Split logits over all p² inputs ([p*p, C], row a*p+b) into the part along the key frequencies'
    cos/sin(w(a+b)) directions plus the constant (restricted), and the rest with those directions
    removed (excluded), as in Nanda et al. 2023."""
    L = logits.double()
    basis = _sum_basis(p, freqs)  # [m, p*p]
    along = basis.T @ (basis @ L)
    mean = L.mean(0, keepdim=True)
    restricted = mean + along
    excluded = L - along
    return restricted, excluded


def progress_measures(logits_all: torch.Tensor, labels_all: torch.Tensor, train_idx: torch.Tensor,
                      val_idx: torch.Tensor, p: int, freqs: Sequence[int]) -> dict[str, float]:
    """Restricted loss (all data) and excluded loss (training data) for one member."""
    restricted, excluded = restricted_and_excluded_logits(logits_all, p, freqs)

    def ce(lg: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(lg, y))

    return {
        "restricted_loss": ce(restricted, labels_all),
        "excluded_loss": ce(excluded[train_idx], labels_all[train_idx]),
        "full_val_loss_fp64": ce(logits_all.double()[val_idx], labels_all[val_idx]),
    }


def ildr(features: torch.Tensor, labels: torch.Tensor) -> float:
    """ILDR, the inter/intra-class distance ratio (arXiv 2604.20923): how far apart the class centroids of a
    representation lie against how far examples lie from their own class's centroid, as Fisher's criterion
    without eigendecomposition. Here: the mean Euclidean distance over pairs of class centroids divided by the
    mean distance of an example to its class centroid, on held-out examples (``features`` [n, d], ``labels``
    [n]); classes with no example are skipped. Our reading of the paper's definition (its code was not read)."""
    f = features.double()
    classes, inv = torch.unique(labels, return_inverse=True)
    k = len(classes)
    if k < 2:
        return float("nan")
    sums = torch.zeros(k, f.shape[1], dtype=f.dtype).index_add_(0, inv, f)
    counts = torch.bincount(inv, minlength=k).to(f.dtype)
    cent = sums / counts[:, None]
    intra = float((f - cent[inv]).norm(dim=1).mean())
    inter = float(torch.pdist(cent).mean())
    return inter / intra if intra > 0 else float("inf")


def early_predictions(runs: Sequence[dict[str, Any]], fraction: float = 0.5) -> list[dict[str, Any]]:
    """Predict each grokked run's T_grok from its own norm decay, seen only up to
    T_mem + ``fraction`` · (T_grok − T_mem), with the norm drop log(V_mem / V_post) taken as the median of
    the *other* runs (leave-one-out). Each run dict has steps_to_memorize, steps_to_generalize,
    norm_at_memorize, norm_at_generalize and records (the metrics log)."""
    usable = [r for r in runs if None not in (r.get("steps_to_memorize"), r.get("steps_to_generalize"),
                                                r.get("norm_at_memorize"), r.get("norm_at_generalize"))
              and r["norm_at_generalize"] < r["norm_at_memorize"]]
    out = []
    for r in usable:
        others = [math.log(o["norm_at_memorize"] / o["norm_at_generalize"]) for o in usable if o is not r]
        if not others:
            continue
        t_mem, t_grok = r["steps_to_memorize"], r["steps_to_generalize"]
        cutoff = t_mem + fraction * (t_grok - t_mem)
        seen = [(x["step"], x["weight_norm_sq"]) for x in r["records"] if x["step"] <= cutoff]
        pred = predict_grok_step([s for s, _ in seen], [v for _, v in seen], t_mem, float(np.median(others)))
        if pred is not None:
            out.append({"run_id": r.get("run_id"), "seen_until": int(cutoff), "actual": t_grok,
                        "predicted": round(pred), "abs_pct_error": abs(pred - t_grok) / t_grok})
    return out


# --------------------------------------------------------------------------- the norm clamp (causal test)
@dataclass
class ClampLaw:
    """The delay of trials whose ‖θ‖² was held at ``rho`` (``norm_clamp``), fitted as
    T_grok − T_mem = A·exp(alpha·rho) by least squares on log(delay) (arXiv 2606.13753 reports alpha ≈ 7.5 with
    rho the norm of its models; here rho is our squared norm, so the numbers are not comparable, the form is).
    Trials not generalized by their last step are censored (listed, not fitted)."""

    points: list[dict[str, Any]]
    alpha: float | None = None
    log_a: float | None = None
    r2: float | None = None
    n_used: int = 0
    n_censored: int = 0
    memorization: dict[str, int] = field(default_factory=dict)  # norm_clamp=memorization: trials, generalized
    why_not: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "log_a": self.log_a, "r2": self.r2, "n_used": self.n_used,
                "n_censored": self.n_censored, "memorization": self.memorization, "why_not": self.why_not,
                "points": self.points}


def clamp_law(trials: Sequence[dict[str, Any]]) -> ClampLaw | None:
    """The clamp law over a sweep's trials; None when no trial clamped its norm."""
    clamped = [t for t in trials if t.get("norm_clamp") not in (None, "none")]
    if not clamped:
        return None
    law = ClampLaw(points=[])
    mem = [t for t in clamped if t["norm_clamp"] == "memorization"]
    if mem:
        law.memorization = {"trials": len(mem), "generalized": sum(t.get("steps_to_generalize") is not None
                                                                    for t in mem)}
    for t in clamped:
        if t["norm_clamp"] == "memorization" or t.get("steps_to_memorize") is None:
            continue
        gen = t.get("steps_to_generalize")
        last = t.get("last_step") or 0
        law.points.append({"run_id": t.get("run_id"), "rho": float(t["norm_clamp"]), "seed": t.get("seed"),
                           "delay": (gen if gen is not None else last) - t["steps_to_memorize"],
                           "censored": gen is None})
    used = [p for p in law.points if not p["censored"] and p["delay"] > 0]
    law.n_used, law.n_censored = len(used), sum(p["censored"] for p in law.points)
    if len({p["rho"] for p in used}) < 3:
        law.why_not = (f"{len({p['rho'] for p in used})} clamp value(s) with generalized trials; the exponential "
                       "needs at least 3")
        return law
    x = np.array([p["rho"] for p in used])
    y = np.log([p["delay"] for p in used])
    alpha, log_a = np.polyfit(x, y, 1)
    resid = y - (log_a + alpha * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    law.alpha, law.log_a = float(alpha), float(log_a)
    law.r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else None
    return law


def clamp_laws(trials: Sequence[dict[str, Any]],
               ignore: tuple[str, ...] = ("norm_clamp",)
               ) -> list[tuple[dict[str, Any], ClampLaw]]:
    """``clamp_law`` apart for each group of clamped trials that share their other swept settings (e.g.
    ``layer_norm``), as (the group's settings, its law); [] when no trial clamped its norm. The settings are the
    settings that vary across the clamped trials (``varied_settings``), apart from ``ignore``."""
    clamped = [t for t in trials if t.get("norm_clamp") not in (None, "none")]
    if not clamped:
        return []
    keys = varied_settings(clamped, ignore)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for t in clamped:
        groups.setdefault(tuple(str(t.get(k)) for k in keys), []).append(t)
    out = []
    for members in groups.values():
        law = clamp_law(members)
        if law is not None:
            out.append(({k: members[0].get(k) for k in keys}, law))
    return out


# --------------------------------------------------------------------------- the forecast of T_grok
# Per architecture: ``k`` = (T_grok − T_mem)·lr·wd, the decay-rate form of the delay law (the best held-out form
# of the delay-law-wide plan on the MLP), ``ildr_rise`` = log(ILDR at T_grok / ILDR at T_mem), how far the ILDR
# climbs by generalization, and ``early`` / ``late``, the least and largest K over the median (how far the law
# spreads): from seed 0's 36 trials of `transferlab sweep grok --plan delay-law-wide` (the MLP at p = 97 and the
# transformer at p = 59, 40% train; 32 generalized; docs/RESULTS.md, issue 25, session 11). The transformer's
# come from that CPU-sized model only, whose delays differ up to 4.6x between seeds at one setting, so they are
# no calibration for other transformers; "*" pools both. ``calibrate_forecast`` recomputes them from any runs.
FORECAST_CALIBRATION: dict[str, dict[str, float]] = {
    "mlp": {"k": 2.91, "ildr_rise": 1.45, "early": 0.89, "late": 1.34},
    "transformer": {"k": 11.06, "ildr_rise": 2.04, "early": 0.51, "late": 1.75},
    "*": {"k": 3.6, "ildr_rise": 1.56, "early": 0.72, "late": 5.37},
}


def _median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs, float)))


def calibrate_forecast(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The forecast's constants per architecture (``model``) from generalized runs (dicts with model, lr,
    weight_decay and records, the metrics table): the median K and the median ILDR rise, and how far the law's
    K/(lr·wd) spreads over those runs (``early``: the least K over the median, ``late``: the largest), which the
    early stop and the "never" rule allow for; "*" pools them all."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        rec = r.get("records") or []
        g = (r.get("lr") or 0) * (r.get("weight_decay") or 0)
        ph = detect_phases(rec) if rec else None
        if not ph or ph.steps_to_memorize is None or ph.steps_to_generalize is None or g <= 0:
            continue
        t_mem, t_grok = ph.steps_to_memorize, ph.steps_to_generalize
        if t_grok <= t_mem:
            continue
        d = by.setdefault(str(r.get("model", "mlp")), {"k": [], "ildr_rise": []})
        d["k"].append((t_grok - t_mem) * g)
        il = {int(x["step"]): x.get("ildr") for x in rec}
        if il.get(t_mem) and il.get(t_grok) and il[t_mem] > 0 and il[t_grok] > 0:
            d["ildr_rise"].append(math.log(il[t_grok] / il[t_mem]))
    def consts(d: dict[str, list[float]]) -> dict[str, float]:
        k = _median(d["k"])
        return {"k": k, "ildr_rise": _median(d["ildr_rise"]), "early": min(d["k"]) / k, "late": max(d["k"]) / k}

    out: dict[str, dict[str, float]] = {}
    pooled: dict[str, list[float]] = {"k": [], "ildr_rise": []}
    for arch, d in by.items():
        if d["k"] and d["ildr_rise"]:
            out[arch] = consts(d)
            pooled["k"] += d["k"]
            pooled["ildr_rise"] += d["ildr_rise"]
    if pooled["k"]:
        out["*"] = consts(pooled)
    return out


def forecast_generalization(records: Sequence[dict[str, Any]], lr: float, weight_decay: float,
                            model: str = "mlp", calibration: dict[str, dict[str, float]] | None = None
                            ) -> dict[str, Any]:
    """Forecast a run's generalization step (99% validation accuracy) from its metrics table up to its last
    row only (a pure function of the rows given: truncating the future cannot change it).

    Two estimates of the delay D = T_grok − T_mem after the memorization step T_mem seen in the rows:
    - the fitted law: D_law = K / (lr·wd), K per architecture (``FORECAST_CALIBRATION``);
    - the ILDR (arXiv 2604.20923): ℓ(t) = log(ILDR(t) / ILDR(T_mem)) climbs to about ``ildr_rise`` at T_grok;
      a line through ℓ over the latter half of the rows since T_mem, extended to that level, gives D_ildr.
    They are averaged in log space with the weight w = ℓ(now) / ildr_rise (0 to 1) on D_ildr: the law
    speaks first, the progress measure takes over as it climbs. "Never" (``predicted_generalize_step`` None,
    ``never`` True): when twice the law's delay has passed (times ``late``, how much later than the law the
    latest calibration run came) and either neither ‖θ‖² nor the ILDR is moving toward generalization (the norm
    fell less than 1% over the latter half of the rows and ℓ, below its level at generalization, did not rise),
    or the ILDR has climbed less than a quarter of its rise at generalization.

    Returns made_at_step, predicted_generalize_step (None: cannot tell yet, or never), never, basis, the parts
    (t_mem, d_law, d_ildr, weight) and earliest_generalize_step: the delay scaled by ``early`` (how much sooner
    than the law the earliest calibration run came), which the early stop compares with its budget."""
    cal = calibration or FORECAST_CALIBRATION
    c = cal.get(model) or cal.get("*") or FORECAST_CALIBRATION["*"]
    out: dict[str, Any] = {"made_at_step": int(records[-1]["step"]) if records else 0,
                           "predicted_generalize_step": None, "never": False, "basis": ""}
    if not records:
        out["basis"] = "no rows yet"
        return out
    now = out["made_at_step"]
    ph = detect_phases(records)
    if ph.steps_to_generalize is not None:
        out.update(predicted_generalize_step=ph.steps_to_generalize, basis="already generalized")
        return out
    if ph.steps_to_memorize is None:
        out["basis"] = "not memorized yet"
        return out
    t_mem = ph.steps_to_memorize
    g = lr * weight_decay
    if g <= 0:
        out.update(never=True, basis="no weight decay: the law has no rate to predict with")
        return out
    d_law = c["k"] / g
    after = [r for r in records if int(r["step"]) >= t_mem]
    il0 = after[0].get("ildr")
    out.update(t_mem=t_mem, d_law=d_law)
    d_ildr, w, ell_now, slope = None, 0.0, 0.0, 0.0
    if il0 and il0 > 0 and len(after) >= 4 and all(r.get("ildr") for r in after):
        steps = np.array([float(r["step"]) for r in after])
        ell = np.log(np.array([float(r["ildr"]) for r in after]) / il0)
        half = len(after) // 2
        slope, icpt = np.polyfit(steps[half:], ell[half:], 1)
        ell_now = float(icpt + slope * steps[-1])  # the line's value now: one noisy row does not decide
        w = float(min(max(ell_now / c["ildr_rise"], 0.0), 1.0))
        if slope > 0:
            d_ildr = max(float(now + max(c["ildr_rise"] - ell_now, 0.0) / slope - t_mem), float(now - t_mem))
    out.update(d_ildr=d_ildr, weight=w)
    late, early = c.get("late", 1.0), c.get("early", 1.0)
    if now - t_mem > 2 * late * d_law:  # twice the delay of the latest calibration run, relative to the law
        tail = after[len(after) // 2:]
        v0, v1 = tail[0].get("weight_norm_sq"), tail[-1].get("weight_norm_sq")
        if slope <= 0 and w < 1 and v0 and v1 and v1 > 0.99 * v0:
            out.update(never=True, basis="twice the law's delay (its latest) has passed and neither the norm nor "
                                         "the ILDR moves toward generalization")
            return out
        if il0 and ell_now < 0.25 * c["ildr_rise"]:
            out.update(never=True, basis="twice the law's delay (its latest) has passed and the ILDR has climbed "
                                         "less than a quarter of its rise at generalization: no circuit is forming")
            return out
    if w >= 1:
        delay, basis = float(now - t_mem), "the ILDR is at its level at generalization: any step now"
    elif d_ildr is None or w <= 0:
        delay, basis = d_law, "the law (ILDR not rising yet)"
    else:
        delay = math.exp((1 - w) * math.log(d_law) + w * math.log(max(d_ildr, 1.0)))
        basis = f"the law and the ILDR (weight {w:.2f} on the ILDR)"
    delay = max(delay, float(now - t_mem))  # it has not generalized by now
    # the earliest it could come: as much sooner than the forecast as the earliest calibration run came against
    # the law (the early stop compares this with its budget, so a run that may still make it runs on)
    out.update(predicted_generalize_step=int(round(t_mem + delay)), basis=basis,
               earliest_generalize_step=int(round(t_mem + max(delay * early, float(now - t_mem)))))
    return out


def forecasts(records: Sequence[dict[str, Any]], lr: float, weight_decay: float, model: str = "mlp",
              n: int = 10, calibration: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """The forecast made at ``n`` evaluations spread over the run (every len/n-th row), each from the rows up to
    it: [{made_at_step, predicted_generalize_step, never, basis}]."""
    if not records:
        return []
    idx = sorted({max(0, math.ceil(len(records) * (i + 1) / n) - 1) for i in range(n)})
    keep = ("made_at_step", "predicted_generalize_step", "never", "basis")
    return [{k: f[k] for k in keep} for f in (forecast_generalization(records[:i + 1], lr, weight_decay, model,
                                                                       calibration) for i in idx)]


def forecast_errors(runs: Sequence[dict[str, Any]], fractions: Sequence[float] = (0.25, 0.5),
                    calibration: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The forecast made at each fraction of every generalized run's own T_grok (its rows up to that step
    only), against the T_grok it reached: the median absolute relative error per fraction, and each run's."""
    per: list[dict[str, Any]] = []
    for r in runs:
        rec = r.get("records") or []
        ph = detect_phases(rec) if rec else None
        if not ph or ph.steps_to_generalize is None:
            continue
        t_grok = ph.steps_to_generalize
        row: dict[str, Any] = {"run_id": r.get("run_id"), "model": r.get("model", "mlp"),
                               "operation": r.get("operation"), "t_grok": t_grok}
        for f in fractions:
            seen = [x for x in rec if x["step"] <= f * t_grok]
            fc = forecast_generalization(seen, r["lr"], r["weight_decay"], r.get("model", "mlp"), calibration)
            pred = fc["predicted_generalize_step"]
            row[f"predicted_at_{f:g}"] = pred
            row[f"error_at_{f:g}"] = None if pred is None else abs(pred - t_grok) / t_grok
        per.append(row)
    summary: dict[str, Any] = {"n_runs": len(per), "runs": per}
    for f in fractions:
        errs = [p[f"error_at_{f:g}"] for p in per if p[f"error_at_{f:g}"] is not None]
        summary[f"median_abs_rel_error_at_{f:g}"] = _median(errs) if errs else None
        summary[f"n_forecast_at_{f:g}"] = len(errs)
    by: dict[str, dict[str, Any]] = {}
    for p in per:
        by.setdefault(str(p["model"]), {})
    for m, d in by.items():
        for f in fractions:
            errs = [p[f"error_at_{f:g}"] for p in per if str(p["model"]) == m and p[f"error_at_{f:g}"] is not None]
            d[f"median_abs_rel_error_at_{f:g}"] = _median(errs) if errs else None
            d[f"n_forecast_at_{f:g}"] = len(errs)
    summary["by_architecture"] = by
    return summary


def forecast_says_late(fc: dict[str, Any], budget: int) -> bool:
    """Whether a forecast says its run will not generalize within ``budget`` steps: never, or even its earliest
    step (the law as early as its earliest calibration run) is past the budget."""
    pred = fc.get("earliest_generalize_step", fc.get("predicted_generalize_step"))
    return bool(fc.get("never")) or (pred is not None and pred > budget)


def early_stop_step(records: Sequence[dict[str, Any]], lr: float, weight_decay: float, budget: int,
                    model: str = "mlp", every: int = 5,
                    calibration: dict[str, dict[str, float]] | None = None) -> int | None:
    """The step at which ``forecast_early_stop`` would have stopped this run alone (its rule, ForecastStop in
    run.py: every ``every``-th evaluation before the budget, a member not yet generalized whose forecast is late),
    replayed on its rows; None when it would have run on."""
    for i in range(every - 1, len(records), every):
        step = int(records[i]["step"])
        if step >= budget:
            return None
        fc = forecast_generalization(records[:i + 1], lr, weight_decay, model, calibration)
        if fc["basis"] == "already generalized":
            return None
        if forecast_says_late(fc, budget):
            return step
    return None
