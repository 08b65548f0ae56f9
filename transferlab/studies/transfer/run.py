"""Build the model zoo and run the effective-data-transferred sweep (``zoo build`` / ``transfer``).

Every model trained here is a run of the store's ``lm`` study, keyed by its resolved
:class:`~transferlab.train.lm.LMRunConfig`: a finished run is reused, an interrupted one resumes
from its last checkpoint through the engine. The sweep is a plain local loop over those runs
(the project's sweep runner is grokking-shaped: it groups ``GrokConfig`` ensembles); reuse by
config hash gives it the same "run again, redo only what is missing" behaviour.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.core.errors import FitError, TrainingDiverged
from transferlab.core.progress import console, is_quiet
from transferlab.models.zoo import TokenData, Zoo, corpus_key, new_model, size_spec
from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.transfer.zoo_config import TransferRunConfig, ZooConfig
from transferlab.train.engine import Callback
from transferlab.train.lm import LMRunConfig, LMTrainResult, flops_per_token, train_lm

LM_STUDY = "lm"
STUDY = "transfer"
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
]


def _say(text: str) -> None:
    if not is_quiet():
        console.print(text)


def corpus_tag(spec: str, key: str) -> str:
    return spec if spec in ("prose", "code") else f"custom{key[:6]}"


# ---- the zoo -----------------------------------------------------------------------------------
@dataclass
class ZooBuild:
    zoo: Zoo
    tokenizer_dir: Path
    tokenizer: Any
    data: TokenData
    entries: list[dict[str, Any]]
    report: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "zoo": str(self.zoo.root),
            "tokenizer": str(self.tokenizer_dir),
            "corpus": self.data.corpus,
            "models": self.entries,
            "report": None if self.report is None else str(self.report),
        }


def _architecture(size: str, vocab: int) -> dict[str, Any]:
    """The LMRunConfig fields that a zoo size fixes."""
    spec = size_spec(size)
    return {"size": size, "d_model": spec.d_model, "n_layers": spec.n_layers, "n_heads": spec.n_heads,
            "d_ff": spec.d_ff, "vocab_size": vocab}


def pretrain_config(cfg: ZooConfig, size: str, data: TokenData, vocab: int) -> LMRunConfig:
    return LMRunConfig(
        kind="pretrain",
        corpus=cfg.corpus,
        corpus_key=data.corpus_key,
        tokenizer=data.tokenizer,
        **_architecture(size, vocab),
        seq_len=cfg.seq_len,
        train_tokens=0,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=int(cfg.warmup_frac * cfg.steps),
        weight_decay=cfg.weight_decay,
        eval_every=cfg.eval_every,
        eval_tokens=cfg.eval_tokens,
        train_eval_tokens=min(8192, cfg.eval_tokens),
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        order_seed=cfg.seed,
        monitor=cfg.monitor,
        num_threads=cfg.num_threads,
    )


def _check_finished(res: LMTrainResult, run: Run) -> None:
    if res.result.diverged[0] is not None:
        run.finish({"error": res.result.diverged[0]}, status="diverged")
        raise TrainingDiverged(res.result.diverged[0], where=str(run.path), fix="lower the learning rate")


def _run_stats(cfg: LMRunConfig, run: Run, res: LMTrainResult | None) -> dict[str, Any]:
    recs = [r for r in run.metrics() if "val_loss" in r]
    last = recs[-1] if recs else {}
    best = min((r["val_loss"] for r in recs), default=math.nan)
    out = {
        "steps": int(last.get("step", 0)),
        "tokens_seen": int(last.get("step", 0)) * cfg.tokens_per_step,
        "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"),
        "best_val_loss": best,
        "n_evals": len(recs),
    }
    if res is not None:
        r = res.result
        out.update(
            wall_seconds=r.wall_seconds,
            train_seconds=r.train_seconds,
            steps_run=r.steps_run,
            resumed_from=int(r.step - r.steps_run) if r.steps_run else int(r.step),
            tokens_per_second=res.tokens_trained / r.train_seconds if r.train_seconds > 0 else None,
            stopped_early=r.stopped_early,
            monitor_deviations=[{"tokens": t, "loss": v, "flag": f} for t, v, f in res.deviations],
        )
    return out


def build_zoo(
    cfg: ZooConfig,
    store: Store,
    zoo_root: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    report: bool = True,
) -> ZooBuild:
    """Train (or reuse, or resume) every size of ``cfg`` and record it in the zoo's manifest."""
    from transferlab.data.tokenizer import load_tokenizer

    zoo = Zoo(zoo_root if zoo_root is not None else store.root / "zoo")
    corpus_key(cfg.corpus, cfg.val_percent, cfg.max_files)  # a bad corpus fails before anything is built
    tok_dir, _ = zoo.ensure_tokenizer(
        cfg.vocab_size, tuple(cfg.tokenizer_corpora), cfg.val_percent, cfg.max_files
    )
    data = zoo.ensure_tokens(cfg.corpus, tok_dir, cfg.val_percent, cfg.max_files)
    tok = load_tokenizer(tok_dir)
    vocab = len(tok)
    entries = []
    for size in cfg.sizes:
        lmcfg = pretrain_config(cfg, size, data, vocab)
        run = store.open_run(LM_STUDY, lmcfg)
        name = f"{corpus_tag(cfg.corpus, data.corpus_key)}-{size}-{run.id[:8]}"
        entries.append(_ensure_model(zoo, run, lmcfg, name, data, tok, callbacks))
    out = ZooBuild(zoo, tok_dir, tok, data, entries)
    if report:
        from transferlab.studies.transfer.zoo_report import write_zoo_report

        out.report = write_zoo_report(out, [store.run_dir(LM_STUDY, e["run_id"]) for e in entries])
    return out


