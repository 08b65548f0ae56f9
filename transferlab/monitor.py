"""``transferlab.monitor``: training monitors as functions and as Hugging Face ``TrainerCallback``s.

    from transferlab import monitor
    monitor.fisher_trace(model, F.cross_entropy, x, y)
    trainer.add_callback(monitor.PlasticityCallback(probe={"input_ids": ids, "labels": ids}))
    trainer.add_callback(monitor.LossPowerLawCallback())

The callbacks compute on a fixed *probe* batch at Trainer log steps and add their figures to the
log: the ``logs`` dict every ``report_to`` tracker (TensorBoard, W&B, MLflow, ...) receives, and
``state.log_history``. The Trainer puts its trackers before the user's callbacks and calls them in
that order, so at ``on_init_end`` and ``on_train_begin`` each monitor callback moves itself (in
``trainer.callback_handler.callbacks``) to just after the Trainer's ``DefaultFlowCallback``: the
monitors write into ``logs`` before any tracker reads it. transformers does not tell a callback which
handler calls it, so a monitor callback looks the handler up among the live ``CallbackHandler`` objects
(the garbage collector's list, once per handler; no stack frames) as the one whose list holds it.
Callbacks added the ordinary way (``Trainer(callbacks=[...])`` or ``trainer.add_callback``) need nothing
more; :func:`move_before_trackers` does the same by hand.

``PlasticityCallback`` logs every row of the monitor table (:data:`MONITORS`, in
:mod:`transferlab.train.monitors`) that its probe can measure, as the engine does: a monitor added to the
table (one function, one row, or :func:`register_monitor` at run time) is logged here with nothing else to
change.

Cost: ``PlasticityCallback`` takes per-sample gradients of its probe, which on a small model can cost
more than the training steps between two logs. By default it uses the first ``probe_size=8`` rows of
the probe and runs on a *time budget* (:class:`TimeBudget`): at a log step it computes only if its
total time, this computation included (estimated from the last ones), stays within ``budget=0.10`` of
the training time so far (the wall time outside the monitor); the first log step always computes.
So, once training has run ten times as long as one computation, the monitor adds at most 10% to the
training time (measured in ``bench/monitor_cost.py``, figures in docs/RESULTS.md). ``every=N``
instead computes at every N-th logging step whatever it costs. ``monitor/cost_fraction`` logs the
monitor's time over the training time so far. transformers is imported only when a callback class is first
used.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from transferlab.train.monitors import (
    MONITORS,
    GradientStats,
    LossPowerLawMonitor,
    Monitor,
    MonitorError,
    PowerLawFit,
    Probe,
    activation_modules,
    batch_gradient_sq_norm,
    dormant_units,
    edit_distance,
    effective_rank,
    feature_effective_rank,
    fisher_trace,
    fit_power_law,
    gradient_coherence,
    gradient_noise_scale,
    gradient_norm,
    measure,
    moe_pathway_metrics,
    noise_scale_from_norms,
    pathway_consistency,
    pathway_distance,
    per_sample_gradient_stats,
    register_monitor,
    routing_paths,
    unregister_monitor,
    weight_norm,
)

__all__ = [
    "MONITORS", "Monitor", "Probe", "measure", "register_monitor", "unregister_monitor",
    "GradientStats", "LossPowerLawMonitor", "MonitorError", "PowerLawFit", "activation_modules",
    "batch_gradient_sq_norm", "dormant_units", "edit_distance", "effective_rank", "feature_effective_rank",
    "fisher_trace", "fit_power_law", "gradient_coherence", "gradient_noise_scale", "gradient_norm",
    "moe_pathway_metrics", "noise_scale_from_norms", "pathway_consistency", "pathway_distance",
    "per_sample_gradient_stats", "routing_paths", "weight_norm",
    "PlasticityCallback", "LossPowerLawCallback", "MoEPathwayCallback",  # noqa: F822 (lazy, __getattr__)
    "TimeBudget", "move_before_trackers",
]

_CALLBACKS = {"PlasticityCallback", "LossPowerLawCallback", "MoEPathwayCallback"}
_built: dict[str, type] = {}


def _hf_loss(out: Any, _target: Any) -> torch.Tensor:
    """Loss of a Hugging Face model whose probe batch carries ``labels``."""
    loss = getattr(out, "loss", None)
    if loss is None:
        raise MonitorError("the model output has no .loss",
                           fix="put 'labels' in the probe batch or pass loss_fn")
    return loss


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Mapping):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device) if batch is not None else None


def _merge(state: Any, logs: dict[str, float] | None, values: dict[str, float]) -> None:
    """Into the logs dict later callbacks see, and into the entry Trainer.log already appended."""
    if logs is not None:
        logs.update(values)
    hist = getattr(state, "log_history", None)
    if hist and hist[-1].get("step") == state.global_step:
        hist[-1].update(values)


def _rows(batch: Any, n: int | None) -> Any:
    """The first ``n`` rows of a tensor or of every tensor of a dict (all of it when n is None)."""
    if n is None or batch is None:
        return batch
    if isinstance(batch, Mapping):
        return {k: v[:n] for k, v in batch.items()}
    return batch[:n]


class TimeBudget:
    """Decides at each log step whether a monitor may run within a share of the training time.

    Training time is the wall time since ``start`` spent outside the monitor. ``due(now)`` is True
    for the first computation, then only while ``spent + est <= fraction * (now - start - spent)``:
    the monitor's total time, the next computation included, stays within ``fraction`` of the
    training time, so training with the monitor takes at most ``1 + fraction`` times as long as
    without it. ``est`` is the longest of the last three computations (a cautious guess, as their
    cost varies). ``record(seconds)`` adds one computation. Pure bookkeeping, tested with a fake clock.
    """

    def __init__(self, fraction: float = 0.10):
        if not 0 < fraction <= 1:
            raise MonitorError(f"budget must be in (0, 1], got {fraction}", fix="pass e.g. budget=0.1")
        self.fraction = float(fraction)
        self.start: float | None = None
        self.spent = 0.0
        self.last: float | None = None
        self.recent: list[float] = []

    def begin(self, now: float) -> None:
        if self.start is None:
            self.start = now

    def due(self, now: float) -> bool:
        self.begin(now)
        if self.last is None:
            return True
        est = max(self.recent)
        return self.spent + est <= self.fraction * (now - self.start - self.spent)

    def record(self, seconds: float) -> None:
        self.spent += seconds
        self.last = seconds
        self.recent = [*self.recent[-2:], seconds]

    def used(self, now: float) -> float:
        """The monitor's time over the training time (the wall time outside it) since ``start``."""
        self.begin(now)
        train = now - self.start - self.spent
        return self.spent / train if train > 0 else float("inf")


