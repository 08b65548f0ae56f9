"""Read cross-stage evaluations: lm-evaluation-harness folders or a tidy CSV.

Folder layout (decided here, documented in docs/RESULTS.md)::

    <root>/<stage>/<model>/**/results_*.json      one folder per stage, one per model inside it
    <root>/<stage>/<model>/**/samples_<task>_*.jsonl   (optional, from lm_eval --log_samples)
    <root>/models.csv                               (optional) columns model, mixture, scale

The model folder's name is the model's identity; it must be the same in both stages. Without
``models.csv`` a model's mixture is its name and its scale is "all". ``lm_eval --output_path
<root>/<stage>/<model>`` produces exactly this (the harness adds one sub-folder, which is fine).
When a model folder holds several ``results_*.json`` they are merged, the newest (by file name,
which carries the harness's timestamp) winning for a task present in more than one.

Benchmarks are the tasks whose ``results[task]`` has the accuracy metric (``acc,none``, or
``acc_norm,none`` with ``metric="acc_norm"``). A group task (``group_subtasks`` in the file) is
kept as one benchmark and its subtasks are dropped, unless ``tasks`` names them.

Confidence of one doc = softmax over the choices' log-likelihoods, taken at the gold choice; the
benchmark's confidence is its mean over docs. Raw (not length-normalized) log-likelihoods are
used for every metric. Per doc we also keep max-probability and whether the argmax is gold, and
the multi-class Brier term, for calibration.

A tidy CSV has one row per (model, stage, benchmark) with columns model, stage, benchmark,
accuracy and, optionally, mixture, scale, confidence. It carries no per-doc samples, so ECE and
Brier are not available from it (the benchmark-level calibration gap is).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.core.errors import DataError

_SAMPLES_RE = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[0-9.:\-]+)\.jsonl$")
COLUMNS = ["model", "stage", "mixture", "scale", "benchmark", "accuracy", "confidence"]


@dataclass
class SampleStats:
    """Per-doc figures of one (model, stage, benchmark)."""

    p_gold: np.ndarray
    p_max: np.ndarray
    correct: np.ndarray
    brier: np.ndarray


@dataclass
class CrossStageData:
    """Everything the analysis needs, already validated."""

    table: pd.DataFrame  # COLUMNS, one row per (model, stage, benchmark)
    source: str
    stages: tuple[str, str]
    samples: dict[tuple[str, str, str], SampleStats] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted(self.table["model"].unique())

    @property
    def benchmarks(self) -> list[str]:
        return sorted(self.table["benchmark"].unique())


# ---------------------------------------------------------------------------------------------
def load(path: str | Path, *, stages: tuple[str, str] = ("pretrain", "sft"), metric: str = "acc",
         tasks: Iterable[str] | None = None, min_models: int = 3) -> CrossStageData:
    """A tidy CSV or a harness folder -> validated :class:`CrossStageData`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist", fix="pass a tidy CSV or a folder of lm-eval outputs")
    if p.is_dir():
        data = load_harness(p, stages=stages, metric=metric, tasks=tasks)
    elif p.suffix.lower() in {".csv", ".tsv"}:
        data = load_tidy_csv(p, stages=stages, tasks=tasks)
    else:
        raise DataError(f"{p} is neither a folder nor a .csv file",
                        fix="pass a tidy CSV or a folder <root>/<stage>/<model>/results_*.json")
    validate(data, min_models=min_models)
    return data