def _ensure_model(
    zoo: Zoo,
    run: Run,
    cfg: LMRunConfig,
    name: str,
    data: TokenData,
    tok: Any,
    callbacks: list[Callback] | None,
) -> dict[str, Any]:
    mdir = zoo.model_dir(name)
    if run.status == "done" and (mdir / "config.json").is_file() and name in zoo.manifest():
        return {**zoo.get(name), "reused": True}
    spec = size_spec(cfg.size)
    _say(f"zoo: {name} ({spec.non_embedding_params():,} non-embedding params, {cfg.steps} steps)")
    model = new_model(spec, cfg.vocab_size, cfg.seq_len, tok.eos_token_id, cfg.seed)
    t0 = time.perf_counter()
    res = train_lm(cfg, run, data.train, data.val, model, callbacks=callbacks, description=f"zoo {cfg.size}")
    _check_finished(res, run)
    tmp = mdir.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_pretrained(res.model, tok, tmp)
    shutil.rmtree(mdir, ignore_errors=True)
    tmp.rename(mdir)
    stats = _run_stats(cfg, run, res)
    fpt = flops_per_token(spec.non_embedding_params(), cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.seq_len)
    entry = {
        "name": name,
        "path": str(mdir.relative_to(zoo.root)),
        "size": cfg.size,
        "corpus": cfg.corpus,
        "corpus_key": cfg.corpus_key,
        "corpus_info": {k: v for k, v in data.info.items() if not isinstance(v, list)},
        "tokenizer": cfg.tokenizer,
        "vocab_size": cfg.vocab_size,
        "seq_len": cfg.seq_len,
        "d_model": spec.d_model,
        "n_layers": spec.n_layers,
        "n_heads": spec.n_heads,
        "d_ff": spec.d_ff,
        "non_embedding_params": spec.non_embedding_params(),
        "params": sum(p.numel() for p in res.model.parameters()),
        "flops_per_token": fpt,
        "run_id": run.id,
        "created": time.time(),
        "build_wall_seconds": time.perf_counter() - t0,
        **stats,
    }
    zoo.record(entry)
    run.finish(entry)
    return {**entry, "reused": False}


def _save_pretrained(model: Any, tok: Any, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(path), safe_serialization=True)
        tok.save_pretrained(str(path))
    finally:
        if bars:
            hf_logging.enable_progress_bar()