def move_before_trackers(handler: Any) -> bool:
    """Put the monitor callbacks of a ``CallbackHandler`` (or a ``Trainer``) just after its
    ``DefaultFlowCallback``, before every tracker; True if the order changed.

    The list is replaced, not edited in place, so an event loop running over the old list (the
    one that called ``on_train_begin``) is not disturbed.
    """
    handler = getattr(handler, "callback_handler", handler)
    cbs = list(getattr(handler, "callbacks", None) or [])
    kinds = tuple(_built.values())
    ours = [c for c in cbs if kinds and isinstance(c, kinds)]
    rest = [c for c in cbs if not (kinds and isinstance(c, kinds))]
    flow = [i for i, c in enumerate(rest) if type(c).__name__ == "DefaultFlowCallback"]
    at = flow[-1] + 1 if flow else 0
    new = rest[:at] + ours + rest[at:]
    if [id(c) for c in new] == [id(c) for c in cbs]:
        return False
    handler.callbacks = new
    return True


_HANDLERS: weakref.WeakSet = weakref.WeakSet()  # CallbackHandlers found holding a monitor callback


def _handlers_holding(callback: Any) -> list[Any]:
    """The transformers ``CallbackHandler`` objects whose callback list holds ``callback``: those already
    found, else every live one (the garbage collector's list of objects, searched once per handler)."""
    known = [h for h in list(_HANDLERS) if any(c is callback for c in h.callbacks)]
    if known:
        return known
    import gc

    from transformers.trainer_callback import CallbackHandler

    # type(), not isinstance(): isinstance reads __class__, which some lazy objects answer with a warning
    found = [o for o in gc.get_objects() if issubclass(type(o), CallbackHandler)
             and any(c is callback for c in getattr(o, "callbacks", ()))]
    for h in found:
        _HANDLERS.add(h)
    return found


