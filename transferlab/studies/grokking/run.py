"""Build data and models, drive the engine, write to the store."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from transferlab.core.devices import threads_for, torch_threads
from transferlab.core.errors import ConfigError, TrainingDiverged, TransferlabError
from transferlab.core.memory import max_runs
from transferlab.data.algorithmic import AlgorithmicData, make_dataset
from transferlab.models.mlp import OneHotMLP
from transferlab.models.transformer import AlgorithmicTransformer, EquationTransformer
from transferlab.store import Store
from transferlab.studies.grokking import analysis
from transferlab.studies.grokking.analysis import PHASE_KEYS
from transferlab.studies.grokking.config import GrokConfig
from transferlab.studies.grokking.study import GrokStudy
from transferlab.train import transforms as T
from transferlab.train.engine import Callback, Control, Engine, Evaluation, Schedule, TrainData, evaluate_classification
from transferlab.train.ensemble import StackedForward, build_members
from transferlab.train.losses import make_loss
from transferlab.train.plasticity import PlasticityMonitors, logs_at

FINISHED = ("done", "diverged")


def model_factory(cfg: GrokConfig, n_tokens: int, n_classes: int) -> Callable[[], nn.Module]:
    m = cfg.model
    if m.kind == "mlp":
        return lambda: OneHotMLP(n_tokens, n_classes, width=m.width, depth=m.depth,
                                 activation=m.activation, bias=m.bias, init=m.init)
    if m.kind in ("power_transformer", "grokfast_transformer"):
        style = m.kind.removesuffix("_transformer")
        return lambda: EquationTransformer(n_tokens, n_classes, d_model=m.d_model, n_heads=m.n_heads,
                                           d_mlp=m.d_mlp, n_layers=m.n_layers, style=style)
    return lambda: AlgorithmicTransformer(n_tokens, n_classes, d_model=m.d_model, n_heads=m.n_heads,
                                          d_mlp=m.d_mlp, n_layers=m.n_layers, layer_norm=m.layer_norm,
                                          eq_output=m.eq_output)


def make_chain(cfg: GrokConfig, lr: torch.Tensor, wd: torch.Tensor) -> tuple[T.Chain, T.ScaleByLR]:
    """Gradient filters -> (coupled L2) -> Adam -> (decoupled weight decay) -> learning rate."""
    parts: list[Any] = []
    if cfg.optimizer.grokfast == "ema":
        parts.append(T.GrokfastEMA(cfg.optimizer.grokfast_alpha, cfg.optimizer.grokfast_lamb))
    elif cfg.optimizer.grokfast == "ma":
        parts.append(T.GrokfastMA(cfg.optimizer.grokfast_window, cfg.optimizer.grokfast_lamb))
    if cfg.optimizer.weight_decay_style == "coupled":
        parts.append(T.AddL2(wd))
    if cfg.optimizer.orthograd:
        parts.append(T.OrthoGrad())
    parts.append(T.ScaleByAdam(cfg.optimizer.beta1, cfg.optimizer.beta2, cfg.optimizer.eps))
    if cfg.optimizer.weight_decay_style == "decoupled":
        parts.append(T.AddDecayedWeights(wd))
    sch = cfg.schedule
    scale = T.ScaleByLR(lr, T.make_schedule(sch.lr_schedule, sch.warmup_steps, sch.steps, sch.warmup_from_zero))
    parts.append(scale)
    if cfg.optimizer.norm_clamp != "none":  # last: the step lands on the sphere ‖θ‖² = rho
        rho = float("nan") if cfg.optimizer.norm_clamp == "memorization" else float(cfg.optimizer.norm_clamp)
        parts.append(T.ProjectNorm(torch.full((len(lr),), rho)))
    return T.chain(*parts), scale


class ClampAtMemorization(Callback):
    """norm_clamp=memorization: when a member first reaches 99% training accuracy, its ‖θ‖² at that evaluation
    becomes the norm ProjectNorm holds from the next step on (arXiv:2605.18845's frozen norm). The value lives in
    the chain's state, so it is checkpointed and restored with it."""

    def __init__(self, rho: torch.Tensor, threshold: float = 0.99):
        self.rho, self.threshold = rho, threshold

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        for k, rec in enumerate(records):
            if not bool(torch.isfinite(self.rho[k])) and rec.get("train_acc", 0.0) >= self.threshold:
                self.rho[k] = float(rec["weight_norm_sq"])


class StopAfterGeneralized(Callback):
    """Stop ``margin`` steps after every live member first reached 99% validation accuracy (or, with
    ``criterion="val_loss_001"``, a validation loss below 0.01, Nanda et al.'s criterion)."""

    def __init__(self, margin: int, criterion: str = "val_acc_99"):
        self.margin = margin
        self.criterion = criterion
        self.first_all: int | None = None

    def _done(self, r: dict[str, Any]) -> bool:
        return r["val_loss"] < 0.01 if self.criterion == "val_loss_001" else r["val_acc"] >= 0.99

    def on_resume(self, records: list[list[dict[str, Any]]]) -> None:
        for step_records in zip(*records):
            self.on_eval(int(step_records[0]["step"]), list(step_records), [True] * len(step_records), Control())

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        if self.margin < 0:
            return
        live = [r for r, a in zip(records, alive) if a]
        if self.first_all is None and live and all(self._done(r) for r in live):
            self.first_all = step
        if self.first_all is not None and step >= self.first_all + self.margin:
            control.should_stop = True


class ForecastStop(Callback):
    """``forecast_early_stop``: at every 5th evaluation, the forecast (analysis.forecast_generalization) of each
    live member from its rows so far; training stops when no live member that has not generalized is forecast
    to generalize within the budget (each forecast 'never', or a step past ``budget``) and one such member
    exists. ``stopped`` keeps the step and each member's forecast."""

    def __init__(self, cfgs: list[GrokConfig], budget: int, every: int = 5):
        self.cfgs, self.budget, self.every = cfgs, budget, every
        self.history: list[list[dict[str, Any]]] = [[] for _ in cfgs]
        self.stopped: dict[str, Any] | None = None
        self.n = 0

    def on_resume(self, records: list[list[dict[str, Any]]]) -> None:
        for k, recs in enumerate(records):
            self.history[k] = list(recs)

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        for k, r in enumerate(records):
            self.history[k].append(r)
        self.n += 1
        if self.n % self.every or step >= self.budget:
            return
        verdicts = []
        for k, (cfg, hist) in enumerate(zip(self.cfgs, self.history)):
            if not alive[k]:
                continue
            fc = analysis.forecast_generalization(hist, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.model.kind)
            if fc["basis"] == "already generalized":
                continue
            verdicts.append((analysis.forecast_says_late(fc, self.budget), fc))
        if verdicts and all(late for late, _ in verdicts):
            self.stopped = {"at_step": step, "forecasts": [fc for _, fc in verdicts]}
            control.should_stop = True


class ProgressMeasures(Callback):
    """Nanda et al.'s progress measures (restricted and excluded loss, key frequencies) of every member,
    every ``every`` evaluations and at the last step (x+y only)."""

    def __init__(self, cfg: GrokConfig, data: AlgorithmicData, every: int):
        self.cfg, self.data, self.every = cfg, data, every

    def on_measure(self, evaluation: Evaluation) -> None:
        cfg, data, params = self.cfg, self.data, evaluation.params
        sch = cfg.schedule
        if not logs_at(evaluation.step, eval_every=sch.eval_every, every=self.every, last_step=sch.steps):
            return
        logits = evaluation.forward(params, data.inputs)[..., : cfg.task.p]  # without the '=' output of eq_output
        for i, rec in enumerate(evaluation.records):
            emb = params["embed"][i]
            emb = emb[0] if cfg.model.kind == "mlp" else emb[: cfg.task.p]
            freqs = analysis.key_frequencies(emb)
            m = analysis.progress_measures(logits[i], data.labels, data.train_idx, data.val_idx, cfg.task.p, freqs)
            rec.update({**m, "key_freqs": freqs})


class _Features(nn.Module):
    """A model seen through its ``features`` (the representation its readout reads), for ``functional_call``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.features(x)


class ILDRMeasure(Callback):
    """The ILDR of every member's readout representation on the validation pairs (arXiv 2604.20923; the
    forecast's progress measure), at every evaluation, as ``ildr`` in the records."""

    def __init__(self, data: AlgorithmicData):
        self.data = data

    def on_measure(self, evaluation: Evaluation) -> None:
        from torch.func import functional_call

        view = _Features(evaluation.forward.base)
        for i, rec in enumerate(evaluation.records):
            feats = functional_call(view, {f"m.{n}": v[i] for n, v in evaluation.params.items()},
                                    (self.data.x_val,))
            rec["ildr"] = analysis.ildr(feats, self.data.y_val)


def measurements(cfg: GrokConfig, data: AlgorithmicData, loss_fn: nn.Module) -> list[Callback]:
    """The engine callbacks that add the study's own measurements to each evaluation: the progress measures
    (x+y with ``progress_measures``) and the monitor table (``monitor_every`` > 0)."""
    out: list[Callback] = []
    if cfg.monitors.forecast_ildr:
        out.append(ILDRMeasure(data))
    if cfg.monitors.progress_measures and cfg.task.operation == "x+y":
        out.append(ProgressMeasures(cfg, data, every=5))
    if cfg.monitors.every > 0:
        out.append(PlasticityMonitors(model_factory(cfg, data.n_tokens, data.n_classes), loss_fn, data.x_train,
                                      data.y_train, eval_every=cfg.schedule.eval_every, every=cfg.monitors.every,
                                      last_step=cfg.schedule.steps, probe_size=cfg.monitors.probe))
    return out


class ReportEvals(Callback):
    """Hands each evaluation of the first member to ``reporter`` (a sweep's Ray Tune session): step,
    val_acc, train_acc, val_loss, weight_norm_sq. The reporter returns True when its scheduler stops the
    trial; training then ends at this evaluation and the run is recorded as ``stopped``."""

    def __init__(self, reporter: Callable[[dict[str, Any]], bool | None]):
        self.reporter = reporter
        self.stopped_at: int | None = None

    def on_eval(self, step: int, records: list[dict[str, Any]], alive: list[bool], control: Control) -> None:
        r = records[0]
        stop = bool(self.reporter({"step": step, **{k: r.get(k) for k in ("val_acc", "train_acc", "val_loss",
                                                                           "weight_norm_sq")}}))
        if stop:
            self.stopped_at = step
            control.should_stop = True


@dataclass
class MemberResult:
    run_id: str
    config: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)


