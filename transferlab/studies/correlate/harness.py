"""Read cross-stage evaluations: lm-evaluation-harness folders or a tidy CSV.

Folder layout (decided here, documented in docs/RESULTS.md)::

    <root>/<stage>/<model>/**/results_*.json      one folder per stage, one per model inside it
    <root>/<stage>/<model>/**/samples_<task>_*.jsonl   (optional, from lm_eval --log_samples)
    <root>/models.csv                               (optional) columns model, mixture, scale

The model folder's name is the model's identity; it must be the same in both stages. Without
``models.csv`` a model's mixture is its name and its scale is "all". ``lm_eval --output_path
<root>/<stage>/<model>`` produces exactly this (the harness adds one sub-folder, which is fine).
The harness's own layout, ``lm_eval --output_path <root>/<stage>``, is read too: there each model
folder is named after the model's path (``models__sft__m1``, the results file's
``model_name_sanitized``), so the model's identity is the last part of the results file's
``model_name`` (or of ``pretrained=`` in ``model_args``): ``/ckpt/pretrain/m1`` and
``/ckpt/sft/m1`` are both ``m1``. When those names differ between stages the error says to use
the per-model layout. When a model folder holds several ``results_*.json`` they are merged, the
newest (by file name, which carries the harness's timestamp) winning for a task present in more
than one.

Benchmarks are the tasks whose ``results[task]`` has the accuracy metric (``acc,none``, or
``acc_norm,none`` with ``metric="acc_norm"``). A group task (``group_subtasks`` in the file) is
kept as one benchmark and its subtasks are dropped, unless ``tasks`` names them. A name in
``tasks`` that no results file has, or a metric no task reports, is an error that names it (with
the closest known name); tasks without the metric are left out with a note.

Confidence of one doc = softmax over the choices' log-likelihoods, taken at the gold choice; the
benchmark's confidence is its mean over docs. Raw (not length-normalized) log-likelihoods are
used for every metric. Per doc we also keep max-probability and whether the argmax is gold, and
the multi-class Brier term, for calibration. The gold choice is resolved from the logged
``target`` as the harness resolves it (an index, or the text or label of a choice; see
:func:`resolve_gold`). A task whose docs cannot all be resolved, or that is not multiple choice,
gets no confidence, and a note says which task and why (it still counts by accuracy).

Sizes (for decisions across scale): a model's size is its ``scale`` (``size`` is read as the same column)
in ``models.csv`` or the CSV, or what ``sizes`` (``--sizes MODEL=SIZE,...``) gives it. A model without a
mixture of its own whose name carries its size as a part (``dclm-150M`` at 150M) is mixture ``dclm``. Per doc
we also keep the accuracy metric's value and the gold choice's log-likelihood per character of its
continuation (from ``arguments``), in doc_id order, for the decision accuracy's bootstrap over items.

A tidy CSV has one row per (model, stage, benchmark) with columns model, stage, benchmark,
accuracy and, optionally, mixture, scale (or size), confidence, continuous. It carries no per-doc samples, so ECE and
Brier are not available from it (the benchmark-level calibration gap is).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.core.errors import DataError

_SAMPLES_RE = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[0-9.:\-]+)\.jsonl$")
COLUMNS = ["model", "stage", "mixture", "scale", "benchmark", "accuracy", "confidence", "continuous"]


@dataclass
class SampleStats:
    """Per-doc figures of one (model, stage, benchmark), docs in the order of ``doc_keys``.

    ``score`` is each doc's value of the accuracy metric (the per-doc ``acc`` or ``acc_norm`` the harness logs,
    else argmax == gold); ``continuous`` the gold choice's log-likelihood per character of its continuation
    (None when the samples do not log the choices' text)."""

    p_gold: np.ndarray
    p_max: np.ndarray
    correct: np.ndarray
    brier: np.ndarray
    score: np.ndarray | None = None
    continuous: np.ndarray | None = None
    doc_keys: list[str] | None = None


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
         tasks: Iterable[str] | None = None, min_models: int = 3, sizes: Mapping[str, str] | None = None
         ) -> CrossStageData:
    """A tidy CSV or a harness folder -> validated :class:`CrossStageData`; ``sizes`` (model -> size) overrides
    the models' scale column."""
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
    if sizes:
        apply_sizes(data, sizes)
    derive_mixtures(data)
    return data


