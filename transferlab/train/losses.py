"""Per-sample losses on stacked logits [K, n, C] (K ensemble members), as nn.Modules.

``float64`` here really means float64: logits are cast before the log-softmax (the reference
code of Nanda et al. casts to float32 instead).
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class CrossEntropy(nn.Module):
    def __init__(self, dtype: str = "float32"):
        super().__init__()
        self.dtype = DTYPES[dtype]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = logits.to(self.dtype).log_softmax(-1)
        return -logp.gather(-1, _expand(target, logits)).squeeze(-1)


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (Prieto et al. 2025, arXiv 2501.04697)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))


class StableMaxCrossEntropy(nn.Module):
    """-log(s(x_y) / sum_j s(x_j)), computed in float64 by default as in the paper."""

    def __init__(self, dtype: str = "float64"):
        super().__init__()
        self.dtype = DTYPES[dtype]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = stablemax_s(logits.to(self.dtype))
        picked = s.gather(-1, _expand(target, logits)).squeeze(-1)
        return -(torch.log(picked) - torch.log(s.sum(-1)))


class MSEOneHot(nn.Module):
    """Mean squared error against one-hot targets, averaged over classes (Gromov 2023)."""

    def __init__(self, dtype: str = "float32"):
        super().__init__()
        self.dtype = DTYPES[dtype]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # a comparison, not F.one_hot: it broadcasts over ensemble members and works under vmap (no .item())
        classes = torch.arange(logits.shape[-1], device=logits.device)
        onehot = (target.unsqueeze(-1) == classes).to(self.dtype)
        return ((logits.to(self.dtype) - onehot) ** 2).mean(-1)


def _expand(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    idx = target.unsqueeze(-1)
    if logits.dim() == 3 and idx.dim() == 2:
        idx = idx.unsqueeze(0).expand(logits.shape[0], -1, -1)
    return idx


LOSSES = {"cross_entropy": CrossEntropy, "stablemax": StableMaxCrossEntropy, "mse": MSEOneHot}


def make_loss(name: str, dtype: str | None = None) -> nn.Module:
    cls = LOSSES[name]
    return cls() if dtype is None else cls(dtype)


def softmax_collapse_fraction(logits: torch.Tensor) -> torch.Tensor:
    """Per member: fraction of samples whose sum of exp(logits - max) is exactly 1 in the logits' dtype.

    When that happens the gradient of the correct class vanishes (Prieto et al.'s Softmax Collapse).
    """
    z = logits - logits.max(-1, keepdim=True).values
    return (torch.exp(z).sum(-1) == 1).float().mean(-1)
