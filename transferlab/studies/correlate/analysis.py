"""Pure analysis of cross-stage evaluations (no I/O): correlations, bootstrap, calibration.

Conventions (documented in docs/RESULTS.md):

- A cross-stage correlation of a benchmark is computed across models: x = the models' scores
  before fine-tuning (``pre`` stage), y = the same models' scores after (``post`` stage).
- Intervals are percentile bootstrap intervals over models (resample models with replacement,
  recompute all three statistics on the resample; resamples where a statistic is undefined
  because one side is constant are dropped). The bootstrap is vectorized over resamples.
- Spearman = Pearson of average ranks; Kendall is tau-b (ties handled as scipy does).
- A category's score per model is the mean over the category's benchmarks.
- A benchmark is a *reliable* cross-stage predictor when its Spearman correlation of accuracy is
  >= ``threshold`` (default 0.7) and the lower end of its interval is > 0; otherwise unreliable;
  undefined when a stage is constant across models.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("spearman", "kendall", "pearson")
QUANTITIES = ("accuracy", "confidence")

# Default capability categories of common lm-evaluation-harness tasks; '*' matches any suffix.
DEFAULT_CATEGORIES: dict[str, str] = {
    "hellaswag": "commonsense", "piqa": "commonsense", "siqa": "commonsense", "social_iqa": "commonsense",
    "winogrande": "commonsense", "copa": "commonsense", "commonsense_qa": "commonsense",
    "storycloze*": "commonsense", "swag": "commonsense",
    "arc_easy": "science", "arc_challenge": "science", "sciq": "science", "openbookqa": "science",
    "gpqa*": "science",
    "mmlu*": "knowledge", "triviaqa": "knowledge", "nq_open": "knowledge", "naturalqs*": "knowledge",
    "truthfulqa*": "knowledge", "webqs": "knowledge", "cmmlu*": "knowledge",
    "logiqa*": "reasoning", "bbh*": "reasoning", "anli*": "reasoning", "hendrycks_ethics*": "reasoning",
    "mnli*": "reasoning", "rte": "reasoning", "wnli": "reasoning", "cb": "reasoning", "wsc*": "reasoning",
    "gsm8k*": "math", "mathqa": "math", "minerva_math*": "math", "hendrycks_math*": "math",
    "asdiv": "math", "arithmetic*": "math", "math*": "math",
    "boolq": "reading", "race": "reading", "squad*": "reading", "drop": "reading", "coqa": "reading",
    "multirc": "reading", "lambada*": "reading", "record": "reading",
}


def category_of(benchmark: str, overrides: Mapping[str, str] | None = None) -> str:
    """Exact override > exact default > first matching default pattern > 'other'."""
    if overrides and benchmark in overrides:
        return overrides[benchmark]
    if benchmark in DEFAULT_CATEGORIES:
        return DEFAULT_CATEGORIES[benchmark]
    for pat, cat in DEFAULT_CATEGORIES.items():
        if "*" in pat and fnmatch.fnmatchcase(benchmark, pat):
            return cat
    if overrides:
        for pat, cat in overrides.items():
            if "*" in pat and fnmatch.fnmatchcase(benchmark, pat):
                return cat
    return "other"


# ---- correlations ---------------------------------------------------------------------------
def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Point estimates with scipy: Spearman rho, Kendall tau-b, Pearson r (NaN if undefined)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict.fromkeys(METHODS, float("nan"))
    return {
        "spearman": float(stats.spearmanr(x, y).statistic),
        "kendall": float(stats.kendalltau(x, y).statistic),
        "pearson": float(stats.pearsonr(x, y).statistic),
    }


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sxx = (xc * xc).sum(axis=1)
    syy = (yc * yc).sum(axis=1)
    scale = np.maximum((x * x).sum(axis=1), 1e-300) * np.maximum((y * y).sum(axis=1), 1e-300)
    ok = (sxx * syy) > 1e-24 * scale  # a constant row has no correlation
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt(sxx * syy)
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def _kendall_rows(x: np.ndarray, y: np.ndarray, chunk: int = 256) -> np.ndarray:
    """tau-b per row: sum sx*sy / sqrt(sum sx^2 * sum sy^2) over ordered pairs (ties -> 0)."""
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], chunk):
        xs, ys = x[s:s + chunk], y[s:s + chunk]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])
        sy = np.sign(ys[:, :, None] - ys[:, None, :])
        num = (sx * sy).sum(axis=(1, 2))
        den = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + chunk] = np.where(den > 0, num / den, np.nan)
    return out


def correlations_rows(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The three statistics for every row of (B, n) arrays at once."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    return {"spearman": _pearson_rows(rx, ry), "kendall": _kendall_rows(x, y), "pearson": _pearson_rows(x, y)}


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_correlations(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, ci: float = 0.95,
                           seed: int = 0, idx: np.ndarray | None = None) -> dict[str, Any]:
    """Point estimates and percentile intervals from resampling the models (pairs kept together)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    point = correlations(x, y)
    idx = bootstrap_indices(len(x), n_boot, seed) if idx is None else idx
    boot = correlations_rows(x[idx], y[idx])
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out: dict[str, Any] = {"n": int(len(x))}
    for m in METHODS:
        v = boot[m][np.isfinite(boot[m])]
        out[m] = point[m]
        if np.isfinite(point[m]) and len(v) >= max(10, len(boot[m]) // 2):
            out[f"{m}_ci"] = [float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))]
        else:
            out[f"{m}_ci"] = [float("nan"), float("nan")]
    return out


