"""Run the effective-data-transferred sweep (``transferlab transfer``) and analyze it.

The models are trained by the zoo (:mod:`transferlab.zoo`): the family is pretrained by
:func:`~transferlab.zoo.build.build_zoo`, the target runs go through :func:`~transferlab.zoo.train.run_lm`
(from scratch) and :func:`~transferlab.zoo.train.finetune`. The sweep is a plain local loop over those runs;
reuse by config hash gives it "run again, redo only what is missing".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.core.errors import FitError
from transferlab.core.progress import say
from transferlab.store import Store
from transferlab.studies.transfer.study import TransferStudy
from transferlab.studies.transfer.zoo_config import TransferRunConfig
from transferlab.zoo.build import ZooBuild, build_zoo
from transferlab.zoo.sizes import size_spec
from transferlab.zoo.store import Zoo
from transferlab.zoo.train import lm_config, run_lm

RUN_COLUMNS = [
    "kind",
    "N",
    "D",
    "loss",
    "size",
    "final_loss",
    "steps",
    "tokens_seen",
    "run_id",
    "init",
    "wall_seconds",
    "pretrain_tokens",
]


def target_row(cfg: TransferRunConfig, zb: ZooBuild, store: Store, size: str, kind: str, D: int,
               target: Any, base: dict[str, Any] | None, budget: int | None = None) -> dict[str, Any]:
    """One scratch or fine-tuning run on the target (trained, reused or resumed): its row of the runs table.
    ``pretrain_tokens`` is the base model's pretraining budget (``budget``, else the sweep's for the size)."""
    steps = cfg.steps_for(D)
    tokens = steps * cfg.target.batch_size * cfg.target.seq_len
    lr = cfg.finetune_lr if kind == "finetune" else cfg.scratch_lr
    lmcfg = lm_config(kind, size, target, len(zb.tokenizer), cfg.target, tokens, train_tokens=D,
                      init=base["run_id"] if base else "", lr=lr, patience=cfg.patience, steps=steps,
                      data_seed=cfg.target.seed)
    e = run_lm(zb.zoo, store, lmcfg, target, zb.tokenizer, init_name=base["name"] if base else None,
               sweep=f"transfer-{lmcfg.corpus_key[:8]}", description=f"{kind} {size} D={D}")
    w = lmcfg.seq_len + 1
    return {
        "kind": kind, "N": size_spec(size).non_embedding_params(), "D": (D // w) * w,
        "loss": e.get("best_val_loss"), "size": size, "final_loss": e.get("val_loss"), "steps": e.get("steps"),
        "tokens_seen": e.get("tokens_seen"), "run_id": e["run_id"], "init": base["name"] if base else "",
        "wall_seconds": e.get("wall_seconds"), "pretrain_tokens": (budget or cfg.zoo().tokens_for(size)) if base else 0,
    }


def budget_plan(cfg: TransferRunConfig) -> list[int]:
    """The budget axis's pretraining budgets that the main sweep does not already pretrain budget_size at."""
    if cfg.budget_size is None:
        return []
    main = cfg.zoo().tokens_for(cfg.budget_size)
    return [t for t in cfg.budget_tokens if t != main]


