"""Gradient transforms that compose on stacked parameters, in optax's ``(init, update)`` shape but not pure.

Every tensor has a leading member dimension K (K=1 for a single run). A transform has
``init(params) -> state`` and ``update(updates, state, params, step) -> updates``. Unlike optax, ``update``
changes ``state`` in place and returns only the updates: the engine holds one state dict per chain for the
whole run (saved in checkpoints with safetensors) and a functional copy per step would only cost memory
traffic. The step count lives in the engine.
``chain(...)`` applies them in order. AdamW is
``chain(scale_by_adam, add_decayed_weights(wd), scale_by_lr(lr))``; the final update is added to the
parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

Tensors = dict[str, torch.Tensor]


def per_member(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[K] -> [K, 1, 1, ...] broadcasting against ``like``."""
    return x.view(-1, *([1] * (like.dim() - 1)))


def _member_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1) if x.dim() > 1 else x


class GradientTransform(Protocol):
    name: str

    def init(self, params: Tensors) -> Tensors: ...

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors: ...


class OrthoGrad:
    """⊥Grad (Prieto et al. 2025): drop the gradient component along the weights, keep its norm."""

    name = "orthograd"

    def __init__(self, eps: float = 1e-30):
        self.eps = eps

    def init(self, params: Tensors) -> Tensors:
        return {}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        out = {}
        for k, g in updates.items():
            w = params[k]
            coef = _member_sum(w * g) / (_member_sum(w * w) + self.eps)
            g_perp = g - per_member(coef, w) * w
            scale = _member_sum(g * g).sqrt() / (_member_sum(g_perp * g_perp).sqrt() + self.eps)
            out[k] = g_perp * per_member(scale, g)
        return out


class GrokfastEMA:
    """Grokfast-EMA (Lee et al. 2024): ema = a*ema + (1-a)*g ; g <- g + lamb*ema (ema starts at g)."""

    name = "grokfast_ema"

    def __init__(self, alpha: float = 0.98, lamb: float = 2.0):
        self.alpha, self.lamb = alpha, lamb

    def init(self, params: Tensors) -> Tensors:
        return {f"ema.{k}": torch.zeros_like(v) for k, v in params.items()}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        out = {}
        for k, g in updates.items():
            ema = state[f"ema.{k}"]
            if step == 0:
                ema.copy_(g)
            else:
                ema.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
            out[k] = g + self.lamb * ema
        return out


class GrokfastMA:
    """Grokfast-MA: g <- g + lamb * mean of the last ``window`` gradients, once the window is full."""

    name = "grokfast_ma"

    def __init__(self, window: int = 100, lamb: float = 5.0):
        self.window, self.lamb = window, lamb

    def init(self, params: Tensors) -> Tensors:
        return {f"buf.{k}": torch.zeros(self.window, *v.shape, dtype=v.dtype, device=v.device)
                for k, v in params.items()}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        out = {}
        slot = step % self.window
        for k, g in updates.items():
            buf = state[f"buf.{k}"]
            buf[slot].copy_(g)
            out[k] = g + self.lamb * buf.mean(0) if step + 1 >= self.window else g
        return out


class AddL2:
    """Coupled L2 (Adam + L2, the Grokfast paper's baseline): g <- g + wd * w, before Adam."""

    name = "l2"

    def __init__(self, weight_decay: torch.Tensor):
        self.wd = weight_decay

    def init(self, params: Tensors) -> Tensors:
        return {}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        return {k: g + per_member(self.wd, g) * params[k] for k, g in updates.items()}


class ScaleByAdam:
    name = "adam"

    def __init__(self, b1: float = 0.9, b2: float = 0.98, eps: float = 1e-8):
        self.b1, self.b2, self.eps = b1, b2, eps

    def init(self, params: Tensors) -> Tensors:
        st = {f"m.{k}": torch.zeros_like(v) for k, v in params.items()}
        st.update({f"v.{k}": torch.zeros_like(v) for k, v in params.items()})
        return st

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        t = step + 1
        c1 = 1 - self.b1**t
        c2 = 1 - self.b2**t
        out = {}
        for k, g in updates.items():
            m, v = state[f"m.{k}"], state[f"v.{k}"]
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            out[k] = (m / c1) / ((v / c2).sqrt_().add_(self.eps))
        return out