def validate(data: CrossStageData, *, min_models: int = 3) -> None:
    """Same models and benchmarks in both stages, no NaN accuracy, enough models."""
    t = data.table
    src = data.source
    pre, post = data.stages
    models = {s: set(t.loc[t["stage"] == s, "model"]) for s in (pre, post)}
    only_pre, only_post = models[pre] - models[post], models[post] - models[pre]
    if only_pre or only_post:
        parts = []
        if only_pre:
            parts.append(f"only in stage '{pre}': {', '.join(sorted(only_pre))}")
        if only_post:
            parts.append(f"only in stage '{post}': {', '.join(sorted(only_post))}")
        raise DataError(f"model names do not match between stages ({'; '.join(parts)})", where=src,
                        fix="use the same model names in both stages")
    n = len(models[pre])
    if n < min_models:
        raise DataError(f"found {n} model(s) ({', '.join(sorted(models[pre])) or 'none'}); a cross-stage "
                        f"correlation needs at least {min_models}", where=src,
                        fix="add more models (mixtures or scales) evaluated in both stages")
    bad = t[~np.isfinite(t["accuracy"].to_numpy(dtype=float))]
    if len(bad):
        r = bad.iloc[0]
        raise DataError(f"accuracy is NaN for model '{r['model']}', stage '{r['stage']}', benchmark "
                        f"'{r['benchmark']}'", where=src, fix="re-run or drop that evaluation")
    conf = t["confidence"].to_numpy(dtype=float)
    for b, grp in t.groupby("benchmark"):
        c = grp["confidence"].to_numpy(dtype=float)
        if np.isfinite(c).any() and not np.isfinite(c).all():
            r = grp[~np.isfinite(c)].iloc[0]
            raise DataError(f"confidence of benchmark '{b}' is missing for model '{r['model']}', stage "
                            f"'{r['stage']}' but present for others", where=src,
                            fix="log samples for every run (lm_eval --log_samples) or leave confidence "
                                "empty for the whole benchmark")
    if not np.isfinite(conf).any():
        data.notes.append("no confidence data: confidence correlations and calibration are not computed")


# ---- tidy CSV -------------------------------------------------------------------------------
def load_tidy_csv(path: Path, *, stages: tuple[str, str], tasks: Iterable[str] | None = None
                  ) -> CrossStageData:
    try:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read as CSV ({err.__class__.__name__})", where=str(path),
                        fix="write a CSV with a header row") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    need = ["model", "stage", "benchmark", "accuracy"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})",
                        where=str(path), fix=f"a tidy CSV needs columns {', '.join(COLUMNS)}")
    for col in ("model", "stage", "benchmark"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"row {i + 2}: the {col} cell is empty", where=str(path),
                            fix=f"give every row a {col}")
    df["model"] = df["model"].astype(str).str.strip()
    df["stage"] = df["stage"].astype(str).str.strip()
    df["benchmark"] = df["benchmark"].astype(str).str.strip()
    if "mixture" not in df.columns:
        df["mixture"] = df["model"]
    if "scale" not in df.columns:
        df["scale"] = "all"
    df["mixture"] = df["mixture"].fillna(df["model"]).astype(str)
    df["scale"] = df["scale"].map(_scale_str)
    if "confidence" not in df.columns:
        df["confidence"] = np.nan
    for col in ("accuracy", "confidence"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna() & (df[col].astype(str).str.strip().str.lower() != "nan")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"row {i + 2}: {col} {df[col].iloc[i]!r} is not a number", where=str(path),
                            fix=f"write {col} as a number in [0, 1]")
        out = ~num.between(0.0, 1.0) & num.notna()
        if out.any():
            i = int(np.flatnonzero(out.to_numpy())[0])
            hint = " (a percent? divide by 100)" if 1 < num.iloc[i] <= 100 else ""
            raise DataError(f"row {i + 2}: {col} {num.iloc[i]:g} is outside [0, 1]{hint}", where=str(path),
                            fix=f"write {col} as a fraction in [0, 1], e.g. 0.755 for 75.5%")
        df[col] = num.astype(float)
    _check_stages(set(df["stage"]), stages, str(path), kind="stage value")
    df = df[df["stage"].isin(stages)]
    if tasks is not None:
        df = df[df["benchmark"].isin(set(tasks))]
    dup = df.duplicated(["model", "stage", "benchmark"])
    if dup.any():
        r = df[dup].iloc[0]
        raise DataError(f"two rows for model '{r['model']}', stage '{r['stage']}', "
                        f"benchmark '{r['benchmark']}'", where=str(path),
                        fix="keep one row per (model, stage, benchmark)")
    _check_complete(df, str(path))
    mix = df.groupby("model")[["mixture", "scale"]].nunique()
    if (mix > 1).any().any():
        m = mix[(mix > 1).any(axis=1)].index[0]
        raise DataError(f"model '{m}' has different mixture/scale values across rows", where=str(path),
                        fix="give each model one mixture and one scale")
    table = df[COLUMNS].sort_values(["stage", "model", "benchmark"]).reset_index(drop=True)
    return CrossStageData(table=table, source=str(path), stages=stages)


