"""The monitors inside the engine: a callback that logs every row of the monitor table on a schedule.

Every ``every`` evaluations (and at the last step) each ensemble member's parameters are loaded into
one real module and every row of :data:`transferlab.train.monitors.MONITORS` (the one table the Hugging
Face callbacks and the reports read too) is measured on a :class:`~transferlab.train.monitors.Probe` of it:

- ``fisher_trace``: the empirical Fisher trace, mean squared per-sample gradient norm (``torch.func``);
- ``coherence``: Chatterjee & Zielinski's alpha = |E g|^2 / E|g|^2 (memorization: near 1/n,
  shared directions: larger), and ``m_coherence`` = n * alpha;
- ``mean_grad_sq_norm``: the squared norm of the probe's mean gradient;
- ``noise_scale``: McCandlish et al.'s simple noise scale B = tr(Sigma) / |G|^2, exact here
  because the per-sample gradients are at hand (tr Sigma = E|g|^2 - |E g|^2);
- ``dormant_fraction``: tau-dormant units (Sokar et al. 2023, tau = 0.025) over every activation module,
  on the whole training set;
- ``effective_rank``: the effective rank of the last activation module's output (Roy & Vetterli);
- and any row added to the table. ``weight_norm`` is skipped: the standard evaluator logs ``weight_norm_sq``.

The probe is a fixed slice of the training set, so the records are a pure function of the
parameters and the step, and resuming gives the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from transferlab.train import monitors
from transferlab.train.engine import Callback, Evaluation

Tensors = dict[str, torch.Tensor]


def member_module(module: nn.Module, params: Tensors, i: int) -> nn.Module:
    """Copy member ``i`` of stacked ``params`` into ``module`` (a real, same-architecture module)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name][i])
    return module


def logs_at(step: int, *, eval_every: int, every: int, last_step: int) -> bool:
    """Whether a measurement taken every ``every`` evaluations logs at ``step`` (always at the last step).
    A pure function of the step, so a resumed run logs at the same steps."""
    return step == last_step or (step // eval_every) % every == 0


class PlasticityMonitors(Callback):
    """An engine callback: every monitor of the table, per member, every ``every`` evaluations (``every`` >= 1).

    ``factory`` builds a real module of the members' architecture; ``per_sample_loss(output, target)`` is
    the engine's per-sample loss; the probe is the first ``probe_size`` rows of ``x``/``y`` and the
    activation monitors run on all of ``x``. ``skip``: table keys not logged."""

    def __init__(self, factory: Callable[[], nn.Module], per_sample_loss: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, *, eval_every: int, every: int, last_step: int, probe_size: int = 256,
                 skip: Iterable[str] = ("weight_norm",)):
        self.module = factory()
        self.module.eval()
        self.x, self.probe_x, self.probe_y = x, x[:probe_size], y[:probe_size]
        acts = monitors.activation_modules(self.module)
        self.last_act = list(acts)[-1] if acts else None
        self.loss = per_sample_loss
        self.eval_every, self.every, self.last_step = eval_every, every, last_step
        self.skip = frozenset(skip)

    def mean_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(out, target).mean()

    def measure(self, params: Tensors, i: int) -> dict[str, float]:
        """Every monitor of member ``i`` of the stacked ``params``."""
        m = member_module(self.module, params, i)
        probe = monitors.Probe(m, self.mean_loss, self.probe_x, self.probe_y, activation_inputs=self.x,
                               feature_module=self.last_act, skip=self.skip)
        return monitors.measure(probe)

    def on_measure(self, evaluation: Evaluation) -> None:
        if not logs_at(evaluation.step, eval_every=self.eval_every, every=self.every, last_step=self.last_step):
            return
        for i, rec in enumerate(evaluation.records):
            rec.update(self.measure(evaluation.params, i))