def run_members(configs: list[GrokConfig], store: Store, sweep: str | None = None,
                description: str = "grok", reporter: Callable[[dict[str, Any]], None] | None = None
                ) -> list[MemberResult]:
    """Train configs that differ only in seed, lr and weight decay as one ensemble; reuse finished runs."""
    if not configs:
        return []
    keys = {c.ensemble_key() for c in configs}
    if len(keys) != 1:
        raise ConfigError("members of one ensemble may differ only in seed, lr and weight_decay",
                          fix="group configs with GrokConfig.ensemble_key() first")
    cfg0 = configs[0]
    cfg0.check_memory(len(configs))
    runs = [store.open_run(GrokStudy.name, c, sweep=sweep) for c in configs]
    todo = [i for i, r in enumerate(runs) if r.status not in FINISHED]
    try:  # own every run to train before anything is written (refused if another process has one)
        for i in todo:
            runs[i].acquire()
    except TransferlabError:
        for i in todo:
            runs[i].release()
        raise
    todo = [i for i in todo if runs[i].status not in FINISHED]  # another process may have just finished it
    for i, r in enumerate(runs):
        if i not in todo:
            r.release()
    if todo:
        t = cfg0.task
        data = make_dataset(t.operation, t.p, t.train_fraction, t.split_seed, t.split_style)
        try:
            _train(cfg0, [configs[i] for i in todo], [runs[i] for i in todo], data, description, reporter)
        except Exception as err:
            reason = err.one_line() if isinstance(err, TransferlabError) else f"{type(err).__name__}: {err}"
            for i in todo:
                runs[i].mark_unfinished(reason)
            raise
    return [MemberResult(r.id, c.flat(), r.summary() or {}, r.metrics()) for c, r in zip(configs, runs)]


