"""K models of one architecture trained as one: stacked parameters and ``torch.func.vmap``.

Each member is built from its own seed; its parameters are stacked along a new leading dimension.
The forward pass maps the module's functional form over that dimension, so one call computes
all K members on a shared batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def build_members(factory: Callable[[], nn.Module], seeds: list[int]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Instantiate one module per seed and stack their parameters: {name: [K, ...]}."""
    modules = []
    for s in seeds:
        torch.manual_seed(int(s))
        modules.append(factory())
    params, _buffers = stack_module_state(modules)
    base = modules[0].to("meta")
    return base, {k: v.detach().clone() for k, v in params.items()}


class StackedForward:
    """Calls the module with stacked parameters: f(params[K,...], x[n,...]) -> out[K, n, ...]."""

    def __init__(self, base: nn.Module):
        self.base = base

        def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, p, (x,))

        self._vmapped = vmap(one, in_dims=(0, None))
        self._one = one

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        if k == 1:  # a single run skips vmap's bookkeeping
            return self._one({n: v[0] for n, v in params.items()}, x).unsqueeze(0)
        return self._vmapped(params, x)
