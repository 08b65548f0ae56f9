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


# On CPU, vmap runs K members as one batched computation whose activations are K times larger: past
# the caches, its gathers and element-wise passes become memory-bound and K members cost more than K
# single runs (measured, 16 members, 2 threads: default grok MLP 196 ms vmapped vs 116 ms one by
# one; the nanda2023 transformer 1,084 vs 610 ms), while for small models vmap saves per-call
# overhead (p=23, width 64: 1.9 vs 4.3 ms). "auto" therefore loops over members on CPU when a
# member's work, rows x parameters, is at least LOOP_WORK, and uses vmap otherwise (and always on
# accelerators).
LOOP_WORK = 10_000_000
MODES = ("auto", "vmap", "loop")


class StackedForward:
    """Calls the module with stacked parameters: f(params[K,...], x[n,...]) -> out[K, n, ...].

    ``mode`` chooses how K > 1 members run: ``"vmap"`` (one batched call), ``"loop"`` (one call per
    member, stacked; each member then computes exactly as a single run does) or ``"auto"`` (see
    ``LOOP_WORK``). The choice is a pure function of the shapes, so a resumed run makes the same one.
    """

    def __init__(self, base: nn.Module, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"unknown ensemble mode '{mode}'; choose one of {', '.join(MODES)}")
        self.base = base
        self.mode = mode

        def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, p, (x,))

        self._vmapped = vmap(one, in_dims=(0, None))
        self._one = one

    def loops(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> bool:
        if self.mode != "auto":
            return self.mode == "loop"
        if x.device.type != "cpu":
            return False
        per_member = sum(v[0].numel() for v in params.values())
        return x.shape[0] * per_member >= LOOP_WORK

    def one_by_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> bool:
        """Whether K > 1 members run one call each (loop mode): then a trainer can also take each
        member's loss and backward in turn, on its own parameters (``member``)."""
        return next(iter(params.values())).shape[0] > 1 and self.loops(params, x)

    def member(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """One member's forward from its own (unstacked) parameters: out[n, ...]."""
        return self._one(params, x)

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        if k == 1:  # a single run skips vmap's bookkeeping
            return self._one({n: v[0] for n, v in params.items()}, x).unsqueeze(0)
        if self.loops(params, x):
            return torch.stack([self._one({n: v[i] for n, v in params.items()}, x) for i in range(k)])
        return self._vmapped(params, x)
