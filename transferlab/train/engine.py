"""The training engine: one loop for single runs and ensembles.

Parameters are stacked ``{name: [K, ...]}`` (K=1 for one run). Each step computes the per-member
losses, one backward pass for the sum (members are independent, so each gets its own gradient) or, in
loop mode, one forward and backward per member on its own parameters, runs the gradient-transform
chain, and adds the update. Evaluation runs without autograd on a
fixed or log-spaced schedule. A non-finite loss stops that member within the step; its last good
checkpoint is kept. Checkpoints hold everything needed to continue bit-for-bit (parameters,
transform state, step); the minibatch order is a pure function of (order_seed, epoch), so it needs
no RNG state.
"""

from __future__ import annotations

import itertools
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from transferlab.core.memory import reuse_freed_memory
from transferlab.core.progress import progress_bar
from transferlab.store.run import Run
from transferlab.train.ensemble import StackedForward
from transferlab.train.transforms import Chain

Tensors = dict[str, torch.Tensor]


@dataclass
class Schedule:
    steps: int
    batch_size: int = 0  # 0 = full batch
    eval_every: int = 10
    log_spaced_evals: int = 0  # extra evaluations at log-spaced steps (0 = none)
    checkpoint_every: int = 500
    order_seed: int = 0
    chunk_size: int = 0  # >0: accumulate each step's gradient over row chunks of this size (same math)
    # a member whose training loss exceeds this many times its first training loss has diverged (as NaN/Inf
    # does); 0 turns the bound off. A loss 1,000x its start is never a slow phase of training.
    explode_factor: float = 1e3

    def eval_steps(self) -> set[int]:
        s = set(range(0, self.steps + 1, max(1, self.eval_every))) | {self.steps}
        if self.log_spaced_evals > 0:
            s |= {int(round(x)) for x in torch.logspace(0, math.log10(max(self.steps, 1)),
                                                           self.log_spaced_evals).tolist()}
        return {x for x in s if 0 <= x <= self.steps}


@dataclass
class TrainData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    def to(self, device: torch.device) -> TrainData:
        return TrainData(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)))


class Evaluator(Protocol):
    def __call__(self, params: Tensors, forward: StackedForward, step: int) -> list[dict[str, Any]]: ...


@dataclass
class Control:
    """What callbacks tell the engine at an evaluation, as transformers' ``TrainerControl``: a callback sets
    ``should_stop`` to end training after this evaluation."""

    should_stop: bool = False


@dataclass
class Evaluation:
    """One evaluation, as callbacks see it before it is logged: the step, the (detached) stacked parameters
    and the forward, and one record per member, which ``on_measure`` callbacks add their measurements to."""

    step: int
    params: Tensors
    forward: StackedForward
    records: list[dict[str, Any]]


class Callback:
    """What the engine tells a callback (subclass it and override what you need, as with transformers'
    ``TrainerCallback``), in the order of the engine's ``callbacks`` list. At every evaluation:
    ``on_measure`` (before the records are logged, without autograd: add per-member measurements, e.g. the
    monitors of :mod:`transferlab.train.plasticity`), then ``on_eval`` (after logging: set
    ``control.should_stop`` to end the run; callbacks after the one that stopped it are not told). Once,
    when a run resumes from a checkpoint, ``on_resume`` gets the metrics already logged (to rebuild the
    callback's state)."""

    def on_measure(self, evaluation: Evaluation) -> None:
        """Add measurements to ``evaluation.records[i]`` (member i) before they are logged."""

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        """Set ``control.should_stop = True`` to stop training after this evaluation."""

    def on_resume(self, records: list[list[dict[str, Any]]]) -> None:
        """The metrics each member logged before the checkpoint the run continues from."""


