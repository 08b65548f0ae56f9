"""Pretraining and fine-tuning zoo models: one entry point each, reusing what is done, resuming the rest.

Every model is a run of the store's ``lm`` study keyed by its resolved
:class:`~transferlab.train.lm.LMRunConfig`: a finished run (whose model is saved in the zoo) is reused,
an interrupted one resumes bit for bit from its newest checkpoint through the engine, and the model is
saved as a ``LlamaForCausalLM`` folder atomically (a crash leaves the previous folder or none).

Models train as :class:`~transferlab.zoo.model.ZooLM` (same weights and names as Llama, but faster on a
CPU) in bf16 autocast where the hardware has it (:mod:`transferlab.core.devices`), on the device asked
for. Sizes that cannot fit in memory are refused before anything is allocated.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from transferlab.core.devices import resolve_compile, resolve_device, resolve_dtype
from transferlab.core.errors import ConfigError, DataError, TrainingDiverged
from transferlab.core.progress import say
from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.train.engine import Callback
from transferlab.train.lm import LMRunConfig, LMTrainResult, spread_windows, train_lm
from transferlab.zoo.model import LMShape, ZooLM, flops_per_token, from_hf, new_lm, to_hf
from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import size_spec
from transferlab.zoo.store import TokenData, Zoo

LM_STUDY = "lm"
FRESH_EPOCHS = 4.0  # Muennighoff et al. 2023: up to ~4 passes are nearly as good as fresh data


def shape_of(size: str, vocab: int, seq_len: int) -> LMShape:
    s = size_spec(size)
    return LMShape(vocab, s.d_model, s.n_layers, s.n_heads, s.d_ff, seq_len)


def architecture(size: str, vocab: int) -> dict[str, Any]:
    """The LMRunConfig fields that a zoo size fixes."""
    spec = size_spec(size)
    return {"size": size, "d_model": spec.d_model, "n_layers": spec.n_layers, "n_heads": spec.n_heads,
            "d_ff": spec.d_ff, "vocab_size": vocab}


# ---- memory ------------------------------------------------------------------------------------
def memory_estimate(size: str, vocab: int, batch: int, seq_len: int) -> int:
    """Bytes a training run needs at its peak: parameters with gradient and Adam's two moments (float32,
    plus a checkpoint copy), and the activations autograd keeps: per layer ~40 d-wide values per token
    (norms, q/k/v, attention, SwiGLU's 3 d_ff-wide tensors), and the logits with their float32 copy,
    softmax and gradient (~14 bytes per vocabulary entry and token)."""
    spec = size_spec(size)
    params = spec.non_embedding_params() + spec.embedding_params(vocab)
    tokens = batch * seq_len
    per_layer = tokens * (20 * spec.d_model + 4 * spec.d_ff) * 4
    logits = tokens * vocab * 14
    return int(params * 4 * 5 + spec.n_layers * per_layer + logits + 64 * 2**20)


def check_memory(size: str, vocab: int, batch: int, seq_len: int, where: str = "zoo") -> None:
    """Refuse, before allocating, a run whose :func:`memory_estimate` exceeds the project's memory cap
    (:func:`transferlab.core.memory.memory_cap_bytes`: the machine's memory, or TRANSFERLAB_MAX_MEMORY_GB)."""
    from transferlab.core.memory import MEMORY_ENV, memory_cap_bytes

    need = memory_estimate(size, vocab, batch, seq_len)
    cap, source = memory_cap_bytes()
    if cap is not None and need > cap:
        raise ConfigError(
            f"training size {size} with vocab_size {vocab}, batch {batch} x seq_len {seq_len} needs about "
            f"{need / 2**30:.1f} GB, more than the {cap / 2**30:.1f} GB of {source}",
            where=where,
            fix=f"use a smaller vocab_size, train.batch_size, train.seq_len or size (or raise {MEMORY_ENV})",
        )


# ---- configs -----------------------------------------------------------------------------------
def lm_config(kind: str, size: str, data: TokenData, vocab: int, settings: TrainSettings, tokens: int, *,
              train_tokens: int = 0, init: str = "", lr: float | None = None, patience: int = 0,
              data_seed: int = 0, steps: int | None = None) -> LMRunConfig:
    """The run of one zoo model: ``tokens`` seen in training (a pool of ``train_tokens``, 0 = the whole
    stream), with ``settings``' batch rule, schedule, precision and device."""
    device = resolve_device(settings.device, where="train.device")
    dtype = resolve_dtype(settings.dtype, device, where="train.dtype")
    batch = settings.batch_size if steps is not None else settings.batch_for(tokens)
    n_steps = steps if steps is not None else settings.steps_for(tokens)
    every = settings.eval_every_for(n_steps)
    n_steps = max(every, -(-n_steps // every) * every)  # end on an evaluation
    check_memory(size, vocab, batch, settings.seq_len, where=f"{kind} {size}")
    return LMRunConfig(
        kind=kind, corpus=data.corpus, corpus_key=data.corpus_key, tokenizer=data.tokenizer,
        **architecture(size, vocab), seq_len=settings.seq_len, train_tokens=train_tokens, data_seed=data_seed,
        steps=n_steps, batch_size=batch, lr=settings.lr if lr is None else lr,
        warmup_steps=int(settings.warmup_frac * n_steps), weight_decay=settings.weight_decay,
        beta1=settings.beta1, beta2=settings.beta2, eval_every=every,
        eval_tokens=settings.eval_tokens, train_eval_tokens=min(8192, settings.eval_tokens),
        checkpoint_every=every * 5, patience=patience, init=init,
        seed=settings.seed, order_seed=settings.seed, monitor=settings.monitor and kind == "pretrain",
        dtype="bfloat16" if dtype == torch.bfloat16 else "float32", device=str(device),
        num_threads=settings.num_threads,
        compile=resolve_compile(settings.compile, device, n_steps, where="train.compile"),
    )


# ---- held-out loss -----------------------------------------------------------------------------
@torch.no_grad()
def heldout_loss(model: torch.nn.Module, ids: torch.Tensor, seq_len: int, tokens: int = 65536,
                 batch: int = 32, dtype: str = "float32") -> float:
    """Mean next-token loss (nats) of a model over up to ``tokens`` of a validation stream, in windows of
    ``seq_len + 1`` spread evenly over the stream."""
    from transferlab.train.lm import CausalLMLogits, LMCrossEntropy

    w = spread_windows(ids, seq_len, tokens)
    dev = next(model.parameters()).device
    f = CausalLMLogits(model, getattr(torch, dtype)).eval()
    loss = LMCrossEntropy()
    total = 0.0
    for i in range(0, len(w), batch):
        part = w[i : i + batch].to(dev)
        total += float(loss(f(part).unsqueeze(0), part).sum())
    return total / len(w)


# ---- one run -----------------------------------------------------------------------------------
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
        "dtype": cfg.dtype,
        "device": cfg.device,
        "compiled": cfg.compile,
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


def save_pretrained(model: Any, tok: Any, path: Path) -> None:
    """``save_pretrained`` of a model (a ZooLM is saved as its LlamaForCausalLM) and its tokenizer, atomically."""
    from transformers.utils import logging as hf_logging

    hf = to_hf(model, tok.eos_token_id) if isinstance(model, ZooLM) else model
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def initial_model(zoo: Zoo, cfg: LMRunConfig, init_name: str | None) -> ZooLM:
    """A fresh ZooLM for the run's size and seed, or the zoo model ``init_name`` converted to one."""
    if init_name is None:
        return new_lm(shape_of(cfg.size, cfg.vocab_size, cfg.seq_len), cfg.seed)
    return from_hf(zoo.load(init_name), cfg.seq_len)


def run_lm(
    zoo: Zoo, store: Store, cfg: LMRunConfig, data: TokenData, tok: Any, *, init_name: str | None = None,
    save_as: str | None = None, heldout: dict[str, TokenData] | None = None, sweep: str | None = None,
    callbacks: list[Callback] | None = None, description: str = "lm", extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or reuse, or resume) one zoo run; with ``save_as`` the model is saved in the zoo and recorded
    in its manifest. Returns the run's entry (reused ones carry ``"reused": True``)."""
    run = store.open_run(LM_STUDY, cfg, sweep=sweep)
    name = None if save_as is None else f"{save_as}-{run.id[:8]}"
    if run.status == "done":
        if name is None:
            return {**(run.summary() or {}), "run_id": run.id, "reused": True}
        if (zoo.model_dir(name) / "config.json").is_file() and name in zoo.manifest():
            return {**zoo.get(name), "reused": True}
    spec = size_spec(cfg.size)
    w = cfg.seq_len + 1  # the pool train_lm cuts, counted without copying the stream into windows
    n = len(data.train) // w
    pool = (min(n, cfg.train_tokens // w) if cfg.train_tokens else n) * w
    epochs = cfg.steps * cfg.tokens_per_step / pool if pool else float("inf")  # no window: train_lm says so
    say(f"zoo: {name or description} ({spec.non_embedding_params():,} non-embedding params, {cfg.steps} steps "
        f"of {cfg.batch_size}x{cfg.seq_len} tokens, {epochs:.2f} passes, {cfg.dtype} on {cfg.device})")
    model = initial_model(zoo, cfg, init_name).to(cfg.device)
    t0 = time.perf_counter()
    res = train_lm(cfg, run, data.train, data.val, model, callbacks=callbacks, description=description)
    check_finished(res, run)
    stats = run_stats(cfg, run, res)
    n_params = sum(p.numel() for p in res.model.parameters())
    entry: dict[str, Any] = {
        "size": cfg.size, "kind": cfg.kind, "corpus": cfg.corpus, "corpus_key": cfg.corpus_key,
        "tokenizer": cfg.tokenizer, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
        "d_model": spec.d_model, "n_layers": spec.n_layers, "n_heads": spec.n_heads, "d_ff": spec.d_ff,
        "non_embedding_params": spec.non_embedding_params(), "params": n_params,
        "flops_per_token": flops_per_token(shape_of(cfg.size, cfg.vocab_size, cfg.seq_len)),
        "run_id": run.id, "init": init_name or "", "created": time.time(),
        "build_wall_seconds": time.perf_counter() - t0, **stats,
        "tokens_per_param": stats["tokens_seen"] / spec.non_embedding_params(),
        "train_pool_tokens": pool, "epochs": stats["tokens_seen"] / pool,
        **(extra or {}),
    }
    if entry["epochs"] > FRESH_EPOCHS:
        entry["repetition_note"] = (
            f"{entry['epochs']:.1f} passes over the training data: beyond ~{FRESH_EPOCHS:.0f}, repeated tokens are "
            "worth less than fresh ones (Muennighoff et al. 2023)")
    if heldout:
        entry["heldout_loss"] = {
            k: heldout_loss(res.model, d.val, cfg.seq_len, dtype=cfg.dtype) for k, d in heldout.items()}
    if name is not None:
        mdir = zoo.model_dir(name)
        save_pretrained(res.model.cpu(), tok, mdir)
        entry = {"name": name, "path": str(mdir.relative_to(zoo.root)), **entry}
        zoo.record(entry)
    run.finish(entry)
    return {**entry, "reused": False}


def pretrain(zoo: Zoo, store: Store, size: str, data: TokenData, tok: Any, settings: TrainSettings,
             tokens: int, *, tag: str, heldout: dict[str, TokenData] | None = None,
             callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Pretrain (or reuse, or resume) zoo size ``size`` on ``data`` for ``tokens`` tokens; saved in the zoo as
    ``<tag>-<size>-<run id>``."""
    if tokens < settings.seq_len + 1:
        raise DataError(f"a budget of {tokens} tokens holds no window of {settings.seq_len + 1}",
                        where="tokens", fix="raise the token budget")
    cfg = lm_config("pretrain", size, data, len(tok), settings, tokens)
    return run_lm(zoo, store, cfg, data, tok, save_as=f"{tag}-{size}", heldout=heldout, callbacks=callbacks,
                  description=f"zoo {size}")


def finetune(zoo: Zoo, store: Store, base: str, data: TokenData, tok: Any, settings: TrainSettings,
             tokens: int, *, tag: str, lr: float | None = None, train_tokens: int = 0, patience: int = 0,
             steps: int | None = None, save: bool = True, heldout: dict[str, TokenData] | None = None,
             sweep: str | None = None) -> dict[str, Any]:
    """Fine-tune (or reuse, or resume) the zoo model ``base`` on ``data``: ``tokens`` seen from a pool of
    ``train_tokens`` (0: the whole stream). Saved as ``<base>-<tag>-<run id>`` unless ``save=False``."""
    e = zoo.get(base)
    cfg = lm_config("finetune", e["size"], data, len(tok), settings, tokens, train_tokens=train_tokens,
                    init=e["run_id"], lr=lr, patience=patience, steps=steps, data_seed=settings.seed)
    return run_lm(zoo, store, cfg, data, tok, init_name=base, save_as=f"{base}-{tag}" if save else None,
                  heldout=heldout, sweep=sweep, description=f"finetune {e['size']}", extra={"base": base})