def _train(cfg0: GrokConfig, cfgs: list[GrokConfig], runs: list, data: AlgorithmicData, description: str,
           reporter: Callable[[dict[str, Any]], None] | None = None) -> None:
    t0 = time.perf_counter()
    base, params = build_members(model_factory(cfg0, data.n_tokens, data.n_classes), [c.seed for c in cfgs])
    lr = torch.tensor([c.optimizer.lr for c in cfgs])
    wd = torch.tensor([c.optimizer.weight_decay for c in cfgs])
    chain, scale = make_chain(cfg0, lr, wd)
    loss_fn = make_loss(cfg0.loss.kind, cfg0.loss.dtype)
    tdata = TrainData(data.x_train, data.y_train, data.x_val, data.y_val)
    evaluator = evaluate_classification(tdata, loss_fn, scale.current_lr, wd)
    sch = cfg0.schedule
    schedule = Schedule(steps=sch.steps, batch_size=sch.batch_size, eval_every=sch.eval_every,
                        log_spaced_evals=sch.log_spaced_evals, checkpoint_every=sch.checkpoint_every,
                        order_seed=sch.order_seed, chunk_size=cfg0.chunk_size, explode_factor=sch.explode_factor)
    stopper = StopAfterGeneralized(sch.stop_after_generalized, sch.generalized_when)
    for r in runs:
        r.start()
    tuner = ReportEvals(reporter) if reporter else None
    forecaster = ForecastStop(cfgs, cfg0.schedule.steps) if cfg0.schedule.forecast_early_stop else None
    engine = Engine(StackedForward(base, cfg0.ensemble_mode), params, loss_fn, chain, tdata, schedule, evaluator,
                    runs=runs, callbacks=[*measurements(cfg0, data, loss_fn), stopper, *([tuner] if tuner else []),
                                          *([forecaster] if forecaster else [])],
                    description=description)
    # the clamp's rho: the engine's own state tensor (checkpointed, restored in place on resume)
    clamp_rho = next((st["rho"] for t, st in zip(chain.transforms, engine.states) if isinstance(t, T.ProjectNorm)),
                     None)
    if cfg0.optimizer.norm_clamp == "memorization":
        engine.callbacks.insert(0, ClampAtMemorization(clamp_rho))
    rows = cfg0.schedule.batch_size or data.x_train.shape[0]
    tokens = rows * {"mlp": 1, "transformer": 3}.get(cfg0.model.kind, 4)
    flops = 6.0 * sum(v.numel() for v in params.values()) * tokens  # all members' forward + backward
    threads = threads_for(flops, cfg0.num_threads)
    with torch_threads(threads):
        result = engine.run()
    wall = time.perf_counter() - t0
    for k, (cfg, run) in enumerate(zip(cfgs, runs)):
        records = run.metrics()
        phases = analysis.detect_phases(records) if records else None
        last = records[-1] if records else {}
        summary: dict[str, Any] = {
            **(phases.as_dict() if phases else {}),
            "final_val_loss": last.get("val_loss"), "final_train_loss": last.get("train_loss"),
            "final_weight_norm_sq": last.get("weight_norm_sq"), "last_step": last.get("step"),
            "wall_seconds": wall, "train_seconds": result.train_seconds, "steps_run": result.steps_run,
            "ensemble_size": len(cfgs), "lr": cfg.optimizer.lr, "weight_decay": cfg.optimizer.weight_decay,
            "seed": cfg.seed, "threads": threads,
        }
        if clamp_rho is not None:
            rho = float(clamp_rho[k])
            mode = "memorization" if cfg.optimizer.norm_clamp == "memorization" else "fixed"
            summary["norm_clamp"] = {"mode": mode, "rho": rho if math.isfinite(rho) else None}
        if forecaster is not None and forecaster.stopped is not None:
            summary["forecast_stopped"] = {"at_step": forecaster.stopped["at_step"], "budget": cfg0.schedule.steps}
        opt = cfg.optimizer
        diagnosis = analysis.diagnose(records, opt.lr, opt.weight_decay, opt.weight_decay_style)
        if diagnosis is not None and result.diverged[k] is None:
            summary["diagnosis"] = diagnosis
        if result.diverged[k] is not None:
            summary["error"] = result.diverged[k]
            run.finish(summary, status="diverged")
        elif tuner is not None and tuner.stopped_at is not None:
            run.finish({**summary, "error": f"stopped early by the ASHA scheduler at step {tuner.stopped_at}"},
                       status="stopped")
        else:
            run.finish(summary)