# ---- the transfer sweep ------------------------------------------------------------------------
def target_config(
    cfg: TransferRunConfig, size: str, kind: str, D: int, data: TokenData, vocab: int, init: str = ""
) -> LMRunConfig:
    steps = cfg.steps_for(D)
    return LMRunConfig(
        kind=kind,
        corpus=cfg.target_corpus,
        corpus_key=data.corpus_key,
        tokenizer=data.tokenizer,
        **_architecture(size, vocab),
        seq_len=cfg.seq_len,
        train_tokens=D,
        data_seed=cfg.seed,
        steps=steps,
        batch_size=cfg.batch_size,
        lr=cfg.finetune_lr if kind == "finetune" else cfg.scratch_lr,
        warmup_steps=min(10, steps // 10),
        weight_decay=cfg.weight_decay,
        eval_every=cfg.eval_every,
        eval_tokens=cfg.eval_tokens,
        train_eval_tokens=min(D, 2048),
        checkpoint_every=cfg.eval_every * 5,
        patience=cfg.patience,
        init=init,
        seed=cfg.seed,
        order_seed=cfg.seed,
        monitor=False,
        num_threads=cfg.num_threads,
    )


def _target_run(
    store: Store, zoo: Zoo, lmcfg: LMRunConfig, data: TokenData, tok: Any, init_name: str | None
) -> dict[str, Any]:
    run = store.open_run(LM_STUDY, lmcfg, sweep=f"{STUDY}-{lmcfg.corpus_key[:8]}")
    res = None
    if run.status != "done":
        spec = size_spec(lmcfg.size)
        if init_name is None:
            model = new_model(spec, lmcfg.vocab_size, lmcfg.seq_len, tok.eos_token_id, lmcfg.seed)
        else:
            model = zoo.load(init_name).train()
        res = train_lm(
            lmcfg,
            run,
            data.train,
            data.val,
            model,
            description=f"{lmcfg.kind} {lmcfg.size} D={lmcfg.train_tokens}",
        )
        _check_finished(res, run)
        run.finish(_run_stats(lmcfg, run, res))
    s = run.summary() or {}
    w = lmcfg.seq_len + 1
    return {
        "kind": lmcfg.kind,
        "N": size_spec(lmcfg.size).non_embedding_params(),
        "D": (lmcfg.train_tokens // w) * w,
        "loss": s.get("best_val_loss"),
        "size": lmcfg.size,
        "final_loss": s.get("val_loss"),
        "steps": s.get("steps"),
        "tokens_seen": s.get("tokens_seen"),
        "run_id": run.id,
        "init": init_name or "",
        "wall_seconds": s.get("wall_seconds"),
    }


def sweep_rows(
    cfg: TransferRunConfig, store: Store, zoo_root: str | Path | None = None
) -> tuple[list[dict[str, Any]], ZooBuild]:
    """Pretrain the zoo, then every scratch and fine-tuning run of the sweep: the runs table."""
    zb = build_zoo(cfg.zoo(), store, zoo_root)
    target = zb.zoo.ensure_tokens(cfg.target_corpus, zb.tokenizer_dir, cfg.val_percent, cfg.max_files)
    vocab = len(zb.tokenizer)
    by_size = {e["size"]: e for e in zb.entries}
    plan: list[tuple[LMRunConfig, str | None]] = []
    for size in cfg.sizes:
        for D in cfg.scratch_D:
            plan.append((target_config(cfg, size, "scratch", D, target, vocab), None))
        for D in cfg.finetune_D:
            e = by_size[size]
            plan.append((target_config(cfg, size, "finetune", D, target, vocab, init=e["run_id"]), e["name"]))
    rows = []
    for i, (lmcfg, init) in enumerate(plan):
        _say(
            f"transfer run {i + 1}/{len(plan)}: {lmcfg.kind} {lmcfg.size} D={lmcfg.train_tokens} "
            f"({lmcfg.steps} steps max)"
        )
        rows.append(_target_run(store, zb.zoo, lmcfg, target, zb.tokenizer, init))
    return rows, zb


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


def run(cfg: TransferRunConfig, store: Store, zoo_root: str | Path | None = None) -> dict[str, Any]:
    """The study: sweep, runs table (CSV), analysis by :mod:`analysis`, report. Returns the JSON summary."""
    from transferlab.studies.transfer.analysis import analyze_transfer
    from transferlab.studies.transfer.config import TransferFitConfig
    from transferlab.studies.transfer.zoo_report import write_transfer_report

    t0 = time.perf_counter()
    rows, zb = sweep_rows(cfg, store, zoo_root)
    trun = store.open_run(STUDY, cfg)
    trun.start()
    csv = write_runs_csv(rows, trun.path / "runs.csv")
    fit_cfg = TransferFitConfig(
        file=str(csv), bootstrap=cfg.bootstrap, seed=cfg.seed, fix=cfg.fix, num_threads=cfg.num_threads
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
    }
    if result is not None:
        fit = result.summary
        growth = dt_by_size(result.analysis.rows)
        summary.update({k: fit[k] for k in ("k", "k_ci", "alpha", "alpha_ci", "beta", "beta_ci", "names")})
        summary["robust"] = fit["robust"]
        summary["scratch_law"] = fit["scratch_law"]
        summary["D_T_by_size"] = growth
        summary["D_T_grows_with_N"] = bool(
            len(growth) >= 2 and all(b["geomean_D_T"] > a["geomean_D_T"] for a, b in zip(growth, growth[1:]))
        )
        summary["ossified_rows"] = fit["ossified_rows"]
        summary["rows"] = fit["rows"]
        summary["warnings"] = fit["warnings"]
    summary["wall_seconds"] = time.perf_counter() - t0
    report = write_transfer_report(cfg, rows, result, error, oss, zb, store, trun.report_path, summary)
    summary["report"] = str(report)
    trun.finish(summary)
    return summary
