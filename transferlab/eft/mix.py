"""The EFT arithmetic, as pure tensor functions (no models, no I/O).

Mitchell et al. 2023 (arXiv 2310.12962):

    log p(y) = log pi_base(y) + beta * sum_i w_i [log pi_ft_i(y) - log pi_ref_i(y)]   (renormalized)

With one pair and w = 1 this is the paper's up-/down-scaling; with two pairs and weights
(lambda, 1 - lambda) it is the paper's test-time interpolation of rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def eft_logprobs(
    base_logits: torch.Tensor,
    ft_logits: Sequence[torch.Tensor],
    ref_logits: Sequence[torch.Tensor],
    weights: Sequence[float],
    beta: float,
) -> torch.Tensor:
    """Normalized EFT log-probabilities over the last axis (any leading shape)."""
    z = F.log_softmax(base_logits.float(), dim=-1)
    if beta != 0.0:
        delta = torch.zeros_like(z)
        for ft, ref, w in zip(ft_logits, ref_logits, weights):
            delta = delta + w * (F.log_softmax(ft.float(), dim=-1) - F.log_softmax(ref.float(), dim=-1))
        z = z + beta * delta
    return F.log_softmax(z, dim=-1)


def warp(
    logprobs: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Log-probabilities of the sampling distribution: temperature, then top-k, then top-p.

    Removed tokens get -inf; the result is normalized. top_k = 0 and top_p = 1 switch those off.
    """
    x = logprobs.float()
    if temperature != 1.0:
        x = x / temperature
    x = F.log_softmax(x, dim=-1)
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.exp()
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # keep the smallest head whose mass reaches top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return F.log_softmax(x, dim=-1)


def choose(logprobs: torch.Tensor, *, greedy: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of a [B, V] table: argmax when greedy, else a draw."""
    if greedy:
        return logprobs.argmax(dim=-1)
    return torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