def sweep_rows(
    cfg: TransferRunConfig, store: Store, zoo_root: str | Path | None = None
) -> tuple[list[dict[str, Any]], ZooBuild, list[dict[str, Any]]]:
    """Pretrain the zoo, then every scratch and fine-tuning run of the sweep: the runs table, the zoo build,
    and the budget axis's fine-tuning rows (budget_size pretrained at each budget_tokens; empty without one).

    With ``cfg.workers`` > 1 the sizes pretrain, and then the target runs train, in that many processes of
    one thread each (:func:`transferlab.core.parallel.run_parallel`); each run is the same store run as in
    one process, so the table is the same."""
    from transferlab.core.parallel import resolve_workers, run_parallel
    from transferlab.zoo.build import prepare

    workers = resolve_workers(cfg.workers)
    extra = budget_plan(cfg)
    plan: list[tuple[str, str, int, int | None]] = [
        (s, "scratch", D, None) for s in cfg.sizes for D in cfg.scratch_D] + [
        (s, "finetune", D, None) for s in cfg.sizes for D in cfg.finetune_D]
    bplan = [(cfg.budget_size, "finetune", D, t) for t in extra for D in cfg.finetune_D] if extra else []
    cfg = _one_thread(cfg) if workers > 1 else cfg
    zc = cfg.zoo()
    pre = [(s, None) for s in cfg.sizes] + [(cfg.budget_size, t) for t in extra]
    if workers > 1:
        prepare(zc, Zoo(zoo_root if zoo_root is not None else store.root / "zoo"))  # corpus, BPE, tokens, once
        say(f"transfer: pretraining {len(pre)} models on {workers} processes")
        run_parallel(_pretrain_job, [(cfg.to_dict(), str(store.root), _str(zoo_root), s, t) for s, t in pre],
                     workers, cost=[size_spec(s).non_embedding_params() * (t or zc.tokens_for(s)) for s, t in pre])
    zb = build_zoo(zc, store, zoo_root)
    if workers > 1:
        say(f"transfer: {len(plan) + len(bplan)} target runs on {workers} processes")
        jobs = [(cfg.to_dict(), str(store.root), _str(zoo_root), size, kind, D, t) for size, kind, D, t in plan + bplan]
        cost = [size_spec(s).non_embedding_params() * cfg.steps_for(D) for s, _, D, _ in plan + bplan]
        out = run_parallel(_target_job, jobs, workers, cost=cost)
        return out[:len(plan)], zb, _budget_rows(cfg, out[:len(plan)], out[len(plan):])
    target = zb.zoo.ensure_tokens(cfg.target_corpus, zb.tokenizer_dir, cfg.val_percent, cfg.max_files)
    by_size = {e["size"]: e for e in zb.entries}
    bases = {t: build_zoo(cfg.zoo([cfg.budget_size], tokens=t), store, zoo_root, report=False).entries[0]
             for t in extra}
    rows, brows = [], []
    for i, (size, kind, D, t) in enumerate(plan + bplan):
        say(f"transfer run {i + 1}/{len(plan) + len(bplan)}: {kind} {size} D={D}"
            + (f" (pretrained {t:,})" if t else ""))
        base = (by_size[size] if t is None else bases[t]) if kind == "finetune" else None
        (rows if t is None else brows).append(target_row(cfg, zb, store, size, kind, D, target, base, t))
    return rows, zb, _budget_rows(cfg, rows, brows)


def _budget_rows(cfg: TransferRunConfig, rows: list[dict[str, Any]], extra: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """The budget axis: budget_size's fine-tuning rows at every budget (the main sweep's where it has one)."""
    if cfg.budget_size is None:
        return []
    main = [r for r in rows if r["kind"] == "finetune" and r["size"] == cfg.budget_size
            and r["pretrain_tokens"] in cfg.budget_tokens]
    return sorted(main + list(extra), key=lambda r: (r["pretrain_tokens"], r["D"]))


def _str(p: str | Path | None) -> str | None:
    return None if p is None else str(p)


def _one_thread(cfg: TransferRunConfig) -> TransferRunConfig:
    """Each worker process trains on one thread (threads are not part of a run's identity)."""
    d = cfg.to_dict()
    d["pretrain"]["num_threads"] = d["target"]["num_threads"] = 1
    return TransferRunConfig.model_validate(d)


_WORKER_ZOO: dict[tuple[Any, ...], tuple[ZooBuild, Any]] = {}  # per worker process: the loaded zoo build


def _pretrain_job(cfg_dict: dict[str, Any], store_root: str, zoo_root: str | None, size: str,
                  tokens: int | None) -> None:
    cfg = TransferRunConfig.model_validate(cfg_dict)
    build_zoo(cfg.zoo([size], tokens=tokens), Store(store_root), zoo_root, report=False)


def _target_job(cfg_dict: dict[str, Any], store_root: str, zoo_root: str | None, size: str, kind: str,
                D: int, tokens: int | None) -> dict[str, Any]:
    cfg = TransferRunConfig.model_validate(cfg_dict)
    store = Store(store_root)
    key = (store_root, zoo_root, cfg.model_dump_json())
    if key not in _WORKER_ZOO:
        zb = build_zoo(cfg.zoo(), store, zoo_root, report=False)  # every size is built: this only loads
        _WORKER_ZOO[key] = (zb, zb.zoo.ensure_tokens(cfg.target_corpus, zb.tokenizer_dir, cfg.val_percent,
                                                     cfg.max_files))
    zb, target = _WORKER_ZOO[key]
    base = None
    if kind == "finetune":
        base = ({e["size"]: e for e in zb.entries}[size] if tokens is None
                else build_zoo(cfg.zoo([size], tokens=tokens), store, zoo_root, report=False).entries[0])
    say(f"transfer run: {kind} {size} D={D}" + (f" (pretrained {tokens:,})" if tokens else ""))
    return target_row(cfg, zb, store, size, kind, D, target, base, tokens)


def write_runs_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    import pandas as pd

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=RUN_COLUMNS).to_csv(p, index=False)
    return p


