"""Build the model zoo and train target runs on it: the part of the transfer study other studies share.

``transferlab zoo build``, ``transferlab transfer``, the EFT zoo demo and ``transferlab correlate-zoo``
all train their models here. Every model is a run of the store's ``lm`` study, keyed by its resolved
:class:`~transferlab.train.lm.LMRunConfig`: a finished run is reused, an interrupted one resumes from
its last checkpoint through the engine.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.core.errors import TrainingDiverged
from transferlab.core.progress import say
from transferlab.models.zoo import TokenData, Zoo, corpus_key, new_model, size_spec
from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.transfer.zoo_config import TransferRunConfig, ZooConfig
from transferlab.train.engine import Callback
from transferlab.train.lm import LMRunConfig, LMTrainResult, flops_per_token, train_lm

LM_STUDY = "lm"


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


def architecture(size: str, vocab: int) -> dict[str, Any]:
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
        **architecture(size, vocab),
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


def check_finished(res: LMTrainResult, run: Run) -> None:
    if res.result.diverged[0] is not None:
        run.finish({"error": res.result.diverged[0]}, status="diverged")
        raise TrainingDiverged(res.result.diverged[0], where=str(run.path), fix="lower the learning rate")


def run_stats(cfg: LMRunConfig, run: Run, res: LMTrainResult | None) -> dict[str, Any]:
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
        entries.append(ensure_model(zoo, run, lmcfg, name, data, tok, callbacks))
    out = ZooBuild(zoo, tok_dir, tok, data, entries)
    if report:
        from transferlab.studies.transfer.zoo_report import write_zoo_report

        out.report = write_zoo_report(out, [store.run_dir(LM_STUDY, e["run_id"]) for e in entries])
    return out


def ensure_model(
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
    say(f"zoo: {name} ({spec.non_embedding_params():,} non-embedding params, {cfg.steps} steps)")
    model = new_model(spec, cfg.vocab_size, cfg.seq_len, tok.eos_token_id, cfg.seed)
    t0 = time.perf_counter()
    res = train_and_save(cfg, run, data, model, tok, mdir, callbacks=callbacks, description=f"zoo {cfg.size}")
    stats = run_stats(cfg, run, res)
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


def train_and_save(cfg: LMRunConfig, run: Run, data: TokenData, model: Any, tok: Any, mdir: Path, *,
                   callbacks: list[Callback] | None = None, description: str) -> LMTrainResult:
    """Train (or resume) one zoo run, then save the model where the zoo expects it, atomically: a
    crash while saving leaves the previous folder or none, never half of one."""
    res = train_lm(cfg, run, data.train, data.val, model, callbacks=callbacks, description=description)
    check_finished(res, run)
    tmp = mdir.with_name(f".{mdir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(res.model, tok, tmp)
    shutil.rmtree(mdir, ignore_errors=True)
    tmp.rename(mdir)
    return res


def save_pretrained(model: Any, tok: Any, path: Path) -> None:
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
        **architecture(size, vocab),
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


def target_run(
    store: Store, zoo: Zoo, lmcfg: LMRunConfig, data: TokenData, tok: Any, init_name: str | None
) -> dict[str, Any]:
    run = store.open_run(LM_STUDY, lmcfg, sweep=f"transfer-{lmcfg.corpus_key[:8]}")
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
        check_finished(res, run)
        run.finish(run_stats(lmcfg, run, res))
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