def reliability(spearman: float, ci: Sequence[float], threshold: float) -> str:
    if not np.isfinite(spearman):
        return "undefined"
    lo = ci[0] if np.isfinite(ci[0]) else -np.inf
    return "reliable" if spearman >= threshold and lo > 0 else "unreliable"


# ---- tables -> matrices ---------------------------------------------------------------------
def stage_matrix(table: pd.DataFrame, stage: str, quantity: str, models: Sequence[str],
                 benchmarks: Sequence[str]) -> np.ndarray:
    """(n_models, n_benchmarks) scores of one stage, rows in ``models`` order."""
    t = table[table["stage"] == stage].pivot(index="model", columns="benchmark", values=quantity)
    return t.reindex(index=list(models), columns=list(benchmarks)).to_numpy(dtype=float)


def _cross_stage(pre: np.ndarray, post: np.ndarray, idx: np.ndarray, ci: float, threshold: float
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in QUANTITIES:
        x, y = pre[q], post[q]
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            for m in METHODS:
                out[f"{m}_{q}"] = None
                out[f"{m}_{q}_ci"] = None
            out[f"reliability_{q}"] = "undefined"
            continue
        r = bootstrap_correlations(x, y, ci=ci, idx=idx)
        for m in METHODS:
            out[f"{m}_{q}"] = r[m]
            out[f"{m}_{q}_ci"] = r[f"{m}_ci"]
        out[f"reliability_{q}"] = reliability(r["spearman"], r["spearman_ci"], threshold)
        out[f"mean_{q}_pre"] = float(np.mean(x))
        out[f"mean_{q}_post"] = float(np.mean(y))
    out["n_models"] = int(len(pre["accuracy"]))
    return out


def cross_stage(table: pd.DataFrame, stages: tuple[str, str], *, categories: Mapping[str, str] | None = None,
                n_boot: int = 2000, ci: float = 0.95, seed: int = 0, threshold: float = 0.7,
                models: Sequence[str] | None = None) -> dict[str, Any]:
    """Per benchmark and per category correlations between stages, over ``models`` (default all)."""
    pre_s, post_s = stages
    models = sorted(table["model"].unique()) if models is None else list(models)
    benchmarks = sorted(table["benchmark"].unique())
    idx = bootstrap_indices(len(models), n_boot, seed)  # same resamples for every benchmark
    mats = {(s, q): stage_matrix(table, s, q, models, benchmarks) for s in stages for q in QUANTITIES}
    per_bench: dict[str, Any] = {}
    for j, b in enumerate(benchmarks):
        pre = {q: mats[(pre_s, q)][:, j] for q in QUANTITIES}
        post = {q: mats[(post_s, q)][:, j] for q in QUANTITIES}
        per_bench[b] = {"category": category_of(b, categories), **_cross_stage(pre, post, idx, ci, threshold)}
    per_cat: dict[str, Any] = {}
    cats = sorted({v["category"] for v in per_bench.values()})
    for c in cats:
        cols = [j for j, b in enumerate(benchmarks) if per_bench[b]["category"] == c]
        pre = {q: mats[(pre_s, q)][:, cols].mean(axis=1) for q in QUANTITIES}
        post = {q: mats[(post_s, q)][:, cols].mean(axis=1) for q in QUANTITIES}
        per_cat[c] = {"benchmarks": [benchmarks[j] for j in cols],
                      **_cross_stage(pre, post, idx, ci, threshold)}
    return {"benchmarks": per_bench, "categories": per_cat, "models": models}


def ranking(per_bench: Mapping[str, Mapping[str, Any]], quantity: str = "accuracy") -> list[dict[str, Any]]:
    """Benchmarks best to worst cross-stage predictor (by Spearman; undefined last)."""
    def key(item):
        v = item[1].get(f"spearman_{quantity}")
        return -(v if v is not None and np.isfinite(v) else -np.inf)

    rows = []
    for rank, (b, r) in enumerate(sorted(per_bench.items(), key=key), 1):
        rows.append({"rank": rank, "benchmark": b, "category": r["category"],
                     "spearman": r.get(f"spearman_{quantity}"), "ci": r.get(f"spearman_{quantity}_ci"),
                     "kendall": r.get(f"kendall_{quantity}"), "pearson": r.get(f"pearson_{quantity}"),
                     "verdict": r.get(f"reliability_{quantity}")})
    return rows


def by_scale(table: pd.DataFrame, stages: tuple[str, str], *, min_models: int = 3, **kw: Any
             ) -> tuple[dict[str, Any], list[str]]:
    """The cross-stage analysis within each scale that has at least ``min_models`` models."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    scales = table.groupby("scale")["model"].unique()
    if len(scales) < 2:
        return out, notes
    for scale in sorted(scales.index, key=_scale_key):
        models = sorted(scales[scale])
        if len(models) < min_models:
            notes.append(f"scale {scale}: {len(models)} model(s), fewer than {min_models}; not split out")
            continue
        sub = table[table["model"].isin(models)]
        out[str(scale)] = cross_stage(sub, stages, models=models, **kw)
    return out, notes


def _scale_key(s: str) -> tuple[float, str]:
    """'240M' < '1B' < '7B'; plain numbers by value; anything else by name, last."""
    t = str(s).strip().upper()
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
    try:
        if t and t[-1] in mult:
            return (float(t[:-1]) * mult[t[-1]], t)
        return (float(t), t)
    except ValueError:
        return (float("inf"), t)


# ---- decisions across scale (DataDecide, arXiv 2504.11393) ----------------------------------
def size_value(size: str) -> float | None:
    """A size's parameter count for ordering: a zoo size name (its non-embedding parameters), a count with a
    K/M/B/T suffix ('150M', '1B') or a plain number; None for anything else ('all', 'big')."""
    from transferlab.zoo.sizes import FAMILY

    s = str(size).strip()
    if s in FAMILY:
        return float(FAMILY[s].non_embedding_params())
    v, _ = _scale_key(s)
    return v if np.isfinite(v) and v > 0 else None


def _pair_agreement(small: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row of (B, n) arrays: mean over the n(n-1)/2 pairs i < j of 1 when both sizes order the pair the same
    way, 0 when they order it oppositely, 1/2 when either size ties it (the expected agreement of a fair coin
    breaking the tie)."""
    n = small.shape[-1]
    iu, ju = np.triu_indices(n, k=1)
    ds = np.sign(small[..., iu] - small[..., ju])
    dt = np.sign(target[..., iu] - target[..., ju])
    agree = np.where((ds == 0) | (dt == 0), 0.5, (ds == dt).astype(float))
    return agree.mean(axis=-1)


def decision_accuracy(small: Sequence[float], target: Sequence[float]) -> float:
    """DataDecide's decision accuracy: over every pair of mixtures, does the small size's ranking pick the same
    winner as the target size's? The fraction of pairs that agree; a pair tied at either size counts 1/2.
    ``small[i]`` and ``target[i]`` are mixture i's scores at the two sizes (higher is better). NaN under 2
    mixtures."""
    s = np.asarray(small, float)
    t = np.asarray(target, float)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError("small and target need one score per mixture, in the same order")
    if len(s) < 2:
        return float("nan")
    return float(_pair_agreement(s[None, :], t[None, :])[0])


def tied_pairs(small: Sequence[float], target: Sequence[float]) -> int:
    """How many pairs of mixtures either size ties (each counted 1/2 by :func:`decision_accuracy`)."""
    s, t = np.asarray(small, float), np.asarray(target, float)
    iu, ju = np.triu_indices(len(s), k=1)
    return int(((s[iu] == s[ju]) | (t[iu] == t[ju])).sum())


def bootstrap_decision_accuracy(small_items: np.ndarray, target_items: np.ndarray, *, n_boot: int = 2000,
                                ci: float = 0.95, seed: int = 0, idx: np.ndarray | None = None
                                ) -> dict[str, Any]:
    """Decision accuracy with a percentile interval from resampling the benchmark's items.

    ``small_items`` and ``target_items`` are (n_mixtures, n_items) per-item scores of each mixture at the small
    and the target size, on the same items in the same order. One resample draws n_items items with
    replacement, the same draw for every mixture and both sizes (the items are shared), takes each mixture's
    mean over the drawn items at each size, and computes the decision accuracy of those means. ``value`` is the
    decision accuracy of the means over all items.
    """
    s = np.asarray(small_items, float)
    t = np.asarray(target_items, float)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError("small_items and target_items must both be (n_mixtures, n_items)")
    n_mix, n_items = s.shape
    value = decision_accuracy(s.mean(axis=1), t.mean(axis=1))
    out: dict[str, Any] = {"value": value, "ci": None, "n_items": int(n_items),
                           "tied_pairs": tied_pairs(s.mean(axis=1), t.mean(axis=1))}
    if n_mix < 2 or n_items < 2:
        return out
    idx = bootstrap_indices(n_items, n_boot, seed) if idx is None else idx
    boot = np.empty(len(idx))
    for start in range(0, len(idx), 500):  # (chunk, n_mix) means without a (B, n_mix, n_items) array
        ix = idx[start:start + 500]
        sm = np.stack([row[ix].mean(axis=1) for row in s], axis=1)
        tm = np.stack([row[ix].mean(axis=1) for row in t], axis=1)
        boot[start:start + len(ix)] = _pair_agreement(sm, tm)
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out["ci"] = [float(np.percentile(boot, lo_q)), float(np.percentile(boot, hi_q))]
    return out


DECISION_QUANTITIES = ("accuracy", "continuous")
CONTINUOUS_LABEL = "the gold choice's log-probability per character of its continuation, mean over items"


def item_scores(samples: Mapping[tuple[str, str, str], Any]) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """Per-item scores of each (model, stage, benchmark) whose samples carry them: ``accuracy`` (the item's
    metric, 0/1) and ``continuous`` (see :data:`CONTINUOUS_LABEL`)."""
    out: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    for key, st in samples.items():
        d = {q: getattr(st, attr) for q, attr in (("accuracy", "score"), ("continuous", "continuous"))
             if getattr(st, attr, None) is not None}
        if d:
            out[key] = d
    return out


def _decision_entry(small: str, target: str, mixtures: list[str], scores: Mapping[str, Any],
                    items: Mapping[str, Any], *, n_boot: int, ci: float, seed: int) -> dict[str, Any]:
    """One (small size, target size) comparison of one benchmark and stage, for both quantities."""
    entry: dict[str, Any] = {"sizes": [small, target], "small": small, "target": target,
                             "mixtures": mixtures, "n_pairs": len(mixtures) * (len(mixtures) - 1) // 2}
    for q in DECISION_QUANTITIES:
        it = items.get(q)
        if it is not None:
            r = bootstrap_decision_accuracy(it[small], it[target], n_boot=n_boot, ci=ci, seed=seed)
        else:
            xs, xt = scores[q][small], scores[q][target]
            if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(xt))):
                entry[q] = {"value": None, "ci": None}
                continue
            r = {"value": decision_accuracy(xs, xt), "ci": None, "n_items": None, "tied_pairs": tied_pairs(xs, xt)}
        entry[q] = r
    return entry