def observed_ossification(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tuning runs no better than the scratch run of the same size and D (needs no fit)."""
    scratch = {(r["size"], r["D"]): r["loss"] for r in rows if r["kind"] == "scratch"}
    out = []
    for r in rows:
        s = scratch.get((r["size"], r["D"]))
        if r["kind"] == "finetune" and s is not None:
            out.append(
                {
                    "size": r["size"],
                    "N": r["N"],
                    "D_F": r["D"],
                    "finetune_loss": r["loss"],
                    "scratch_loss": s,
                    "gain": s - r["loss"],
                    "ossified": bool(r["loss"] >= s),
                }
            )
    return out


def dt_by_size(analysis_rows: list[Any]) -> list[dict[str, Any]]:
    """Geometric-mean D_T over the D_F values every size shares, per size (sizes sorted by N)."""
    used = [r for r in analysis_rows if r.used]
    sizes = sorted({r.N for r in used})
    common = set.intersection(*[{r.D_F for r in used if r.N == n} for n in sizes]) if sizes else set()
    out = []
    for n in sizes:
        dts = [r.D_T for r in used if r.N == n and r.D_F in common]
        if dts:
            out.append({"N": n, "D_F_values": len(dts), "geomean_D_T": float(np.exp(np.mean(np.log(dts))))})
    return out


def dt_by_DF(analysis_rows: list[Any], sizes_N: list[int]) -> list[dict[str, Any]]:
    """Per D_F: D_T of every size in order of N, the sizes whose D_T is undefined there (ossified, or not
    used by the fit), and whether D_T rises with N across all of them."""
    out = []
    for d_f in sorted({int(r.D_F) for r in analysis_rows}):
        used = sorted((r for r in analysis_rows if r.used and int(r.D_F) == d_f), key=lambda r: r.N)
        dts = [float(r.D_T) for r in used]
        missing = [n for n in sorted(sizes_N) if n not in {int(r.N) for r in used}]
        out.append({"D_F": d_f, "N": [int(r.N) for r in used], "D_T": dts, "undefined_for_N": missing,
                    "grows": bool(not missing and len(dts) >= 2 and all(b > a for a, b in zip(dts, dts[1:])))})
    return out


def protocol_summary(cfg: TransferRunConfig) -> dict[str, Any]:
    """How the pretrained models were made: the protocol's name, and each size's budget in tokens and per
    parameter."""
    zc = cfg.zoo()
    tokens = {s: zc.tokens_for(s) for s in cfg.sizes}
    note = ("every size pretrained on the same tokens of the same text (Hernandez et al. 2021): beta is the N "
            "dependence alone" if cfg.protocol == "fixed-budget" else
            f"each size pretrained to {cfg.pretrain_tokens_per_param:g} tokens per parameter: a larger N also saw "
            "more pretraining data, so beta mixes model size and pretraining data")
    return {"name": cfg.protocol, "corpus": cfg.pretrain_corpus, "pretrain_tokens": tokens,
            "tokens_per_param": {s: t / size_spec(s).non_embedding_params() for s, t in tokens.items()},
            "note": note}


def budget_axis_summary(cfg: TransferRunConfig, brows: list[dict[str, Any]], result: Any, path: Path
                        ) -> dict[str, Any]:
    """The third axis: budget_size's D_T against its pretraining budget (:mod:`transferlab.fit.pretrain_budget`),
    with the transfer study's scratch law (and its bootstrap laws for the intervals); the rows go to ``path``."""
    from transferlab.fit.pretrain_budget import fit_pretrain_budget

    write_runs_csv(brows, path)
    out: dict[str, Any] = {"size": cfg.budget_size, "N": size_spec(cfg.budget_size).non_embedding_params(),
                           "budgets": list(cfg.budget_tokens), "runs_csv": str(path)}
    if result is None:
        return {**out, "error": "the transfer analysis could not run, so there is no scratch law to give D_T"}
    a = result.analysis
    arr = lambda k: np.array([r[k] for r in brows], dtype=float)  # noqa: E731
    try:
        axis = fit_pretrain_budget(a.law, out["N"], arr("pretrain_tokens"), arr("D"), arr("loss"),
                                   n_boot=cfg.bootstrap, seed=cfg.seed,
                                   scratch_thetas=None if a.scratch_bootstrap is None else a.scratch_bootstrap.thetas)
    except FitError as err:
        return {**out, "error": err.one_line()}
    return {**axis.as_dict(), **out}


def run(cfg: TransferRunConfig, store: Store, zoo_root: str | Path | None = None, *, report: bool = True
        ) -> dict[str, Any]:
    """The study: sweep, runs table (CSV), analysis by :mod:`analysis`, report. Returns the JSON summary."""
    from transferlab.studies.transfer.analysis import analyze_transfer
    from transferlab.studies.transfer.config import TransferFitConfig
    from transferlab.studies.transfer.sweep_report import write_transfer_report

    t0 = time.perf_counter()
    rows, zb, brows = sweep_rows(cfg, store, zoo_root)
    trun = store.open_run(TransferStudy.name, cfg)
    trun.start()
    csv = write_runs_csv(rows, trun.path / "runs.csv")
    fit_cfg = TransferFitConfig(
        file=str(csv), bootstrap=cfg.bootstrap, seed=cfg.seed, fix=cfg.fix, num_threads=cfg.pretrain.num_threads,
        interval=cfg.interval,
    )
    s = [r for r in rows if r["kind"] == "scratch"]
    f = [r for r in rows if r["kind"] == "finetune"]
    arr = lambda rs, k: np.array([r[k] for r in rs], dtype=float)  # noqa: E731
    result, error = None, None
    try:
        result = analyze_transfer(
            arr(s, "N"),
            arr(s, "D"),
            arr(s, "loss"),
            arr(f, "N"),
            arr(f, "D"),
            arr(f, "loss"),
            np.array([rows.index(r) + 1 for r in f]),
            fit_cfg,
        )
    except FitError as err:
        error = err.one_line()
    oss = observed_ossification(rows)
    summary: dict[str, Any] = {
        "preset": cfg.preset,
        "runs_csv": str(csv),
        "n_runs": len(rows),
        "zoo": str(zb.zoo.root),
        "zoo_models": [
            {
                k: e.get(k)
                for k in ("name", "size", "non_embedding_params", "tokens_seen", "val_loss", "reused")
            }
            for e in zb.entries
        ],
        "ossified_observed": [o for o in oss if o["ossified"]],
        "analysis_error": error,
        "protocol": protocol_summary(cfg),
    }
    if result is not None:
        fit = result.summary
        growth = dt_by_size(result.analysis.rows)
        # the --json contract: alpha and beta as {"value", "ci"}, k, and D_T per (N, D_F)
        summary.update({p: {"value": fit[p], "ci": fit[f"{p}_ci"]} for p in ("alpha", "beta")})
        summary.update({"k": fit["k"], "k_ci": fit["k_ci"], "names": fit["names"]})
        # how many bootstrap resamples the intervals rest on: a resample whose scratch law or transfer fit fails
        # is dropped, so the intervals are only as good as this count (issue 26)
        summary["bootstrap"] = {"method": result.analysis.interval, "resamples": result.analysis.n_boot,
                                "fitted": fit["ols"].get("n_bootstrap_ok"),
                                "fitted_robust": fit["robust"].get("n_bootstrap_ok")}
        summary["D_T"] = [{"N": int(r.N), "D_F": int(r.D_F), "D_T": float(r.D_T)}
                          for r in result.analysis.rows if r.used]
        summary["anchors"] = {"hernandez2021_text_to_python": {"alpha": 0.18, "beta": 0.38}}
        summary["robust"] = fit["robust"]
        summary["scratch_law"] = fit["scratch_law"]
        summary["D_T_by_size"] = growth
        summary["D_T_grows_with_N"] = bool(
            len(growth) >= 2 and all(b["geomean_D_T"] > a["geomean_D_T"] for a, b in zip(growth, growth[1:]))
        )
        per_df = dt_by_DF(result.analysis.rows, sorted({int(r["N"]) for r in rows}))
        summary["D_T_by_D_F"] = per_df
        summary["D_T_grows_with_N_at_every_D_F"] = bool(per_df and all(p["grows"] for p in per_df))
        summary["ossified_rows"] = fit["ossified_rows"]
        summary["rows"] = fit["rows"]
        summary["warnings"] = fit["warnings"]
    if cfg.budget_size is not None:
        summary["budget_axis"] = budget_axis_summary(cfg, brows, result, trun.path / "budget_axis.csv")
        summary.setdefault("warnings", []).extend(summary["budget_axis"].get("warnings", []))
    summary["wall_seconds"] = time.perf_counter() - t0
    summary["run_id"] = trun.id
    summary["report"] = (str(write_transfer_report(cfg, rows, result, error, oss, zb, store, trun.report_path,
                                                   summary)) if report else None)
    trun.finish(summary)
    return summary
