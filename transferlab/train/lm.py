"""Causal language modelling on the project's engine: token windows, LM loss, LM evaluator, live monitor.

A run trains one Hugging Face causal LM (K=1 member of the engine's stacked parameters) on
windows of ``seq_len + 1`` tokens cut from a token stream: the model reads ``w[:, :-1]`` and is
scored on ``w[:, 1:]``. The optimizer is AdamW as the engine's chain
``ScaleByAdam -> AddDecayedWeights -> ScaleByLR`` with linear warm-up and cosine decay.

The evaluator logs, at every evaluation step, the mean loss on a fixed slice of the training
windows (``train_loss``) and of the validation stream (``val_loss``), the learning rate and the
tokens seen. The live monitor (:class:`LiveLossMonitor`, built on
:class:`transferlab.train.monitors.LossPowerLawMonitor`) predicts each new ``train_loss`` from a
power law ``L(t) = E + A t^-alpha`` fitted on the earlier evaluations and flags points outside the
fit's interval, in the metrics log and on the console.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from transferlab.core.config import StudyConfig
from transferlab.core.devices import threads_for, torch_threads
from transferlab.core.errors import DataError
from transferlab.core.progress import console, is_quiet
from transferlab.store.run import Run
from transferlab.train import transforms as T
from transferlab.train.engine import Callback, Control, Engine, Schedule, TrainData, TrainResult
from transferlab.train.ensemble import StackedForward
from transferlab.train.monitors import LossPowerLawMonitor

Tensors = dict[str, torch.Tensor]


class LMRunConfig(StudyConfig):
    """One LM training run: pretraining a zoo model, or a from-scratch / fine-tuning run on a target."""

    kind: Literal["pretrain", "scratch", "finetune"] = "pretrain"
    corpus: str = "prose"
    corpus_key: str = ""
    tokenizer: str = Field("", description="fingerprint of the tokenizer.json")
    size: str = "xxs"
    d_model: int = Field(32, ge=1)
    n_layers: int = Field(1, ge=1)
    n_heads: int = Field(2, ge=1)
    d_ff: int = Field(96, ge=1)
    vocab_size: int = Field(4096, ge=2)
    seq_len: int = Field(64, ge=2)
    train_tokens: int = Field(
        0, ge=0, description="size of the training pool D in tokens (0: the whole stream)"
    )
    data_seed: int = Field(0, description="which windows make up the pool")
    steps: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eval_every: int = Field(25, ge=1)
    eval_tokens: int = Field(16384, ge=1, description="validation tokens per evaluation")
    train_eval_tokens: int = Field(8192, ge=1, description="training tokens scored for train_loss")
    checkpoint_every: int = Field(100, ge=1)
    patience: int = Field(
        0, ge=0, description="stop after this many evaluations without a better val_loss (0: off)"
    )
    init: str = Field("", description="run id of the pretrained model a fine-tuning run starts from")
    seed: int = 0
    order_seed: int = 0
    monitor: bool = True
    dtype: Literal["bfloat16", "float32"] = Field("float32", description="autocast dtype (resolved, not auto)")
    device: str = Field("cpu", description="where it trains (not part of the run's identity)")
    num_threads: int | None = Field(None, ge=1)
    compile: bool = Field(False, description="the training step through torch.compile (not part of the identity)")

    @model_validator(mode="after")
    def _consistent(self) -> LMRunConfig:
        if self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every "
                f"({self.eval_every})"
            )
        if self.kind == "finetune" and not self.init:
            raise ValueError("a finetune run needs init (the pretrained run id)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# ---- data -------------------------------------------------------------------------------------
def windows(ids: torch.Tensor, seq_len: int, max_tokens: int = 0, seed: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [n, seq_len + 1] of a token stream, optionally shuffled by ``seed``,
    keeping the first ``max_tokens // (seq_len + 1)`` (all when 0)."""
    w = seq_len + 1
    n = len(ids) // w
    if n == 0:
        raise DataError(
            f"a stream of {len(ids)} tokens holds no window of {w} tokens",
            fix="use a larger corpus or a shorter seq_len",
        )
    out = ids[: n * w].view(n, w).long()
    if seed is not None:
        out = out[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    if max_tokens:
        keep = max_tokens // w
        if keep < 1:
            raise DataError(
                f"train_tokens {max_tokens} is less than one window of {w} tokens",
                fix=f"use train_tokens >= {w}",
            )
        if keep > n:
            raise DataError(
                f"train_tokens {max_tokens} exceeds the {n * w} tokens of the training stream",
                fix=f"use train_tokens <= {n * w} or a larger corpus",
            )
        out = out[:keep]
    return out.contiguous()


def spread_windows(ids: torch.Tensor, seq_len: int, tokens: int = 0) -> torch.Tensor:
    """Non-overlapping windows of ``seq_len + 1`` tokens of a validation stream: all of them
    (``tokens = 0``), or ``tokens // (seq_len + 1)`` spread evenly over the whole stream.

    Evenly spread, not the first ones: a stream is the split's files in path order, and files
    differ a lot (the stdlib's prose split holds long, very regular codec tables in a few files).
    """
    w = windows(ids, seq_len)
    keep = max(1, tokens // (seq_len + 1)) if tokens else len(w)
    if keep >= len(w):
        return w
    return w[torch.linspace(0, len(w) - 1, keep).round().long()]


def lm_data(train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: LMRunConfig) -> TrainData:
    """TrainData whose inputs and targets are both the windows (the loss shifts them)."""
    tr = windows(train_ids, cfg.seq_len, cfg.train_tokens, seed=cfg.data_seed)
    va = windows(val_ids, cfg.seq_len)
    va = va[: max(1, cfg.eval_tokens // (cfg.seq_len + 1))]
    return TrainData(tr, tr, va, va)


# ---- model wrapper and loss ----------------------------------------------------------------------
class CausalLMLogits(nn.Module):
    """windows [B, T+1] -> next-token logits [B, T, V] of a zoo LM (:class:`~transferlab.zoo.model.ZooLM`)
    or a Hugging Face causal LM, under autocast in ``dtype`` (bf16: matmuls in bf16, parameters float32)."""

    def __init__(self, lm: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.lm = lm
        self.dtype = dtype
        self.hf = not callable(getattr(lm, "rope", None))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast(w.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            if self.hf:
                return self.lm(input_ids=w[:, :-1], use_cache=False).logits
            return self.lm(w[:, :-1])


class LMCrossEntropy(nn.Module):
    """Stacked logits [K, B, T, V] and windows [B, T+1] -> per-window mean next-token loss [K, B]."""

    def forward(self, logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        k, b, t, v = logits.shape
        target = w[:, 1:].expand(k, b, t)
        nll = F.cross_entropy(logits.reshape(-1, v).float(), target.reshape(-1), reduction="none")
        return nll.view(k, b, t).mean(-1)


# ---- live monitor ------------------------------------------------------------------------------
class LiveLossMonitor(Callback):
    """Engine callback + evaluator hook: the training loss against a power law fitted on earlier points.

    Uses :class:`~transferlab.train.monitors.LossPowerLawMonitor` (t = tokens seen). On resume the
    logged records are replayed, so a resumed run flags exactly what an uninterrupted one would."""

    def __init__(self, tokens_per_step: int, min_points: int = 6, z: float = 3.0, label: str = ""):
        self.tokens_per_step = tokens_per_step
        self.mon = LossPowerLawMonitor(min_points=min_points, z=z)
        self.label = label

    def annotate(self, step: int, loss: float, live: bool = True) -> dict[str, float]:
        out = self.mon.update(float(step * self.tokens_per_step), loss)
        if live and out.get("loss_deviation") and not is_quiet():
            where = "above" if out["loss_deviation"] > 0 else "below"
            console.print(
                f"[yellow]monitor{self.label}: step {step} train loss {loss:.4f} is {where} the "
                f"power-law prediction {out['loss_pred']:.4f} "
                f"[{out['loss_pred_lo']:.4f}, {out['loss_pred_hi']:.4f}][/yellow]"
            )
        return out

    def on_resume(self, records: list[list[dict[str, Any]]]) -> None:
        for rec in records[0]:
            if "train_loss" in rec:
                self.annotate(int(rec["step"]), float(rec["train_loss"]), live=False)

    @property
    def deviations(self) -> list[tuple[float, float, int]]:
        return self.mon.deviations


class EarlyStopping(Callback):
    """Stop once ``patience`` evaluations in a row brought no better val_loss (0: never)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = math.inf
        self.bad = 0

    def on_resume(self, records: list[list[dict[str, Any]]]) -> None:
        for rec in records[0]:
            self._see(rec)

    def _see(self, rec: dict[str, Any]) -> bool:
        v = rec.get("val_loss")
        if v is None:
            return False
        if v < self.best:
            self.best, self.bad = v, 0
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        if self._see(records[0]):
            control.should_stop = True


@torch.no_grad()
def mean_loss(params: Tensors, forward: StackedForward, w: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Token-weighted mean next-token loss per member over windows ``w``: [K]."""
    loss_fn = LMCrossEntropy()
    total = None
    for i in range(0, len(w), batch):
        part = loss_fn(forward(params, w[i : i + batch]), w[i : i + batch]).sum(-1)
        total = part if total is None else total + part
    assert total is not None
    return total / len(w)


def lm_evaluator(data: TrainData, cfg: LMRunConfig, lr_of_step, monitor: LiveLossMonitor | None):
    """The engine's Evaluator for LMs (see the module docstring)."""
    n_train = max(1, cfg.train_eval_tokens // (cfg.seq_len + 1))
    train_slice = data.x_train[:n_train]

    def evaluate(params: Tensors, forward: StackedForward, step: int) -> list[dict[str, Any]]:
        tl = float(mean_loss(params, forward, train_slice)[0])
        vl = float(mean_loss(params, forward, data.x_val)[0])
        rec: dict[str, Any] = {
            "step": step,
            "tokens": step * cfg.tokens_per_step,
            "train_loss": tl,
            "val_loss": vl,
            "lr": float(lr_of_step(step)[0]),
            "time": time.time(),
        }
        if monitor is not None:
            rec.update(monitor.annotate(step, tl))
        return [rec]

    return evaluate


def auto_threads(model: nn.Module, tokens_per_step: int) -> int:
    """Threads for a step of ``tokens_per_step`` tokens through ``model`` (see ``core.devices.threads_for``)."""
    return threads_for(6.0 * sum(p.numel() for p in model.parameters()) * tokens_per_step)


# ---- one run -----------------------------------------------------------------------------------
@dataclass
class LMTrainResult:
    model: nn.Module  # the Hugging Face model, holding the final parameters
    result: TrainResult
    records: list[dict[str, Any]]
    deviations: list[tuple[float, float, int]]
    tokens_trained: int  # in this call (a resumed run counts only what it ran)


def train_lm(
    cfg: LMRunConfig,
    run: Run,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    model: nn.Module,
    *,
    callbacks: list[Callback] | None = None,
    description: str = "lm",
) -> LMTrainResult:
    """Train ``model`` (initial weights) on the engine; resumes from ``run``'s checkpoint if it has one."""
    device = torch.device(cfg.device)
    data = lm_data(train_ids, val_ids, cfg).to(device)
    wrapper = CausalLMLogits(model, getattr(torch, cfg.dtype))
    params = {n: p.detach().to(device).clone().unsqueeze(0) for n, p in wrapper.named_parameters()}
    lr = torch.tensor([cfg.lr], device=device)
    scale = T.ScaleByLR(lr, T.make_schedule("cosine", cfg.warmup_steps, cfg.steps))
    chain = T.chain(
        T.ScaleByAdam(cfg.beta1, cfg.beta2, 1e-8),
        T.AddDecayedWeights(torch.tensor([cfg.weight_decay], device=device)),
        scale,
    )
    monitor = LiveLossMonitor(cfg.tokens_per_step, label=f" {description}") if cfg.monitor else None
    evaluator = lm_evaluator(data, cfg, scale.current_lr, monitor)
    schedule = Schedule(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        order_seed=cfg.order_seed,
    )
    cbs: list[Any] = (
        [c for c in (monitor,) if c is not None] + [EarlyStopping(cfg.patience)] + list(callbacks or [])
    )
    run.start()
    engine = Engine(
        StackedForward(wrapper),
        params,
        LMCrossEntropy(),
        chain,
        data,
        schedule,
        evaluator,
        runs=[run],
        callbacks=cbs,
        description=description,
        compile=cfg.compile,
    )
    with torch_threads(cfg.num_threads or auto_threads(model, cfg.tokens_per_step)):
        result = engine.run()
    with torch.no_grad():
        for n, p in wrapper.named_parameters():
            p.copy_(result.params[n][0].to(p.device))
    return LMTrainResult(
        model=model,
        result=result,
        records=run.metrics(),
        deviations=list(monitor.deviations) if monitor else [],
        tokens_trained=result.steps_run * cfg.tokens_per_step,
    )