def decisions(table: pd.DataFrame, stage: str, items: Mapping[tuple[str, str, str], Mapping[str, np.ndarray]]
              | None = None, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
              ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Decision accuracy per benchmark within ``stage``: the ranking of the mixtures at each smaller size
    against their ranking at a larger one (DataDecide's decision accuracy), for accuracy and for the continuous
    score (column ``continuous``: the gold choice's log-probability per character).

    ``items`` maps (model, stage, benchmark) to per-item arrays ``{"accuracy": ..., "continuous": ...}`` on the
    benchmark's items in one order shared by every model; where every model of a comparison has them, the
    interval is the bootstrap over items of :func:`bootstrap_decision_accuracy`, else the value has no interval.
    Several models with one (mixture, size) are seeds: their scores (and per-item scores) are averaged, as
    DataDecide averages its target scale's seeds.

    Returns (per benchmark: the smallest -> largest comparison with every comparison of a smaller size against a
    larger one in ``by_sizes``; info: the sizes in order and the mixtures; notes).
    """
    t = table[table["stage"] == stage]
    if "continuous" not in t.columns:
        t = t.assign(continuous=np.nan)
    notes: list[str] = []
    sizes = sorted({str(s) for s in t["scale"]}, key=lambda s: (size_value(s) or np.inf, s))
    unordered = [s for s in sizes if size_value(s) is None]
    if len(sizes) < 2 or unordered:
        why = (f"sizes {', '.join(unordered)} are not parameter counts (such as 150M or 1B)" if unordered and
               len(sizes) >= 2 else "every model has one size")
        notes.append(f"no decision accuracy: {why}; give each model a size (the scale column of models.csv or "
                     "the CSV, or --sizes MODEL=SIZE,...) and the same mixture at two or more sizes")
        return {}, {"sizes": sizes, "stage": stage}, notes
    mix_at = {s: set(t.loc[t["scale"] == s, "mixture"]) for s in sizes}
    comparisons = [(a, b) for i, a in enumerate(sizes) for b in sizes[i + 1:]
                   if len(mix_at[a] & mix_at[b]) >= 2]
    if not comparisons:
        notes.append("no decision accuracy: no two sizes share two or more mixtures (a mixture is the same "
                     "pretraining data at every size; name it in the mixture column of models.csv or the CSV)")
        return {}, {"sizes": sizes, "stage": stage}, notes
    seeds = t.groupby(["mixture", "scale", "benchmark"])["model"].nunique()
    if (seeds > 1).any():
        notes.append(f"{int(seeds.max())} models share one (mixture, size) somewhere: their scores are averaged "
                     "(as seeds) before ranking the mixtures")
    benchmarks = sorted(t["benchmark"].unique())
    items = items or {}
    per_bench: dict[str, Any] = {}
    for b in benchmarks:
        tb = t[t["benchmark"] == b]
        by_comp = []
        for small, target in comparisons:
            mixtures = sorted(mix_at[small] & mix_at[target])
            scores: dict[str, dict[str, np.ndarray]] = {q: {} for q in DECISION_QUANTITIES}
            it: dict[str, dict[str, np.ndarray] | None] = {q: {} for q in DECISION_QUANTITIES}
            for size in (small, target):
                rows = tb[tb["scale"] == size]
                for q in DECISION_QUANTITIES:
                    scores[q][size] = np.array([rows.loc[rows["mixture"] == m, q].astype(float).mean()
                                                for m in mixtures])
                    per_mix = []
                    for m in mixtures:
                        models = rows.loc[rows["mixture"] == m, "model"]
                        arrs = [items.get((mod, stage, b), {}).get(q) for mod in models]
                        if any(a is None for a in arrs) or len({len(a) for a in arrs}) != 1:
                            per_mix = None
                            break
                        per_mix.append(np.mean(np.stack(arrs), axis=0))
                    if it[q] is not None and per_mix is not None and len({len(a) for a in per_mix}) == 1:
                        it[q][size] = np.stack(per_mix)
                    else:
                        it[q] = None
            for q in DECISION_QUANTITIES:  # per-item arrays of the two sizes must cover the same items
                if it[q] is not None and it[q][small].shape != it[q][target].shape:
                    it[q] = None
            by_comp.append(_decision_entry(small, target, mixtures, scores, it, n_boot=n_boot, ci=ci, seed=seed))
        main = next((c for c in by_comp if c["small"] == sizes[0] and c["target"] == sizes[-1]), by_comp[-1])
        per_bench[b] = {"stage": stage, **main, "by_sizes": by_comp}
    info = {"stage": stage, "sizes": sizes, "comparisons": [list(c) for c in comparisons]}
    return per_bench, info, notes


# ---- calibration ----------------------------------------------------------------------------
def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum_b (n_b/n) |acc_b - conf_b| over equal-width confidence bins."""
    c = np.asarray(confidence, float)
    y = np.asarray(correct, float)
    if len(c) == 0:
        return float("nan")
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    sc = np.bincount(bins, weights=c, minlength=n_bins)
    sy = np.bincount(bins, weights=y, minlength=n_bins)
    return float(np.abs(sy - sc).sum() / len(c))


def calibration_per_model(table: pd.DataFrame, samples: Mapping[tuple[str, str, str], Any],
                          stages: tuple[str, str], n_bins: int = 10) -> list[dict[str, Any]]:
    """Per model and stage: ECE, Brier (pooled docs, when samples exist), alignment of accuracy and
    confidence across benchmarks (Pearson) and the mean gap confidence - accuracy."""
    rows = []
    for (model, stage), grp in table[table["stage"].isin(stages)].groupby(["model", "stage"]):
        acc = grp["accuracy"].to_numpy(float)
        conf = grp["confidence"].to_numpy(float)
        row: dict[str, Any] = {"model": model, "stage": stage, "scale": grp["scale"].iloc[0],
                               "mixture": grp["mixture"].iloc[0], "ece": None, "brier": None,
                               "alignment": None, "gap": None}
        parts = [samples[(model, stage, b)] for b in grp["benchmark"] if (model, stage, b) in samples]
        if parts:
            pm = np.concatenate([p.p_max for p in parts])
            cor = np.concatenate([p.correct for p in parts])
            row["ece"] = ece(pm, cor, n_bins)
            row["brier"] = float(np.concatenate([p.brier for p in parts]).mean())
        # over the benchmarks that have a confidence (a task without one is noted by the loader)
        has = np.isfinite(conf)
        row["n_benchmarks_confidence"] = int(has.sum())
        acc, conf = acc[has], conf[has]
        if len(conf):
            row["gap"] = float(np.mean(conf - acc))
            if len(conf) >= 3 and np.ptp(conf) > 0 and np.ptp(acc) > 0:
                row["alignment"] = float(stats.pearsonr(acc, conf).statistic)
        rows.append(row)
    return rows


CALIBRATION_METRICS = ("ece", "brier", "gap", "alignment")


def calibration_transfer(rows: Sequence[Mapping[str, Any]], stages: tuple[str, str], *, n_boot: int = 2000,
                         ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Does a model's calibration before fine-tuning predict it after? Spearman (+ interval) across
    models, and the mean change post - pre, per calibration metric."""
    pre_s, post_s = stages
    by = {(r["model"], r["stage"]): r for r in rows}
    models = sorted({r["model"] for r in rows})
    out: dict[str, Any] = {}
    for k in CALIBRATION_METRICS:
        x = np.array([_num(by.get((m, pre_s), {}).get(k)) for m in models])
        y = np.array([_num(by.get((m, post_s), {}).get(k)) for m in models])
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        r = bootstrap_correlations(x[ok], y[ok], n_boot=n_boot, ci=ci, seed=seed)
        out[k] = {"spearman": r["spearman"], "spearman_ci": r["spearman_ci"], "pearson": r["pearson"],
                  "mean_pre": float(x[ok].mean()), "mean_post": float(y[ok].mean()),
                  "mean_change": float((y[ok] - x[ok]).mean()), "n_models": int(ok.sum())}
    return out


def _num(v: Any) -> float:
    return float(v) if v is not None else float("nan")


# ---- coherence between benchmarks -----------------------------------------------------------
def benchmark_correlation_matrix(table: pd.DataFrame, stage: str, quantity: str = "accuracy"
                                 ) -> tuple[list[str], np.ndarray]:
    """Spearman between benchmarks across models within one stage (n_b, n_b)."""
    models = sorted(table["model"].unique())
    benchmarks = sorted(table["benchmark"].unique())
    m = stage_matrix(table, stage, quantity, models, benchmarks)
    r = stats.rankdata(m, axis=0).T  # (n_b, n_models)
    rc = r - r.mean(axis=1, keepdims=True)
    norm = np.sqrt((rc * rc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (rc @ rc.T) / np.outer(norm, norm)
    c[~np.isfinite(c)] = np.nan
    np.fill_diagonal(c, 1.0)
    return benchmarks, c


def intra_category_coherence(table: pd.DataFrame, stages: tuple[str, str], categories: Mapping[str, str]
                             | None = None, quantity: str = "accuracy") -> dict[str, Any]:
    """Per category and stage: mean off-diagonal Spearman between the category's benchmarks."""
    out: dict[str, Any] = {}
    for stage in stages:
        names, c = benchmark_correlation_matrix(table, stage, quantity)
        cats = np.array([category_of(b, categories) for b in names])
        for cat in sorted(set(cats)):
            ix = np.flatnonzero(cats == cat)
            entry = out.setdefault(cat, {"benchmarks": [names[i] for i in ix]})
            if len(ix) < 2:
                entry[stage] = None
                continue
            sub = c[np.ix_(ix, ix)][~np.eye(len(ix), dtype=bool)]
            entry[stage] = float(np.nanmean(sub)) if np.isfinite(sub).any() else None
    return out


def analyze(table: pd.DataFrame, stages: tuple[str, str], samples: Mapping[tuple[str, str, str], Any]
            | None = None, *, categories: Mapping[str, str] | None = None, n_boot: int = 2000,
            ci: float = 0.95, seed: int = 0, threshold: float = 0.7, min_models: int = 3,
            ece_bins: int = 10) -> dict[str, Any]:
    """The whole study's findings from a validated tidy table."""
    kw = dict(categories=categories, n_boot=n_boot, ci=ci, seed=seed, threshold=threshold)
    main = cross_stage(table, stages, **kw)
    scales, notes = by_scale(table, stages, min_models=min_models, **kw)
    cal_rows = calibration_per_model(table, samples or {}, stages, ece_bins)
    items = item_scores(samples or {})
    decision: dict[str, Any] = {"continuous": CONTINUOUS_LABEL, "ties": "a pair tied at either size counts 1/2"}
    for k, stage in zip(("decision_accuracy", "decision_accuracy_post"), stages):
        per_b, info, dnotes = decisions(table, stage, items, n_boot=n_boot, ci=ci, seed=seed)
        for b, r in main["benchmarks"].items():
            r[k] = per_b.get(b)
        if stage == stages[0]:
            decision.update(info)
            notes += dnotes
    return {
        "stages": list(stages),
        "n_models": len(main["models"]),
        "models": main["models"],
        "benchmarks": main["benchmarks"],
        "categories": main["categories"],
        "ranking_accuracy": ranking(main["benchmarks"], "accuracy"),
        "ranking_confidence": ranking(main["benchmarks"], "confidence"),
        "by_scale": {s: {"benchmarks": v["benchmarks"], "categories": v["categories"],
                         "n_models": len(v["models"])} for s, v in scales.items()},
        "calibration": {"per_model": cal_rows,
                        "transfer": calibration_transfer(cal_rows, stages, n_boot=n_boot, ci=ci, seed=seed)},
        "coherence": intra_category_coherence(table, stages, categories),
        "decision": decision,
        "settings": {"n_boot": n_boot, "ci": ci, "seed": seed, "reliable_threshold": threshold,
                     "min_models": min_models},
        "notes": notes,
    }
