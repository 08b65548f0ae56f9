"""Pure functions from grokking results to findings: phases, seed statistics, the delay law,
and Nanda et al.'s Fourier progress measures. No I/O, no training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats

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


@dataclass
class DelayLawFit:
    """T_grok - T_mem = c * x with x = log(||θ_mem||² / ||θ_post||²) / (lr·wd)  (arXiv 2603.13331).

    The follow-up (arXiv 2605.18845) writes the same law as log(V_mem / V*) / (2 κ lr wd): κ = 1 / (2c).
    """

    c: float
    intercept: float
    r2: float
    kappa: float
    heldout_mape: float | None
    n: int
    x: list[float]
    delay: list[float]


def delay_law_x(lr: float, wd: float, norm_mem: float, norm_post: float) -> float:
    return math.log(norm_mem / norm_post) / (lr * wd)


def fit_delay_law(x: Sequence[float], delay: Sequence[float], with_intercept: bool = False) -> DelayLawFit:
    """Least squares of delay on x (through the origin by default, as the law states), R² and the
    leave-one-out mean absolute percentage error on held-out runs."""
    xa, ya = np.asarray(x, float), np.asarray(delay, float)
    if len(xa) < 3:
        raise ValueError(f"need at least 3 grokked runs to fit the delay law, got {len(xa)}")

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
        if with_intercept:
            c, b = np.polyfit(xs, ys, 1)
            return float(c), float(b)
        return float((xs @ ys) / (xs @ xs)), 0.0

    c, b = fit(xa, ya)
    pred = c * xa + b
    ss_res = float(((ya - pred) ** 2).sum())
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    errs = []
    for i in range(len(xa)):
        m = np.arange(len(xa)) != i
        ci, bi = fit(xa[m], ya[m])
        if ya[i] > 0:
            errs.append(abs(ci * xa[i] + bi - ya[i]) / ya[i])
    return DelayLawFit(c=c, intercept=b, r2=r2, kappa=1 / (2 * c) if c > 0 else float("nan"),
                       heldout_mape=float(np.mean(errs)) if errs else None, n=len(xa),
                       x=xa.tolist(), delay=ya.tolist())


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