def _check_complete(df: pd.DataFrame, where: str) -> None:
    """Every (model, stage) must have every benchmark."""
    allb = set(df["benchmark"])
    for (m, s), grp in df.groupby(["model", "stage"]):
        miss = allb - set(grp["benchmark"])
        if miss:
            raise DataError(f"model '{m}' in stage '{s}' is missing benchmark(s) {', '.join(sorted(miss))}",
                            where=where, fix="evaluate every model on every benchmark in both stages, "
                                             "or restrict with tasks=[...]")


def _check_stages(found: set[str], stages: tuple[str, str], where: str, kind: str) -> None:
    missing = [s for s in stages if s not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise DataError(f"no {kind} '{missing[0]}' (found: {have})", where=where,
                        fix="name the two stages with --pre STAGE --post STAGE")


def _scale_str(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "all"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x).strip() or "all"


# ---- lm-evaluation-harness folders ----------------------------------------------------------
def load_harness(root: Path, *, stages: tuple[str, str], metric: str = "acc",
                 tasks: Iterable[str] | None = None) -> CrossStageData:
    found = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    _check_stages(found, stages, str(root), kind="stage folder")
    meta = _models_csv(root)
    rows: list[dict[str, Any]] = []
    samples: dict[tuple[str, str, str], SampleStats] = {}
    per_run: dict[tuple[str, str], tuple[Path, dict[str, float], dict[str, float]]] = {}
    keep = set(tasks) if tasks is not None else None
    for stage in stages:
        sdir = root / stage
        model_dirs = sorted(d for d in sdir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not model_dirs:
            raise DataError("holds no model folders", where=str(sdir),
                            fix="lay outputs out as <root>/<stage>/<model>/results_*.json")
        for mdir in model_dirs:
            res_file, accs, confs, stats = _read_model_dir(mdir, metric, keep)
            per_run[(mdir.name, stage)] = (res_file, accs, confs)
            for (task, s) in stats.items():
                samples[(mdir.name, stage, task)] = s
    # Missing tasks: compare each run with the union over all runs.
    union = set().union(*(set(a) for (_, a, _) in per_run.values()))
    for (model, stage), (res_file, accs, _) in sorted(per_run.items()):
        miss = union - set(accs)
        if miss:
            have = [f"{root / st / m}" for (m, st), (_, a, _) in per_run.items() if miss & set(a)][:1]
            raise DataError(f"missing task(s) {', '.join(sorted(miss))} (present in {have[0]})",
                            where=str(res_file),
                            fix=f"evaluate model '{model}' in stage '{stage}' on the same tasks as the "
                                "others, or restrict with tasks=[...]")
    for (model, stage), (res_file, accs, confs) in per_run.items():
        mix, scale = meta.get(model, (model, "all"))
        if meta and model not in meta:
            raise DataError(f"has no row for model '{model}'", where=str(root / "models.csv"),
                            fix="add a row model,mixture,scale for every model folder")
        for task, acc in accs.items():
            if not math.isfinite(acc):
                raise DataError(f"accuracy of task '{task}' is NaN", where=str(res_file),
                                fix="re-run that evaluation or drop the task with tasks=[...]")
            rows.append({"model": model, "stage": stage, "mixture": mix, "scale": scale, "benchmark": task,
                         "accuracy": acc, "confidence": confs.get(task, float("nan"))})
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["stage", "model", "benchmark"])
    return CrossStageData(table=table.reset_index(drop=True), source=str(root), stages=stages,
                          samples=samples)


def _models_csv(root: Path) -> dict[str, tuple[str, str]]:
    f = root / "models.csv"
    if not f.is_file():
        return {}
    try:
        df = pd.read_csv(f)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read as CSV ({err.__class__.__name__})", where=str(f),
                        fix="write a header row model,mixture,scale") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "model" not in df.columns:
        raise DataError("has no 'model' column", where=str(f), fix="write a header row model,mixture,scale")
    out = {}
    for _, r in df.iterrows():
        m = str(r["model"]).strip()
        mix = str(r["mixture"]).strip() if "mixture" in df.columns and pd.notna(r.get("mixture")) else m
        out[m] = (mix, _scale_str(r.get("scale")) if "scale" in df.columns else "all")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"is not valid JSON ({err.__class__.__name__})", where=str(path),
                        fix="re-run lm_eval or remove the broken file") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("results"), dict):
        raise DataError("has no 'results' mapping", where=str(path),
                        fix="pass lm-evaluation-harness results_*.json files")
    return obj


