"""Plasticity monitors inside the engine: an evaluator ``extra`` that logs them on a schedule.

Every ``every`` evaluations (and at the last step) each ensemble member's parameters are loaded into
one real module and measured with the pure functions of :mod:`transferlab.train.monitors`:

- ``fisher_trace``: the empirical Fisher trace, mean squared per-sample gradient norm (``torch.func``);
- ``coherence``: Chatterjee & Zielinski's alpha = |E g|^2 / E|g|^2 (memorization: near 1/n,
  shared directions: larger), and ``m_coherence`` = n * alpha;
- ``mean_grad_sq_norm``: the squared norm of the probe's mean gradient;
- ``noise_scale``: McCandlish et al.'s simple noise scale B = tr(Sigma) / |G|^2, exact here
  because the per-sample gradients are at hand (tr Sigma = E|g|^2 - |E g|^2);
- ``dormant_fraction``: tau-dormant units (Sokar et al. 2023, tau = 0.025) over every activation module;
- ``effective_rank``: the effective rank of the last activation module's output (Roy & Vetterli).

The keys are those of :data:`transferlab.train.monitors.MONITORS`, the one table the Hugging Face callbacks
and the reports read too.

The probe is a fixed slice of the training set, so the records are a pure function of the
parameters and the step, and resuming gives the same metrics. The weight norm is already logged
by the standard evaluator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from transferlab.train import monitors

Tensors = dict[str, torch.Tensor]


def member_module(module: nn.Module, params: Tensors, i: int) -> nn.Module:
    """Copy member ``i`` of stacked ``params`` into ``module`` (a real, same-architecture module)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name][i])
    return module


def logs_at(step: int, *, eval_every: int, every: int, last_step: int) -> bool:
    """Whether an extra measured every ``every`` evaluations logs at ``step`` (always at the last step).
    A pure function of the step, so a resumed run logs at the same steps."""
    return step == last_step or (step // eval_every) % every == 0


def plasticity_extra(factory: Callable[[], nn.Module], per_sample_loss: nn.Module, x: torch.Tensor,
                     y: torch.Tensor, *, eval_every: int, every: int, last_step: int,
                     probe_size: int = 256) -> Callable[[Tensors, Any, int], list[dict[str, Any]]]:
    """An evaluator extra: plasticity monitors every ``every`` evaluations (``every`` >= 1)."""
    module = factory()
    module.eval()
    probe_x, probe_y = x[:probe_size], y[:probe_size]
    acts = monitors.activation_modules(module)
    last_act = list(acts)[-1] if acts else None

    def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(out, target).mean()

    def extra(params: Tensors, _forward: Any, step: int) -> list[dict[str, Any]]:
        k = next(iter(params.values())).shape[0]
        if not logs_at(step, eval_every=eval_every, every=every, last_step=last_step):
            return [{} for _ in range(k)]
        out = []
        for i in range(k):
            m = member_module(module, params, i)
            with torch.enable_grad():  # the engine evaluates under no_grad; the loop fallback needs autograd
                stats = monitors.per_sample_gradient_stats(m, mean_loss, probe_x, probe_y)
            trace_sigma = max(stats.fisher_trace - stats.mean_grad_sq_norm, 0.0)
            rec: dict[str, Any] = {
                "fisher_trace": stats.fisher_trace,
                "coherence": stats.coherence,
                "m_coherence": stats.m_coherence,
                "mean_grad_sq_norm": stats.mean_grad_sq_norm,
                "noise_scale": (trace_sigma / stats.mean_grad_sq_norm
                                if stats.mean_grad_sq_norm > 0 else float("nan")),
            }
            if acts:
                rec["dormant_fraction"], rec["effective_rank"] = _dormant_and_rank(m, x, acts, last_act)
            out.append(rec)
        return out

    return extra


def _dormant_and_rank(m: nn.Module, x: torch.Tensor, acts: dict[str, nn.Module], last: str) -> tuple[float, float]:
    """Dormant fraction over every activation module and the effective rank of the last one's output,
    from one forward pass."""
    features: list[torch.Tensor] = []
    hook = acts[last].register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        dormant = monitors.dormant_units(m, x, modules=acts)["dormant_fraction"]
    finally:
        hook.remove()
    return dormant, monitors.effective_rank(features[0])


def combine_extras(*extras: Callable | None) -> Callable | None:
    """One evaluator extra from several (``None`` entries are dropped); records are merged per member."""
    live = [e for e in extras if e is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def extra(params: Tensors, forward: Any, step: int) -> list[dict[str, Any]]:
        merged: list[dict[str, Any]] | None = None
        for e in live:
            recs = e(params, forward, step)
            merged = recs if merged is None else [{**a, **b} for a, b in zip(merged, recs)]
        return merged or []

    return extra