def members_for(cfg: GrokConfig, seeds: int) -> list[GrokConfig]:
    return [cfg.model_copy(update={"seed": cfg.seed + i}) for i in range(seeds)]


def aggregate(members: list[MemberResult]) -> dict[str, Any]:
    return {k: analysis.mean_ci([m.summary.get(k) for m in members]) for k in PHASE_KEYS}


def run(cfg: GrokConfig, store: Store, seeds: int = 1, report: bool = True,
        raise_on_divergence: bool = True, reporter: Callable[[dict[str, Any]], None] | None = None
        ) -> dict[str, Any]:
    """The study: train ``seeds`` members, detect phases, aggregate, write the report."""
    from transferlab.studies.grokking.report import write_group_report

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}", fix="e.g. --seeds 4")
    if seeds > max_runs():
        raise ConfigError(f"--seeds {seeds} would create {seeds} run folders, more than the cap of {max_runs()}",
                          fix="use fewer seeds, or raise the cap with TRANSFERLAB_MAX_RUNS")
    try:
        cfg.check_memory(seeds)
    except ValueError as err:
        raise ConfigError(str(err), where="--seeds") from None
    t0 = time.perf_counter()
    members = run_members(members_for(cfg, seeds), store, description=f"grok {cfg.task.operation} p={cfg.task.p}",
                          reporter=reporter)
    out: dict[str, Any] = {"members": [member_json(m) for m in members], "aggregate": aggregate(members),
                           "wall_seconds": time.perf_counter() - t0}
    if report:
        out["report"] = str(write_group_report(cfg, members, store))
    diverged = [m for m in members if m.summary.get("status") == "diverged"]
    if diverged and raise_on_divergence:
        raise TrainingDiverged(diverged[0].summary["error"],
                               fix=divergence_advice(cfg.updated(lr=diverged[0].config["lr"],
                                                             weight_decay=diverged[0].config["weight_decay"]))
                               + "; the report is at " + out.get("report", "(none)"))
    return out