def _metric_value(entry: dict[str, Any], metric: str) -> float | None:
    for key in (f"{metric},none", metric):
        if key in entry:
            v = entry[key]
            try:
                return float(v) if v is not None else float("nan")
            except (TypeError, ValueError):
                return float("nan")
    return None


def _read_model_dir(mdir: Path, metric: str, keep: set[str] | None
                    ) -> tuple[Path, dict[str, float], dict[str, float], dict[str, SampleStats]]:
    files = sorted(mdir.rglob("results_*.json"), key=lambda f: f.name)
    if not files:
        raise DataError("has no results_*.json", where=str(mdir),
                        fix="point lm_eval --output_path at this folder, or remove it")
    accs: dict[str, float] = {}
    groups: dict[str, list[str]] = {}
    src: dict[str, Path] = {}
    for f in files:
        obj = _read_json(f)
        for g, subs in (obj.get("group_subtasks") or {}).items():
            if subs:
                groups[g] = list(subs)
        for task, entry in obj["results"].items():
            if not isinstance(entry, dict):
                continue
            v = _metric_value(entry, metric)
            if v is not None:
                accs[task] = v
                src[task] = f
    # A group stands for its subtasks unless the user named the subtasks.
    sub_of = {s: g for g, subs in groups.items() for s in subs}
    if keep is not None:
        accs = {t: v for t, v in accs.items() if t in keep}
    else:
        accs = {t: v for t, v in accs.items() if t not in sub_of or sub_of[t] not in accs}
    stats: dict[str, SampleStats] = {}
    sample_files = {m.group("task"): f for f in sorted(mdir.rglob("samples_*.jsonl"))
                    if (m := _SAMPLES_RE.match(f.name))}
    for task in accs:
        members = [task] if task in sample_files else [s for s in _leaves(task, groups) if s in sample_files]
        parts = [_read_samples(sample_files[m]) for m in members]
        parts = [p for p in parts if p is not None]
        if parts:
            stats[task] = SampleStats(*(np.concatenate([getattr(p, k) for p in parts])
                                        for k in ("p_gold", "p_max", "correct", "brier")))
    confs = {t: float(s.p_gold.mean()) for t, s in stats.items() if len(s.p_gold)}
    newest = files[-1]
    return newest, accs, confs, stats


def _leaves(task: str, groups: dict[str, list[str]]) -> list[str]:
    out, stack, seen = [], [task], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in groups:
            stack.extend(groups[t])
        else:
            out.append(t)
    return out


def _loglik(pair: Any) -> float:
    """A harness response is [loglikelihood, is_greedy] (numbers or strings), sometimes nested once."""
    while isinstance(pair, (list, tuple)) and pair and isinstance(pair[0], (list, tuple)):
        pair = pair[0]
    if isinstance(pair, (list, tuple)):
        pair = pair[0]
    return float(pair)


def _read_samples(path: Path) -> SampleStats | None:
    """Per-doc p(gold), max p, argmax == gold, Brier; None for tasks that are not multiple choice."""
    pg, pm, cor, br = [], [], [], []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"line {lineno} is not valid JSON", where=str(path),
                                fix="re-run lm_eval --log_samples or remove the file") from None
            resps = doc.get("filtered_resps", doc.get("resps"))
            target = doc.get("target")
            if not isinstance(resps, list) or len(resps) < 2:
                return None  # generation task: no choices to take a softmax over
            try:
                ll = np.array([_loglik(r) for r in resps], dtype=float)
                gold = int(str(target).strip()) if not isinstance(target, bool) else None
            except (TypeError, ValueError, IndexError):
                return None
            if gold is None or not 0 <= gold < len(ll):
                raise DataError(f"line {lineno}: target {target!r} is not a choice index 0..{len(ll) - 1}",
                                where=str(path), fix="only multiple-choice tasks carry a confidence")
            if not np.all(np.isfinite(ll)):
                raise DataError(f"line {lineno}: a log-likelihood is not finite", where=str(path),
                                fix="re-run that evaluation")
            p = np.exp(ll - ll.max())
            p /= p.sum()
            pg.append(p[gold])
            pm.append(p.max())
            cor.append(float(int(np.argmax(p)) == gold))
            onehot = np.zeros_like(p)
            onehot[gold] = 1.0
            br.append(float(((p - onehot) ** 2).sum()))
    if not pg:
        return None
    return SampleStats(np.array(pg), np.array(pm), np.array(cor), np.array(br))