@dataclass
class TrainResult:
    params: Tensors
    step: int
    diverged: list[str | None]  # per member: None, or the message of why it stopped
    wall_seconds: float
    train_seconds: float
    steps_run: int
    stopped_early: bool = False
    records: list[list[dict[str, Any]]] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        forward: StackedForward,
        params: Tensors,
        loss_fn: torch.nn.Module,
        chain: Chain,
        data: TrainData,
        schedule: Schedule,
        evaluator: Evaluator,
        runs: list[Run] | None = None,
        callbacks: list[Callback] | None = None,
        description: str = "train",
        compile: bool | Callable[..., torch.Tensor] = False,
    ):
        self.forward = forward
        self.params = {k: v.clone() for k, v in params.items()}
        self.k = next(iter(params.values())).shape[0]
        self.loss_fn = loss_fn
        self.chain = chain
        self.states = chain.init(self.params)
        self.data = data
        self.schedule = schedule
        self.evaluator = evaluator
        self.runs = runs
        self.callbacks = callbacks or []
        self.description = description
        # compile: each member's forward + loss (and its backward) through torch.compile; the step then
        # goes member by member (K=1 included) on leaf views of the member's own parameters. A callable is an
        # already compiled member loss (``other.compiled_loss`` of an engine with the same forward and loss).
        self.compiled_loss = (compile if callable(compile) else
                              compiled_member_loss(forward, loss_fn) if compile else None)
        if runs is not None and len(runs) != self.k:
            raise ValueError(f"{len(runs)} runs for {self.k} members")
        self._loss0: list[float | None] = [None] * self.k  # first training loss per member (explode bound)
        self.exploded: dict[int, tuple[float, float]] = {}  # member -> (loss, first loss) past the bound
        self._perm: torch.Tensor | None = None  # this epoch's minibatch order (see _batch)
        self._perm_epoch = -1
        self._resumed = False  # continuing from a checkpoint: its evaluation is not logged twice

    # ---- batches --------------------------------------------------------------
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.data.x_train.shape[0]
        bs = self.schedule.batch_size
        if bs <= 0 or bs >= n:
            return self.data.x_train, self.data.y_train
        per_epoch = n // bs
        epoch, i = divmod(step, per_epoch)
        if i == 0 or self._perm is None or self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(self.schedule.order_seed * 1_000_003 + epoch)
            self._perm = torch.randperm(n, generator=g).to(self.data.x_train.device)
            self._perm_epoch = epoch
        idx = self._perm[i * bs:(i + 1) * bs]
        return self.data.x_train[idx], self.data.y_train[idx]

    # ---- checkpoints ----------------------------------------------------------
    def _save(self, step: int, alive: list[bool]) -> None:
        if self.runs is None:
            return
        flat = self.chain.flat_state(self.states)
        for k, run in enumerate(self.runs):
            if not alive[k]:
                continue
            tensors = {f"param.{n}": v[k] for n, v in self.params.items()}
            tensors.update({f"state.{n}": v[k] for n, v in flat.items()})
            state: dict[str, Any] = {"member": k}
            if self._loss0[k] is not None:
                state["loss0"] = self._loss0[k]
            run.save_checkpoint(step, tensors, state)

    def _resume(self) -> int:
        """Load the newest step every member has and return it (0 if none).

        A checkpoint at step s is taken after evaluating step s and before training step s, so the
        loop resumes at s without evaluating (or logging) it again.
        """
        if self.runs is None:
            return 0
        available = [set(r.checkpoint_steps()) for r in self.runs]
        common = set.intersection(*available) if available else set()
        if not common:
            for r in self.runs:
                r.truncate_metrics(0)
            return 0
        step, loaded_all = self._newest_intact(common)
        flat = self.chain.flat_state(self.states)
        for k, run in enumerate(self.runs):
            tensors, state = loaded_all[k]
            if "loss0" in state:
                self._loss0[k] = float(state["loss0"])
            for n, v in self.params.items():
                v[k].copy_(tensors[f"param.{n}"])
            for n, v in flat.items():
                v[k].copy_(tensors[f"state.{n}"])
            run.truncate_metrics(int(state["metrics_bytes"]))
        self._resumed = True
        return step

    def _newest_intact(self, common: set[int]) -> tuple[int, list[tuple[Tensors, dict[str, Any]]]]:
        """The newest step whose checkpoint is intact (checksums) for every member, with one warning line
        for each damaged one skipped; StoreError when none is."""
        from transferlab.core.errors import StoreError
        from transferlab.store.run import warn

        assert self.runs is not None
        skipped: list[str] = []
        for step in sorted(common, reverse=True):
            try:
                loaded = [run.load_checkpoint(step) for run in self.runs]
            except StoreError as err:
                skipped.append(err.what)
                continue
            for what in skipped:
                warn(f"{what}; resuming from the intact checkpoint at step {step} instead")
            return step, loaded  # type: ignore[return-value]
        raise StoreError(f"every checkpoint is corrupt or unreadable ({'; '.join(skipped)})",
                         where=str(self.runs[0].ckpt_dir),
                         fix=f"delete {self.runs[0].ckpt_dir} to restart the run from step 0")

    # ---- the loop -------------------------------------------------------------
    def run(self) -> TrainResult:
        t_start = time.perf_counter()
        if self.data.x_train.device.type == "cpu":
            reuse_freed_memory()  # no page faults for each step's activations (see core.memory)
        sched = self.schedule
        start = self._resume()
        if start > 0 and self.runs is not None:
            previous = [r.metrics() for r in self.runs]
            for cb in self.callbacks:
                cb.on_resume(previous)
        eval_at = sched.eval_steps()
        alive = [True] * self.k
        diverged: list[str | None] = [None] * self.k
        last_good = [start if start > 0 else -1] * self.k
        for p in self.params.values():
            p.requires_grad_(True)
        stopped_early = False
        train_time = 0.0
        steps_run = 0
        step = start
        all_records: list[list[dict[str, Any]]] = []
        with progress_bar(self.description, total=sched.steps) as bar:
            bar.update(completed=start)
            while step <= sched.steps:
                if step in eval_at and not (step == start and self._resumed):
                    records = self._evaluate(step)
                    all_records.append(records)
                    self._log(records, alive)
                    info = _progress_info(records, alive)
                    bar.update(completed=step, **info)
                    control = Control()
                    for cb in self.callbacks:
                        if control.should_stop:
                            break
                        cb.on_eval(step, records, alive, control)
                    stop = control.should_stop
                    if step % sched.checkpoint_every == 0 or step == sched.steps or stop:
                        # also the point where a resumed run continues (see _resume)
                        self._save(step, alive)
                        last_good = [step if a else lg for a, lg in zip(alive, last_good)]
                    if stop:
                        stopped_early = True
                        break
                if step == sched.steps:
                    break
                t0 = time.perf_counter()
                bad = self._train_step(step, alive)
                train_time += time.perf_counter() - t0
                steps_run += 1
                for k in bad:
                    alive[k] = False
                    where = "" if self.runs is None else f" in {self.runs[k].path}"
                    what = "loss became NaN/Inf"
                    if k in self.exploded:
                        loss, l0 = self.exploded[k]
                        what = (f"loss exploded to {loss:.3g}, over {sched.explode_factor:g}x its first value "
                                f"{l0:.3g}")
                    diverged[k] = (
                        f"{what} at step {step}; last good checkpoint at step {last_good[k]}"
                        f" kept{where}"
                    )
                if not any(alive):
                    break
                step += 1
        for p in self.params.values():
            p.requires_grad_(False)
        return TrainResult(
            params={k: v.detach() for k, v in self.params.items()}, step=step, diverged=diverged,
            wall_seconds=time.perf_counter() - t_start, train_seconds=train_time, steps_run=steps_run,
            stopped_early=stopped_early, records=all_records,
        )

    def _train_step(self, step: int, alive: list[bool]) -> list[int]:
        x, y = self._batch(step)
        alive_t = torch.tensor(alive, device=x.device)
        cs = self.schedule.chunk_size
        if 0 < cs < x.shape[0]:
            per_member, grads = self._chunked_loss_and_grads(x, y, alive_t, cs)
        elif self.compiled_loss is not None or self.forward.one_by_one(self.params, x):
            per_member, grads = self._member_by_member(x, y, alive_t)
        else:
            logits = self.forward(self.params, x)
            per_member = self.loss_fn(logits, y).mean(-1)  # [K]
            live = torch.isfinite(per_member) & alive_t
            total = torch.where(live, per_member, torch.zeros_like(per_member)).sum()
            grads = torch.autograd.grad(total, list(self.params.values()))
        finite = torch.isfinite(per_member)
        factor = self.schedule.explode_factor
        if factor > 0:
            values = per_member.detach().double().tolist()
            for k, v in enumerate(values):
                if self._loss0[k] is None and math.isfinite(v):
                    self._loss0[k] = abs(v)
                l0 = self._loss0[k]
                if l0 is not None and l0 > 0 and math.isfinite(v) and v > factor * l0:
                    finite[k] = False
                    self.exploded[k] = (v, l0)
        ok = finite & alive_t
        newly_bad = [k for k in range(self.k) if alive[k] and not bool(finite[k])]
        with torch.no_grad():
            gdict = dict(zip(self.params.keys(), grads))
            updates = self.chain.update(gdict, self.states, self.params, step)
            if bool(ok.all()):
                for n, p in self.params.items():
                    p.add_(updates[n])
            else:
                for n, p in self.params.items():
                    mask = ok.view(-1, *([1] * (p.dim() - 1)))
                    p.add_(torch.where(mask, updates[n], torch.zeros_like(updates[n])))
                # a non-finite update must not leak into the transform state of live members
                for p in self.params.values():
                    bad_p = ~torch.isfinite(p.flatten(1)).all(1)
                    for k in range(self.k):
                        if alive[k] and bool(bad_p[k]) and k not in newly_bad:
                            newly_bad.append(k)
        return newly_bad

    def _member_by_member(self, x: torch.Tensor, y: torch.Tensor,
                          alive: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each member's forward, loss and backward in turn, on leaf views of its own parameters: its
        activations stay in cache, and its backward writes only its own gradient (differentiating
        through selects of the stacked parameters would zero-fill all K members' gradients once per
        member). Same values as the stacked path: a member that is stopped or non-finite gets a zero
        gradient."""
        names = list(self.params)

        def one_member(i: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
            own = {n: self.params[n][i].detach().requires_grad_(True) for n in names}
            if self.compiled_loss is not None:
                loss = self.compiled_loss(own, x, y)
            else:
                loss = self.loss_fn(self.forward.member(own, x).unsqueeze(0), y).mean(-1)[0]
            if bool(alive[i]) and bool(torch.isfinite(loss)):
                return loss.detach(), torch.autograd.grad(loss, list(own.values()))
            return loss.detach(), tuple(torch.zeros_like(v) for v in own.values())

        results = [one_member(i) for i in range(self.k)]
        grads = [torch.stack(g) for g in zip(*(r[1] for r in results))]
        return torch.stack([r[0] for r in results]), grads

    def _chunked_loss_and_grads(self, x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor,
                                chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The same full-batch gradient, accumulated over row chunks so each chunk's activations stay in
        cache (an ensemble's full-batch activations do not). A member that turns non-finite here gets a
        non-finite gradient, but its update is masked out and it is stopped, as in the unchunked path."""
        n = x.shape[0]
        params = list(self.params.values())
        per_member = torch.zeros(self.k, dtype=torch.float64, device=x.device)
        grads: list[torch.Tensor] | None = None
        for i in range(0, n, chunk):
            losses = self.loss_fn(self.forward(self.params, x[i:i + chunk]), y[i:i + chunk]).sum(-1) / n
            total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
            g = torch.autograd.grad(total, params)
            grads = list(g) if grads is None else [a.add_(b) for a, b in zip(grads, g)]
            per_member += losses.detach().double()
        assert grads is not None
        return per_member, grads

    def _evaluate(self, step: int) -> list[dict[str, Any]]:
        with torch.no_grad():
            params = {k: v.detach() for k, v in self.params.items()}
            evaluation = Evaluation(step, params, self.forward, self.evaluator(params, self.forward, step))
            for cb in self.callbacks:
                cb.on_measure(evaluation)
        return evaluation.records

    def _log(self, records: list[dict[str, Any]], alive: list[bool]) -> None:
        if self.runs is None:
            return
        for k, run in enumerate(self.runs):
            if alive[k]:
                run.log(records[k])


def compiled_member_loss(forward: StackedForward, loss_fn: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """One member's mean training loss from its own parameters, through ``torch.compile`` (Inductor fuses
    the elementwise work around the matmuls: norms, activations, casts, the log-softmax). The first call
    compiles (tens of seconds on CPU); shapes stay fixed over a run, so it compiles once."""

    def member_loss(own: Tensors, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(forward.member(own, x).unsqueeze(0), y).mean(-1)[0]

    # Dynamo caches compiled graphs on the code object: with one code object, every new engine in a process
    # (a zoo build's sizes, a sweep's runs) would add a recompilation until the limit (8), after which it
    # silently runs eagerly. Each engine gets its own copy of the code object instead, so its cache starts
    # empty and dies with it, and nothing else compiled in the process is reset.
    code = member_loss.__code__.replace(co_name=f"member_loss_{next(_ENGINES)}")
    fresh = types.FunctionType(code, member_loss.__globals__, code.co_name, member_loss.__defaults__,
                               member_loss.__closure__)
    return torch.compile(fresh, dynamic=False)


_ENGINES = itertools.count()


def _progress_info(records: list[dict[str, Any]], alive: list[bool]) -> dict[str, float]:
    live = [r for r, a in zip(records, alive) if a] or records
    out: dict[str, float] = {}
    for key, short in (("train_loss", "loss"), ("val_loss", "val_loss"), ("val_acc", "val_acc")):
        vals = [r[key] for r in live if key in r and r[key] is not None]
        if vals:
            out[short] = float(sum(vals) / len(vals))
    return out


def evaluate_classification(
    data: TrainData,
    loss_fn: torch.nn.Module,
    lr_of_step: Callable[[int], torch.Tensor],
    weight_decay: torch.Tensor,
) -> Evaluator:
    """The standard evaluator: loss/accuracy on both splits, weight norms, collapse fractions (measurements
    of a study's own are ``Callback.on_measure`` callbacks)."""
    from transferlab.train.losses import softmax_collapse_fraction

    def evaluate(params: Tensors, forward: StackedForward, step: int) -> list[dict[str, Any]]:
        k = next(iter(params.values())).shape[0]
        out: list[dict[str, Any]] = [{"step": step} for _ in range(k)]

        def split_stats(logits: torch.Tensor, y: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
            losses = loss_fn(logits, y)
            stats = {"loss": losses.mean(-1), "acc": (logits.argmax(-1) == y).float().mean(-1)}
            if train:  # collapse and zero loss are logged for the training split only
                stats["zero_loss_frac"] = (losses == 0).float().mean(-1)
                stats["collapse_frac"] = softmax_collapse_fraction(logits)
            return stats

        for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val)):
            if forward.one_by_one(params, x):  # member by member: each one's logits stay in cache
                parts = [split_stats(forward.member({n: v[i] for n, v in params.items()}, x)[None], y, split == "train")
                         for i in range(k)]
                stats = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
            else:
                stats = split_stats(forward(params, x), y, split == "train")
            for key, values in stats.items():
                name = f"{split}_{key}" if key in ("loss", "acc") else key
                for i in range(k):
                    out[i][name] = float(values[i])
        total = torch.zeros(k)
        for name, p in params.items():
            sq = p.flatten(1).pow(2).sum(1)
            total += sq
            for i in range(k):
                out[i][f"norm_sq.{name}"] = float(sq[i])
        lr = lr_of_step(step)
        for i in range(k):
            out[i]["weight_norm_sq"] = float(total[i])
            out[i]["lr"] = float(lr[i])
            out[i]["contraction"] = float(lr[i] * weight_decay[i])
        return out

    return evaluate