def divergence_advice(cfg: GrokConfig) -> str:
    """What to change after a divergence. Decoupled weight decay multiplies the weights by (1 - lr x wd)
    each step: past 1 it flips their sign and past 2 it makes them grow, whatever the lr alone is."""
    shrink = cfg.optimizer.lr * cfg.optimizer.weight_decay
    if cfg.optimizer.weight_decay_style == "decoupled" and shrink >= 1:
        return (f"lower weight_decay: lr x weight_decay = {shrink:g} >= 1, so each step's decay overshoots "
                f"zero (keep it well below 1, e.g. weight_decay <= {0.1 / cfg.optimizer.lr:g})")
    if cfg.loss.kind in ("cross_entropy", "stablemax") and cfg.loss.dtype == "float32":
        return "lower lr, or use loss_dtype=float64 / loss=stablemax"
    return "lower lr"


def member_json(m: MemberResult) -> dict[str, Any]:
    s = m.summary
    return {"run_id": m.run_id, "seed": m.config["seed"], "lr": m.config["lr"],
            "weight_decay": m.config["weight_decay"], "status": s.get("status"),
            **{k: s.get(k) for k in PHASE_KEYS},
            "wall_seconds": s.get("wall_seconds"), "threads": s.get("threads"),
            "forecasts": member_forecasts(m),
            **({"forecast_stopped": s["forecast_stopped"]} if s.get("forecast_stopped") else {}),
            **({"norm_clamp": s["norm_clamp"]} if s.get("norm_clamp") else {}),
            **({"diagnosis": {"code": s["diagnosis"]["code"], "message": s["diagnosis"]["message"]}}
               if s.get("diagnosis") else {})}


def member_forecasts(m: MemberResult) -> list[dict[str, Any]]:
    """The forecast of the generalization step made at ten points of the member's run, each from its rows up to
    that point (analysis.forecasts)."""
    c = m.config
    return analysis.forecasts(m.records, c["lr"], c["weight_decay"], c.get("model", "mlp"))
