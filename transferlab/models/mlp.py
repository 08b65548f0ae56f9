"""MLP on one-hot inputs (Gromov 2023; Prieto et al. 2025).

The first layer acts on the concatenated one-hot encodings of the two operands. Multiplying a
one-hot vector by a matrix selects a row, so the layer is stored as one table per operand and
applied as a lookup-and-add: the same function as ``Linear(2p, width, bias=False)`` on
``concat(onehot(a), onehot(b))``, at a fraction of the cost. The lookup is ``index_select``, whose
backward (``index_add``) is several times faster on CPU than advanced indexing's (a sorting
``index_put``): 12.6 -> 5.6 ms per forward + backward of the default model.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class QuadraticActivation(nn.Module):
    """x -> x^2 (Gromov 2023); named *Activation so monitors find the units."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


ACTIVATIONS = {"relu": nn.ReLU, "quadratic": QuadraticActivation, "gelu": nn.GELU}


class OneHotMLP(nn.Module):
    def __init__(
        self,
        n_tokens: int,
        n_classes: int,
        width: int = 256,
        depth: int = 1,
        activation: str = "quadratic",
        bias: bool = False,
        n_inputs: int = 2,
    ):
        super().__init__()
        self.n_inputs = n_inputs
        # One table per operand; pre-activations have unit variance at init.
        self.embed = nn.Parameter(torch.randn(n_inputs, n_tokens, width) / math.sqrt(n_inputs))
        self.first_bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.act = ACTIVATIONS[activation]()
        hidden = []
        for _ in range(depth - 1):
            layer = nn.Linear(width, width, bias=bias)
            nn.init.normal_(layer.weight, std=1 / math.sqrt(width))
            if bias:
                nn.init.zeros_(layer.bias)
            hidden += [layer, ACTIVATIONS[activation]()]
        self.hidden = nn.Sequential(*hidden)
        self.readout = nn.Linear(width, n_classes, bias=False)
        nn.init.normal_(self.readout.weight, std=1 / math.sqrt(width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [n, n_inputs] integer ids -> logits [n, n_classes]."""
        h = self.embed[0].index_select(0, tokens[:, 0])
        for i in range(1, self.n_inputs):
            h = h + self.embed[i].index_select(0, tokens[:, i])
        if self.first_bias is not None:
            h = h + self.first_bias
        return self.readout(self.hidden(self.act(h)))