def _build(name: str) -> type:
    from transformers import TrainerCallback

    class _Monitor(TrainerCallback):
        """Moves itself before the trackers when the Trainer starts (see the module docstring)."""

        def on_init_end(self, args, state, control, **kwargs):
            self._place()

        def on_train_begin(self, args, state, control, **kwargs):
            self._place()

        def _place(self) -> None:
            handlers = _handlers_holding(self)
            for handler in handlers:
                move_before_trackers(handler)
            if not handlers and not getattr(self, "_warned", False):
                import warnings

                self._warned = True
                warnings.warn(
                    f"{type(self).__name__} could not find the Trainer's callback handler, so report_to trackers "
                    "that run before it will miss its values; call transferlab.monitor.move_before_trackers(trainer)",
                    stacklevel=3,
                )

    class PlasticityCallback(_Monitor):
        """Fisher trace, gradient coherence, gradient noise scale, weight norm, dormant units and the
        effective rank of features, on a fixed probe batch, at log steps (in eval mode, so dropout
        does not make per-sample gradients random; training mode is restored after).

        probe: tensor or dict of tensors (e.g. input_ids + labels); targets + loss_fn for plain
        modules (default: the output's ``.loss``). ``probe_size``: rows of the probe used (default
        8; None = all). ``budget``: the monitor's time at most this share of the training time
        (default 0.10; see :class:`TimeBudget`); ``every=N`` replaces it by a fixed schedule (every N-th log step).
        ``feature_module``: name of the module whose output's effective rank is logged (default:
        none). ``small_batch``: the small batch of the gradient noise scale (0 turns it off).
        ``prefix`` starts every logged key."""

        def __init__(self, probe: Any, targets: Any = None, loss_fn: Callable | None = None, *,
                     probe_size: int | None = 8, budget: float = 0.10, every: int | None = None,
                     chunk_size: int = 32, small_batch: int = 1, tau: float = 0.025,
                     feature_module: str | None = None, dormant: bool = True, prefix: str = "monitor/"):
            if probe_size is not None and probe_size < 1:
                raise MonitorError(f"probe_size must be >= 1 or None, got {probe_size}",
                                   fix="pass e.g. probe_size=8")
            if every is not None and every < 1:
                raise MonitorError(f"every must be >= 1 or None, got {every}", fix="pass e.g. every=10")
            self.probe, self.targets = _rows(probe, probe_size), _rows(targets, probe_size)
            self.loss_fn = loss_fn or _hf_loss
            self.chunk_size, self.small_batch, self.tau = chunk_size, small_batch, tau
            self.feature_module, self.dormant = feature_module, dormant
            self.every, self.prefix = every, prefix
            self.budget = TimeBudget(budget)
            self.clock: Callable[[], float] = time.perf_counter
            self._n_logs = 0
            self.last: dict[str, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self._place()
            self.budget.begin(self.clock())

        def compute(self, model: torch.nn.Module) -> dict[str, float]:
            """Every row of the monitor table this probe can measure, on ``model`` in eval mode."""
            dev = next(model.parameters()).device
            x, y = _to_device(self.probe, dev), _to_device(self.targets, dev)
            was_training = model.training
            model.eval()
            t0 = time.perf_counter()
            try:
                out = measure(Probe(model, self.loss_fn, x, y, chunk_size=self.chunk_size,
                                    small_batch=self.small_batch, tau=self.tau, dormant=self.dormant,
                                    feature_module=self.feature_module or None,
                                    skip=frozenset() if self.small_batch else frozenset({"noise_scale"})))
            finally:
                model.train(was_training)
            out["seconds"] = time.perf_counter() - t0
            return {f"{self.prefix}{k}": float(v) for k, v in out.items()}

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if model is None or logs is None or "loss" not in logs:
                return
            self._n_logs += 1
            if self.every is not None:
                if (self._n_logs - 1) % self.every:
                    return
            elif not self.budget.due(self.clock()):
                return
            t0 = self.clock()
            values = self.compute(model)
            self.budget.record(self.clock() - t0)
            values[f"{self.prefix}cost_fraction"] = self.budget.used(self.clock())
            self.last = values
            _merge(state, logs, values)

    class LossPowerLawCallback(_Monitor):
        """Feeds each logged training loss to a :class:`LossPowerLawMonitor` and logs the predicted
        loss, its interval and ``loss_deviation`` (+1 above, -1 below, 0 inside)."""

        def __init__(self, *, min_points: int = 10, z: float = 3.0, refit_every: int = 1,
                     window: int | None = None, prefix: str = "monitor/"):
            self.monitor = LossPowerLawMonitor(min_points=min_points, z=z, refit_every=refit_every,
                                               window=window)
            self.prefix = prefix

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs:
                return
            out = self.monitor.update(state.global_step, float(logs["loss"]))
            if out:
                _merge(state, logs, {f"{self.prefix}{k}": v for k, v in out.items()})

    class MoEPathwayCallback(_Monitor):
        """Pathway distance and consistency (arXiv 2506.21551) of the probe batch at every log step,
        from ``model(**probe, output_router_logits=True).router_logits`` (Mixtral/OLMoE/Qwen-MoE
        style: one (batch*seq, n_experts) tensor per layer), or from ``router_fn(model, probe)``
        returning that list for any other MoE. ``embed_fn(model)`` may return one (n_experts, d)
        matrix per layer (default: none, experts one-hot)."""

        def __init__(self, probe: Mapping[str, torch.Tensor], *, top_k: int = 1,
                     router_fn: Callable | None = None, embed_fn: Callable | None = None,
                     per_token: bool = False, prefix: str = "monitor/"):
            self.probe, self.top_k, self.router_fn, self.embed_fn = probe, top_k, router_fn, embed_fn
            self.per_token, self.prefix = per_token, prefix
            self.last: dict[str, float] = {}

        @torch.no_grad()
        def compute(self, model: torch.nn.Module) -> dict[str, float]:
            dev = next(model.parameters()).device
            probe = _to_device(self.probe, dev)
            if self.router_fn is not None:
                router = self.router_fn(model, probe)
            else:
                router = model(**probe, output_router_logits=True).router_logits
            n = int(next(iter(probe.values())).shape[0])
            emb = self.embed_fn(model) if self.embed_fn is not None else None
            out = moe_pathway_metrics(list(router), self.top_k, batch_size=n,
                                      attention_mask=probe.get("attention_mask"), expert_embeddings=emb,
                                      per_token=self.per_token)
            return {f"{self.prefix}{k}": v for k, v in out.items()}

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if model is None or logs is None or "loss" not in logs:
                return
            self.last = self.compute(model)
            _merge(state, logs, self.last)

    for cls in (PlasticityCallback, LossPowerLawCallback, MoEPathwayCallback):
        cls.__module__ = __name__
        _built[cls.__name__] = cls
    return _built[name]


def __getattr__(name: str) -> Any:
    if name in _CALLBACKS:
        return _built.get(name) or _build(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