class AddDecayedWeights:
    """Decoupled weight decay (AdamW): u <- u + wd * w, scaled by the learning rate afterwards."""

    name = "decoupled_wd"

    def __init__(self, weight_decay: torch.Tensor):
        self.wd = weight_decay

    def init(self, params: Tensors) -> Tensors:
        return {}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        return {k: u + per_member(self.wd, u) * params[k] for k, u in updates.items()}


class ScaleByLR:
    """u <- -lr * schedule(step) * u, with a per-member learning rate tensor [K]."""

    name = "lr"

    def __init__(self, lr: torch.Tensor, schedule: Callable[[int], float]):
        self.lr, self.schedule = lr, schedule

    def init(self, params: Tensors) -> Tensors:
        return {}

    def current_lr(self, step: int) -> torch.Tensor:
        return self.lr * self.schedule(step)

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        lr = self.current_lr(step)
        return {k: u * per_member(-lr, u) for k, u in updates.items()}


class ProjectNorm:
    """Hold each member's squared weight norm ‖θ‖² at ``rho`` (the causal test of the norm account of
    grokking: arXiv:2606.13753 clamps the norm; arXiv:2605.18845 freezes it). Put last in a chain: the update
    it returns lands the parameters on the sphere ‖θ + u‖² = rho, ``θ + u`` rescaled. ``rho`` is per member
    state ([K]); a NaN leaves that member's update as it is (the memorization clamp sets it when the member
    memorizes, see ``studies/grokking/run.py``), so a member not yet clamped trains exactly as without it."""

    name = "project_norm"

    def __init__(self, rho: torch.Tensor):
        self.rho = rho.to(torch.float64)

    def init(self, params: Tensors) -> Tensors:
        return {"rho": self.rho.clone()}

    def update(self, updates: Tensors, state: Tensors, params: Tensors, step: int) -> Tensors:
        rho = state["rho"]
        active = torch.isfinite(rho)
        if not bool(active.any()):
            return updates
        new = {k: params[k] + u for k, u in updates.items()}
        norm_sq = sum(_member_sum(v.double() * v.double()) for v in new.values())
        scale = torch.where(active, (rho / norm_sq.clamp_min(1e-300)).sqrt(), torch.ones_like(rho))
        out = {}
        for k, u in updates.items():
            projected = new[k] * per_member(scale.to(new[k].dtype), new[k]) - params[k]
            out[k] = torch.where(per_member(active, u), projected, u)
        return out


class Chain:
    def __init__(self, *transforms: GradientTransform):
        self.transforms = list(transforms)

    def init(self, params: Tensors) -> list[Tensors]:
        return [t.init(params) for t in self.transforms]

    def update(self, grads: Tensors, states: list[Tensors], params: Tensors, step: int) -> Tensors:
        u = grads
        for t, s in zip(self.transforms, states):
            u = t.update(u, s, params, step)
        return u

    def flat_state(self, states: list[Tensors]) -> Tensors:
        return {f"opt{i}.{t.name}.{k}": v for i, (t, s) in enumerate(zip(self.transforms, states))
                for k, v in s.items()}



def chain(*transforms: GradientTransform) -> Chain:
    return Chain(*transforms)


def make_schedule(kind: str, warmup_steps: int, total_steps: int, warmup_from_zero: bool = False
                  ) -> Callable[[int], float]:
    """Linear warm-up (step+1)/warmup (or step/warmup from zero, as ``LambdaLR(min(step/w, 1))``: the first
    step then only fills Adam's moments), then constant, cosine or linear decay to 0."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step if warmup_from_zero else step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        frac = min(max(frac, 0.0), 1.0)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0 - frac

    return f