def apply_sizes(data: CrossStageData, sizes: Mapping[str, str]) -> None:
    """Set each named model's size (its ``scale``); a name that is no model is an error naming the closest."""
    known = set(data.table["model"])
    unknown = [m for m in sizes if m not in known]
    if unknown:
        raise DataError(f"--sizes names model '{unknown[0]}', which is in no stage{_suggest(unknown[0], known)}",
                        where=data.source, fix=f"give sizes of the models: {', '.join(sorted(known))}")
    t = data.table
    for m, size in sizes.items():
        t.loc[t["model"] == m, "scale"] = str(size).strip()


def derive_mixtures(data: CrossStageData) -> None:
    """A model without a mixture of its own (its mixture is its name) whose name carries its size as a part
    separated by '-', '_' or '.' gets the name without that part as its mixture: 'dclm-150M' at size 150M is
    mixture 'dclm', so the same data at two sizes can be compared (decision accuracy)."""
    t = data.table
    derived = {}
    for m, grp in t.groupby("model"):
        size = str(grp["scale"].iloc[0])
        if size == "all" or (grp["mixture"] != m).any():
            continue
        rest = re.sub(rf"(^|[-_.]){re.escape(size)}(?=$|[-_.])", "", str(m), flags=re.IGNORECASE).strip("-_.")
        if rest and rest != m:
            derived[m] = rest
    if derived:
        t["mixture"] = [derived.get(m, x) for m, x in zip(t["model"], t["mixture"])]
        ex = next(iter(derived.items()))
        data.notes.append(f"mixtures read from {len(derived)} model names without their size (e.g. '{ex[0]}' is "
                          f"mixture '{ex[1]}'); give a mixture column in models.csv or the CSV to name them")


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
        df["scale"] = df["size"] if "size" in df.columns else "all"
    df["mixture"] = df["mixture"].fillna(df["model"]).astype(str)
    df["scale"] = df["scale"].map(_scale_str)
    if "confidence" not in df.columns:
        df["confidence"] = np.nan
    if "continuous" not in df.columns:
        df["continuous"] = np.nan
    cont = pd.to_numeric(df["continuous"], errors="coerce")
    bad = (cont.isna() & df["continuous"].notna()) | np.isinf(cont.to_numpy(dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"row {i + 2}: continuous {df['continuous'].iloc[i]!r} is not a finite number",
                        where=str(path), fix="write the gold choice's mean log-probability per character, or "
                                             "leave the cell empty")
    df["continuous"] = cont.astype(float)
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
        known = set(df["benchmark"])
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise DataError(f"benchmark '{unknown[0]}' is in no row{_suggest(unknown[0], known)}",
                            where=str(path), fix=f"choose --tasks from: {', '.join(sorted(known))}")
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
@dataclass
class _Run:
    """One model folder of one stage, as read."""

    name: str  # the model's identity across stages
    folder: Path
    results_file: Path  # the newest results_*.json
    accs: dict[str, float]  # task -> the chosen metric
    tasks: set[str]  # every task or group the results files name
    metrics: set[str]  # every metric name they report (without the ",filter" suffix)
    confs: dict[str, float]
    stats: dict[str, SampleStats]
    no_conf: dict[str, str]  # task -> why it has no confidence
    tasks_without_metric: set[str]  # top-level tasks of the results that lack the chosen metric
    model_name: str | None  # from the results file (model_name, or model_args' pretrained=)
    harness_default: bool  # the folder is the harness's own <output_path>/<sanitized model name>


def _model_name(obj: dict[str, Any]) -> str | None:
    """The evaluated model as the results file names it: ``model_name``, else ``pretrained=`` of
    ``config.model_args`` (a dict in lm-eval 0.4.13, a ``k=v,k=v`` string before)."""
    name = obj.get("model_name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    args = (obj.get("config") or {}).get("model_args")
    if isinstance(args, dict):
        v = args.get("pretrained") or args.get("model")
        return str(v) if v else None
    if isinstance(args, str):
        for part in args.split(","):
            k, sep, v = part.partition("=")
            if sep and k.strip() in ("pretrained", "model") and v.strip():
                return v.strip()
    return None


def _sanitized(model_name: str) -> str:
    """The folder name lm_eval gives a model under ``--output_path`` ("/" -> "__")."""
    return model_name.replace("/", "__")


def _short_name(model_name: str) -> str:
    """A model's name without its directories: ``/ckpt/sft/m1`` -> ``m1``, ``org/model`` -> ``model``."""
    return model_name.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_harness(root: Path, *, stages: tuple[str, str], metric: str = "acc",
                 tasks: Iterable[str] | None = None) -> CrossStageData:
    found = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    _check_stages(found, stages, str(root), kind="stage folder")
    meta = _models_csv(root)
    keep = list(dict.fromkeys(tasks)) if tasks is not None else None
    runs: dict[tuple[str, str], _Run] = {}
    for stage in stages:
        sdir = root / stage
        model_dirs = sorted(d for d in sdir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not model_dirs:
            raise DataError("holds no model folders", where=str(sdir),
                            fix="run lm_eval --output_path <root>/<stage>/<model> for each model")
        stage_runs = [_read_model_dir(mdir, metric, set(keep) if keep is not None else None)
                      for mdir in model_dirs]
        seen: dict[str, Path] = {}
        for r in stage_runs:
            if r.name in seen:
                raise DataError(f"two model folders of stage '{stage}' evaluate models named '{r.name}' "
                                f"({seen[r.name].name} and {r.folder.name})", where=str(sdir),
                                fix="run lm_eval --output_path <root>/<stage>/<model> with a distinct <model> "
                                    "per model")
            seen[r.name] = r.folder
            runs[(r.name, stage)] = r
    notes = _check_tasks_and_metric(root, runs, keep, metric)
    _check_names_match(root, runs, stages)
    # Missing tasks: compare each run with the union over all runs.
    union = set().union(*(set(r.accs) for r in runs.values()))
    for (model, stage), r in sorted(runs.items()):
        miss = union - set(r.accs)
        if miss:
            have = [str(o.folder) for o in runs.values() if miss & set(o.accs)][:1]
            raise DataError(f"missing task(s) {', '.join(sorted(miss))} (present in {have[0]})",
                            where=str(r.results_file),
                            fix=f"evaluate model '{model}' in stage '{stage}' on the same tasks as the "
                                "others, or restrict with tasks=[...]")
    rows: list[dict[str, Any]] = []
    samples: dict[tuple[str, str, str], SampleStats] = {}
    for (model, stage), r in runs.items():
        mix, scale = meta.get(model, (model, "all"))
        if meta and model not in meta:
            raise DataError(f"has no row for model '{model}'", where=str(root / "models.csv"),
                            fix="add a row model,mixture,scale for every model")
        for task, acc in r.accs.items():
            if not math.isfinite(acc):
                raise DataError(f"accuracy of task '{task}' is NaN", where=str(r.results_file),
                                fix="re-run that evaluation or drop the task with tasks=[...]")
            st = r.stats.get(task)
            cont = float(st.continuous.mean()) if st is not None and st.continuous is not None else float("nan")
            rows.append({"model": model, "stage": stage, "mixture": mix, "scale": scale, "benchmark": task,
                         "accuracy": acc, "confidence": r.confs.get(task, float("nan")), "continuous": cont})
        for task, st in r.stats.items():
            samples[(model, stage, task)] = st
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["stage", "model", "benchmark"])
    data = CrossStageData(table=table.reset_index(drop=True), source=str(root), stages=stages,
                          samples=samples)
    no_cont = sorted({task for (_, _, task), st in samples.items() if st.continuous is None})
    notes += [f"no continuous score for task(s) {', '.join(no_cont)}: their samples do not log the choices' text "
              "(arguments), which the per-character log-probability needs"] if no_cont else []
    data.notes.extend(notes + _confidence_notes(runs, union) + _align_items(samples))
    return data


def _check_tasks_and_metric(root: Path, runs: dict[tuple[str, str], _Run], keep: list[str] | None,
                            metric: str) -> list[str]:
    """--tasks naming a task no results file has, or --metric that no (kept) task reports: name the cause."""
    known = set().union(*(r.tasks for r in runs.values()))
    if keep is not None:
        unknown = [t for t in keep if t not in known]
        if unknown:
            t = unknown[0]
            raise DataError(f"task '{t}' is in no results file{_suggest(t, known)}", where=str(root),
                            fix=f"choose --tasks from: {', '.join(sorted(known))}")
    metrics = set().union(*(r.metrics for r in runs.values()))
    if not any(r.accs for r in runs.values()):
        scope = f"the task(s) {', '.join(keep)}" if keep is not None else "any task"
        raise DataError(f"metric '{metric}' is not reported for {scope}{_suggest(metric, metrics)}",
                        where=str(root),
                        fix=f"choose --metric from what the results report: {', '.join(sorted(metrics)) or 'none'}")
    have = set().union(*(set(r.accs) for r in runs.values()))
    if keep is not None:
        lacking = [t for t in keep if t not in have]
        if lacking:
            raise DataError(f"task(s) {', '.join(lacking)} do not report metric '{metric}'", where=str(root),
                            fix="drop them from --tasks, or choose another --metric")
        return []
    lacking = sorted(t for r in runs.values() for t in r.tasks_without_metric if t not in have)
    if lacking:
        return [f"left out task(s) without metric '{metric}': {', '.join(dict.fromkeys(lacking))}"]
    return []


def _check_names_match(root: Path, runs: dict[tuple[str, str], _Run], stages: tuple[str, str]) -> None:
    """The same models in both stages; for lm_eval's default layout, say how to lay folders out instead."""
    pre, post = stages
    names = {s: {m for (m, st) in runs if st == s} for s in stages}
    only_pre, only_post = names[pre] - names[post], names[post] - names[pre]
    if not (only_pre or only_post):
        return
    parts = []
    if only_pre:
        parts.append(f"only in stage '{pre}': {', '.join(sorted(only_pre))}")
    if only_post:
        parts.append(f"only in stage '{post}': {', '.join(sorted(only_post))}")
    default = [r for r in runs.values() if r.harness_default]
    if default:
        ex = default[0]
        raise DataError(
            f"model names do not match between stages ({'; '.join(parts)}); folders such as "
            f"'{ex.folder.name}' are lm_eval's default layout (--output_path <root>/<stage> names each "
            "folder after the model's path), so each model's name is the last part of the model_name in "
            "its results file", where=str(root),
            fix="run lm_eval with --output_path <root>/<stage>/<model>, the same <model> in both stages")
    raise DataError(f"model names do not match between stages ({'; '.join(parts)})", where=str(root),
                    fix="use the same model folder names in both stages (<root>/<stage>/<model>)")


def _align_items(samples: dict[tuple[str, str, str], SampleStats]) -> list[str]:
    """Per-item scores are compared across models item by item: where the models of one (stage, task) logged
    different docs, drop them (the decision accuracy of that task then has no interval) and say so."""
    notes = []
    by: dict[tuple[str, str], list[SampleStats]] = {}
    for (_, stage, task), st in samples.items():
        by.setdefault((stage, task), []).append(st)
    for (stage, task), sts in sorted(by.items()):
        if len({tuple(st.doc_keys or ()) for st in sts}) > 1:
            for st in sts:
                st.score = st.continuous = None
            notes.append(f"task '{task}' ({stage}): the models' samples cover different docs, so its decision "
                         "accuracy has no interval over items")
    return notes


def _confidence_notes(runs: dict[tuple[str, str], _Run], tasks: set[str]) -> list[str]:
    """One note per task that has accuracy but no confidence, with the first reason found."""
    notes = []
    for task in sorted(tasks):
        whys = [(r, r.no_conf[task]) for r in runs.values() if task in r.no_conf]
        if not whys:
            continue
        r, why = whys[0]
        notes.append(f"no confidence for task '{task}': {why} ({r.folder}); its accuracy is used, and the "
                     "confidence columns, gap, alignment, ECE and Brier leave it out")
    return notes


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
    if "scale" not in df.columns and "size" in df.columns:
        df = df.rename(columns={"size": "scale"})
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


def _read_model_dir(mdir: Path, metric: str, keep: set[str] | None) -> _Run:
    files = sorted(mdir.rglob("results_*.json"), key=lambda f: f.name)
    if not files:
        raise DataError("has no results_*.json", where=str(mdir),
                        fix="point lm_eval --output_path at <root>/<stage>/<model>, or remove this folder")
    accs: dict[str, float] = {}
    lacking: set[str] = set()
    groups: dict[str, list[str]] = {}
    tasks: set[str] = set()
    metrics: set[str] = set()
    named: set[str] = set()  # every task a results file names, with an entry or not
    model_name = None
    sanitized = set()
    for f in files:
        obj = _read_json(f)
        model_name = _model_name(obj) or model_name
        if isinstance(obj.get("model_name_sanitized"), str):
            sanitized.add(obj["model_name_sanitized"])
        if model_name:
            sanitized.add(_sanitized(model_name))
        for g, subs in (obj.get("group_subtasks") or {}).items():
            tasks.add(g)
            if subs:
                groups[g] = list(subs)
                tasks.update(subs)
        named.update(obj["results"])
        for task, entry in obj["results"].items():
            if not isinstance(entry, dict):
                continue
            tasks.add(task)
            metrics.update(k.split(",", 1)[0] for k in entry if k not in ("alias", "name", "sample_len")
                           and not k.split(",", 1)[0].endswith("_stderr"))
            v = _metric_value(entry, metric)
            if v is not None:
                accs[task] = v
            else:
                lacking.add(task)
    lacking -= set(accs)
    # A group stands for its subtasks unless the user named the subtasks.
    sub_of = {s: g for g, subs in groups.items() for s in subs}
    lacking -= set(sub_of)
    if keep is not None:
        accs = {t: v for t, v in accs.items() if t in keep}
    else:
        accs = {t: v for t, v in accs.items() if t not in sub_of or sub_of[t] not in accs}
    stats: dict[str, SampleStats] = {}
    no_conf: dict[str, str] = {}
    sample_files = {m.group("task"): f for f in sorted(mdir.rglob("samples_*.jsonl"))
                    if (m := _SAMPLES_RE.match(f.name))}
    stray = sorted(t for t in sample_files if t not in tasks | named)
    if stray:  # samples of another evaluation: their docs would be taken for nothing, or for the wrong run
        raise DataError(f"{sample_files[stray[0]].name} holds samples of task '{stray[0]}', which no results_*.json "
                        f"here names (they name: {', '.join(sorted(tasks | named))})", where=str(mdir),
                        fix="remove that file, or put the results_*.json of the evaluation that wrote it beside it")
    for task in accs:
        members = [task] if task in sample_files else [s for s in _leaves(task, groups) if s in sample_files]
        if not members:
            no_conf[task] = "no samples_*.jsonl (run lm_eval with --log_samples)"
            continue
        reads = [_read_samples(sample_files[m], metric) for m in members]
        bad = [(m, r) for m, r in zip(members, reads) if r.stats is None]
        if bad:
            m, r = bad[0]
            no_conf[task] = r.reason if m == task else f"subtask '{m}': {r.reason}"
            continue
        parts = [r.stats for r in reads if r.stats is not None]
        stats[task] = SampleStats(
            *(np.concatenate([getattr(p, k) for p in parts]) for k in ("p_gold", "p_max", "correct", "brier")),
            score=np.concatenate([p.score for p in parts]),
            continuous=(np.concatenate([p.continuous for p in parts])
                        if all(p.continuous is not None for p in parts) else None),
            doc_keys=[f"{m}/{k}" for m, p in zip(members, parts) for k in (p.doc_keys or [])])
    confs = {t: float(s.p_gold.mean()) for t, s in stats.items() if len(s.p_gold)}
    # lm_eval --output_path <dir> writes into <dir>/<sanitized model name>: when this folder is that
    # one, its name is a path, not a name the user chose, and the model's short name is used instead
    default = model_name is not None and mdir.name in sanitized
    name = _short_name(model_name) if default and model_name else mdir.name
    return _Run(name=name, folder=mdir, results_file=files[-1], accs=accs, tasks=tasks, metrics=metrics,
                confs=confs, stats=stats, no_conf=no_conf, tasks_without_metric=lacking,
                model_name=model_name, harness_default=default)


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


def _requests(rec: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """(contexts, continuations) of a multiple-choice doc's requests, one per choice, from ``arguments``.

    lm-eval 0.4 logs ``{"gen_args_0": {"arg_0": context, "arg_1": continuation}, ...}``; older
    versions a list of ``[context, continuation]`` pairs. The continuation is the target delimiter
    (a space by default) followed by the choice's text.
    """
    args = rec.get("arguments")
    if isinstance(args, dict):
        def num(k: str) -> int:
            tail = str(k).rsplit("_", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        items = [args[k] for k in sorted(args, key=num)]
        pairs = [(i.get("arg_0"), i.get("arg_1")) if isinstance(i, dict) else (None, None) for i in items]
    elif isinstance(args, list):
        pairs = [(a[0], a[1]) if isinstance(a, (list, tuple)) and len(a) >= 2 else (None, None) for a in args]
    else:
        return None
    if not pairs or any(not isinstance(c, str) or not isinstance(x, str) for x, c in pairs):
        return None
    return [x for x, _ in pairs], [c for _, c in pairs]


def _doc_choices(doc: Any) -> tuple[list[str], list[str]]:
    """(texts, labels) of the choices a document lists: ``choices`` as a list, or as
    ``{"text": [...], "label": [...]}`` (ARC, CommonsenseQA)."""
    if not isinstance(doc, dict):
        return [], []
    ch = doc.get("choices")
    if isinstance(ch, list) and all(isinstance(c, str) for c in ch):
        return list(ch), []
    if isinstance(ch, dict):
        text, label = ch.get("text"), ch.get("label")
        return (list(map(str, text)) if isinstance(text, list) else [],
                list(map(str, label)) if isinstance(label, list) else [])
    return [], []


_INT_RE = re.compile(r"^\s*\d+\s*$")


def resolve_gold(rec: dict[str, Any], ll: np.ndarray) -> tuple[int | None, str]:
    """The gold choice of one logged multiple-choice doc, resolved as the harness does; (None, why) if not.

    The harness logs ``target = str(doc_to_target(doc))``. For a multiple-choice task it scores an
    integer target as a choice index and a string target as the index of that string among the
    choices (``doc_to_choice``). Since the log keeps only the string, the candidates are, in this
    order: the target read as an index; the first choice whose text is the target (the choices'
    texts are the continuations in ``arguments``, less the target delimiter, or the document's own
    ``choices`` with their labels, as in CommonsenseQA's ``answerKey``); and for tasks whose choices
    differ in the context and share one continuation (Winogrande's shape: the target is that shared
    text), the document's ``answer``/``label``/``gold`` field read as a 1- or 0-based index.
    Candidates must agree with the harness's own per-doc ``acc`` (argmax of the log-likelihoods is
    gold exactly when ``acc`` is 1), which settles the ambiguous cases (a target ``"1"`` that is both
    an index and a choice's text, 1- or 0-based answers).
    """
    n = len(ll)
    raw = rec.get("target")
    t = "" if raw is None else str(raw)
    if t.strip().startswith("[") and t.strip().endswith("]"):
        return None, f"target {t!r} lists several gold answers"
    cands: list[int] = []
    if _INT_RE.match(t) and int(t) < n:
        cands.append(int(t))
    req = _requests(rec)
    doc = rec.get("doc")
    shared = False
    if req is not None and len(req[1]) == n:
        ctx, cont = req
        shared = len(set(cont)) == 1 and len(set(ctx)) > 1
        if not shared:
            cands += [i for i, c in enumerate(cont) if c.strip() == t.strip()][:1]
    texts, labels = _doc_choices(doc)
    for opts in (labels, texts):
        if len(opts) == n and t.strip() in [o.strip() for o in opts]:
            cands.append([o.strip() for o in opts].index(t.strip()))
    if shared and isinstance(doc, dict):
        for key in ("answer", "label", "gold"):
            v = doc.get(key)
            if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and _INT_RE.match(v))):
                continue
            v = int(v)
            cands += [c for c in (v - 1, v) if 0 <= c < n]
            break
    cands = list(dict.fromkeys(cands))
    if not cands:
        return None, (f"target {t!r} is neither a choice index (0..{n - 1}) nor the text or label of a "
                      "choice")
    acc = rec.get("acc")
    if isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc):
        pred = int(np.argmax(ll))
        agree = [c for c in cands if (pred == c) == (acc >= 0.5)]
        if not agree:
            return None, f"target {t!r} resolves to choice(s) {cands} but none agrees with the logged acc {acc}"
        cands = agree
    return cands[0], ""


@dataclass
class SamplesRead:
    """What one samples_*.jsonl gave: per-doc stats, or None and the reason there is no confidence."""

    stats: SampleStats | None
    reason: str = ""


def _read_samples(path: Path, metric: str = "acc") -> SamplesRead:
    """Per-doc p(gold), max p, argmax == gold, Brier, the doc's ``metric`` and the gold's log-likelihood per
    character, in doc_id order; no stats (with the reason) when they cannot be had."""
    try:
        return _read_samples_text(path, metric)
    except UnicodeDecodeError as err:
        raise DataError(f"is not UTF-8 text (byte {err.object[err.start]:#04x}: {err.reason})",
                        where=str(path), fix="re-run lm_eval --log_samples or remove the file") from None


def _read_samples_text(path: Path, metric: str = "acc") -> SamplesRead:
    pg, pm, cor, br, score, cont, keys = [], [], [], [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"line {lineno} is not valid JSON", where=str(path),
                                fix="re-run lm_eval --log_samples or remove the file") from None
            if not isinstance(rec, dict):
                raise DataError(f"line {lineno} is not a JSON object", where=str(path),
                                fix="pass lm_eval --log_samples output")
            resps = rec.get("filtered_resps", rec.get("resps"))
            if not isinstance(resps, list) or len(resps) < 2:
                return SamplesRead(None, "not a multiple-choice task (one response per doc)")
            try:
                ll = np.array([_loglik(r) for r in resps], dtype=float)
            except (TypeError, ValueError, IndexError):
                return SamplesRead(None, "not a multiple-choice task (responses are not log-likelihoods)")
            if not np.all(np.isfinite(ll)):
                raise DataError(f"line {lineno}: a log-likelihood is not finite", where=str(path),
                                fix="re-run that evaluation")
            gold, why = resolve_gold(rec, ll)
            if gold is None:
                return SamplesRead(None, f"line {lineno}: {why}")
            p = np.exp(ll - ll.max())
            p /= p.sum()
            pg.append(p[gold])
            pm.append(p.max())
            cor.append(float(int(np.argmax(p)) == gold))
            onehot = np.zeros_like(p)
            onehot[gold] = 1.0
            br.append(float(((p - onehot) ** 2).sum()))
            v = rec.get(metric)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            score.append(float(v) if ok else cor[-1])
            req = _requests(rec)
            text = req[1][gold] if req is not None and len(req[1]) == len(ll) else None
            cont.append(ll[gold] / len(text) if text else float("nan"))
            keys.append(str(rec.get("doc_id", lineno)))
    if not pg:
        return SamplesRead(None, "the file holds no docs")
    order = sorted(range(len(keys)), key=lambda i: (len(keys[i]), keys[i]))  # doc_id order, numbers as numbers
    c = np.array(cont)[order]
    return SamplesRead(SampleStats(np.array(pg)[order], np.array(pm)[order], np.array(cor)[order],
                                   np.array(br)[order], score=np.array(score)[order],
                                   continuous=c if np.isfinite(c).all() else None,
                                   doc_keys=[keys[i] for i in order]))
