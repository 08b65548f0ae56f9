"""Small decoder-only transformers for algorithmic tasks (Power et al. 2022; Nanda et al. 2023).

Input is the sequence ``[a, b, =]``; the answer is read out at the last position. Because only
that position is read, the final layer computes queries, the attention output and the MLP for
the last position alone (keys and values still see every position). This is exact, and makes
the 1-layer model of Nanda et al. about twice as cheap per step. Without a LayerNorm before the first
attention, its query/key/value projections are also taken on the vocabulary table instead of per sample.

Initialization follows Nanda et al.'s model: every matrix ~ N(0, 1/d_model) except the unembedding,
~ N(0, 1/d_vocab) with d_vocab = p + 1. (The initial weight norm sets how long weight decay needs to
reach the generalizing solution, so it shifts the grokking step.)
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, layer_norm: bool):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        std = 1 / math.sqrt(d_model)
        self.W_Q = nn.Parameter(torch.randn(d_model, d_model) * std)
        self.W_K = nn.Parameter(torch.randn(d_model, d_model) * std)
        self.W_V = nn.Parameter(torch.randn(d_model, d_model) * std)
        self.W_O = nn.Parameter(torch.randn(d_model, d_model) * std)
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) * std)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) * std)  # 1/sqrt(d_model), as Nanda et al.
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.ln1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.act = nn.ReLU()  # a module, so that monitors can hook the MLP neurons

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [n, t, d] -> [n, h, t, dh]
        n, t, _ = x.shape
        return x.view(n, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, last_only: bool,
                projected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``projected`` = (x W_Q, x W_K, x W_V) when the caller computed them more cheaply."""
        if projected is None:
            h = self.ln1(x)
            xq, xk, xv = (h[:, -1:, :] if last_only else h) @ self.W_Q, h @ self.W_K, h @ self.W_V
        else:
            xq, xk, xv = projected
            xq = xq[:, -1:, :] if last_only else xq
        k, v, q = self._heads(xk), self._heads(xv), self._heads(xq)
        q_in = xq
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        if not last_only:
            t = x.shape[1]
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(mask, float("-inf"))
        z = (att.softmax(-1) @ v).transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1)
        resid = (x[:, -1:, :] if last_only else x) + z @ self.W_O
        mlp = self.act(self.ln2(resid) @ self.W_in + self.b_in) @ self.W_out + self.b_out
        return resid + mlp


def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` through ``index_select``: its backward is an ``index_add``, several times faster on
    CPU than the sorting ``index_put`` that advanced indexing's backward runs."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[-1])


class AlgorithmicTransformer(nn.Module):
    def __init__(
        self,
        n_tokens: int,
        n_classes: int,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        n_layers: int = 1,
        layer_norm: bool = False,
        n_ctx: int = 3,
        eq_output: bool = False,
    ):
        super().__init__()
        self.eq_token = n_tokens  # the '=' token
        self.embed = nn.Parameter(torch.randn(n_tokens + 1, d_model) / math.sqrt(d_model))
        self.pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp, layer_norm) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        # eq_output: the readout also scores the '=' token (never a target), as Nanda et al.'s d_vocab = p + 1
        n_out = n_classes + 1 if eq_output else n_classes
        self.unembed = nn.Parameter(torch.randn(d_model, n_out) / math.sqrt(n_classes + 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [n, 2] operand ids -> logits [n, n_classes] at the '=' position."""
        eq = torch.full_like(tokens[:, :1], self.eq_token)
        seq = torch.cat([tokens, eq], dim=1)
        pos = self.pos[: seq.shape[1]]
        x = _lookup(self.embed, seq) + pos
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            projected = None
            if i == 0 and isinstance(block.ln1, nn.Identity):
                # (E[t] + P_j) W = (E W)[t] + (P W)_j: project the vocabulary table once instead of every
                # position of every sample (exact; needs no LayerNorm before the projection).
                projected = tuple(_lookup(self.embed @ W, seq) + pos @ W for W in (block.W_Q, block.W_K, block.W_V))
            x = block(x, last_only=(i == last), projected=projected)
        return self.ln_f(x[:, -1, :]) @ self.unembed
