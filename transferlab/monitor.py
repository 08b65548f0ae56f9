"""``transferlab.monitor``: training monitors as functions and as Hugging Face ``TrainerCallback``s.

    from transferlab import monitor
    monitor.fisher_trace(model, F.cross_entropy, x, y)
    trainer.add_callback(monitor.PlasticityCallback(probe={"input_ids": ids, "labels": ids}))
    trainer.add_callback(monitor.LossPowerLawCallback())

The callbacks compute on a fixed *probe* batch at every Trainer log step and add their figures to
the log (the dict the later callbacks see, and ``state.log_history``). transformers is imported only
when a callback class is first used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from transferlab.train.monitors import (
    GradientStats,
    LossPowerLawMonitor,
    MonitorError,
    PowerLawFit,
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
    moe_pathway_metrics,
    noise_scale_from_norms,
    pathway_consistency,
    pathway_distance,
    per_sample_gradient_stats,
    routing_paths,
    weight_norm,
)

__all__ = [
    "GradientStats", "LossPowerLawMonitor", "MonitorError", "PowerLawFit", "activation_modules",
    "batch_gradient_sq_norm", "dormant_units", "edit_distance", "effective_rank", "feature_effective_rank",
    "fisher_trace", "fit_power_law", "gradient_coherence", "gradient_noise_scale", "gradient_norm",
    "moe_pathway_metrics", "noise_scale_from_norms", "pathway_consistency", "pathway_distance",
    "per_sample_gradient_stats", "routing_paths", "weight_norm",
    "PlasticityCallback", "LossPowerLawCallback", "MoEPathwayCallback",  # noqa: F822 (lazy, __getattr__)
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


def _build(name: str) -> type:
    from transformers import TrainerCallback

    class PlasticityCallback(TrainerCallback):
        """Fisher trace, gradient coherence, gradient noise scale, weight norm, dormant units and the
        effective rank of features, on a fixed probe batch, at every log step (in eval mode, so
        dropout does not make per-sample gradients random; training mode is restored after).

        probe: tensor or dict of tensors (e.g. input_ids + labels); targets + loss_fn for plain
        modules (default: the output's ``.loss``). ``feature_module``: name of the module whose
        output's effective rank is logged (default: none). ``small_batch``: the small batch of the
        gradient noise scale (0 turns it off). ``prefix`` starts every logged key."""

        def __init__(self, probe: Any, targets: Any = None, loss_fn: Callable | None = None, *,
                     chunk_size: int = 32, small_batch: int = 1, tau: float = 0.025,
                     feature_module: str | None = None, dormant: bool = True, every: int = 1,
                     prefix: str = "monitor/"):
            self.probe, self.targets = probe, targets
            self.loss_fn = loss_fn or _hf_loss
            self.chunk_size, self.small_batch, self.tau = chunk_size, small_batch, tau
            self.feature_module, self.dormant = feature_module, dormant
            self.every, self.prefix = every, prefix
            self._n_logs = 0
            self.last: dict[str, float] = {}

        def compute(self, model: torch.nn.Module) -> dict[str, float]:
            dev = next(model.parameters()).device
            x, y = _to_device(self.probe, dev), _to_device(self.targets, dev)
            was_training = model.training
            model.eval()
            t0 = time.perf_counter()
            try:
                stats = per_sample_gradient_stats(model, self.loss_fn, x, y, chunk_size=self.chunk_size)
                out = stats.as_dict()
                out.pop("n")
                if self.small_batch:
                    ns = gradient_noise_scale(model, self.loss_fn, x, y, small_batch=self.small_batch)
                    out["noise_scale"] = ns["noise_scale"]
                    out["grad_norm_probe"] = ns["grad_sq_big"] ** 0.5
                out["weight_norm"] = weight_norm(model)
                if self.dormant and activation_modules(model):
                    out["dormant_fraction"] = dormant_units(model, x, tau=self.tau)["dormant_fraction"]
                if self.feature_module:
                    out["effective_rank"] = feature_effective_rank(model, x, self.feature_module)
            finally:
                model.train(was_training)
            out["seconds"] = time.perf_counter() - t0
            return {f"{self.prefix}{k}": float(v) for k, v in out.items()}

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if model is None or logs is None or "loss" not in logs:
                return
            self._n_logs += 1
            if (self._n_logs - 1) % self.every:
                return
            self.last = self.compute(model)
            _merge(state, logs, self.last)

    class LossPowerLawCallback(TrainerCallback):
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

    class MoEPathwayCallback(TrainerCallback):
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
