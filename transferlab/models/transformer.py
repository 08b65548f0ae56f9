"""Small decoder-only transformers for algorithmic tasks (Power et al. 2022; Nanda et al. 2023).

:class:`AlgorithmicTransformer` is Nanda et al.'s; :class:`EquationTransformer` (at the end) is Power et al.'s,
as the public reproductions of Power et al. and of Grokfast build it.

For :class:`AlgorithmicTransformer` the input is the sequence ``[a, b, =]``; the answer is read out at the
last position. Because only that position is read, the final layer computes queries, the attention output
and the MLP for the last position alone (keys and values still see every position). This is exact, and makes
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


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head)) v over heads [n, h, t, d_head]; ``causal`` masks the future (off when q is
    the last position alone, which sees every position). Written out rather than SDPA: over 3-4 positions the
    fused kernel's overhead outweighs the work, and under vmap (the seed ensembles) SDPA has no batching rule
    and falls back to a loop per member."""
    att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        t = q.shape[-2]
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return att.softmax(-1) @ v


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
        z = _attention(q, k, v, causal=not last_only).transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1)
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
        return self.features(tokens) @ self.unembed

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The representation the unembedding reads (the '=' position after the last block and ln_f): [n, d]."""
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
        return self.ln_f(x[:, -1, :])


class EquationBlock(nn.Module):
    """A decoder block of the equation transformers, as their public reference code builds it.

    ``style="power"`` (danielmamay/grokking, Power et al.): post-LN, x = LN(x + attn(x)), then
    x = LN(x + mlp(x)); ReLU MLP; no biases.
    ``style="grokfast"`` (ironjr/grokfast): x = LN(x) first and the attention added to the *normalized*
    stream, x = x + attn(x), then pre-LN x = x + mlp(LN(x)); GELU MLP; biases everywhere.

    Initialized as PyTorch initializes those modules: the fused q/k/v projection Xavier-uniform and its bias
    0 (``nn.MultiheadAttention``), the attention output projection ``nn.Linear``'s default weight with bias 0,
    the MLP ``nn.Linear``'s default (weights and biases uniform ±1/sqrt(fan_in)), LayerNorm 1 and 0."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int, style: str):
        super().__init__()
        self.n_heads, self.style = n_heads, style
        bias = style == "grokfast"
        self.in_proj = nn.Parameter(torch.empty(3 * d_model, d_model))
        nn.init.xavier_uniform_(self.in_proj)
        self.in_bias = nn.Parameter(torch.zeros(3 * d_model)) if bias else None
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        if bias:
            nn.init.zeros_(self.out_proj.bias)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp_in = nn.Linear(d_model, d_mlp, bias=bias)
        self.act = nn.GELU() if style == "grokfast" else nn.ReLU()  # a module: monitors hook the neurons
        self.mlp_out = nn.Linear(d_mlp, d_model, bias=bias)
        self.norm2 = nn.LayerNorm(d_model)

    def attend(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Causal self-attention; ``last_only`` returns only the last position's output (its query sees every
        position, so no mask), which is all the readout of the last block needs."""
        n, t, d = x.shape
        qkv = torch.nn.functional.linear(x, self.in_proj, self.in_bias)
        q, k, v = qkv.view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        z = _attention(q[:, :, -1:] if last_only else q, k, v, causal=not last_only)
        return self.out_proj(z.transpose(1, 2).reshape(n, -1, d))

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:  # [n, t, d] -> [n, t or 1, d]
        """``last_only``: compute the block's output at the last position only (exact: the keys and values
        still come from every position), for the last block, whose other positions nothing reads."""
        if self.style == "power":
            x = self.norm1((x[:, -1:] if last_only else x) + self.attend(x, last_only))
            return self.norm2(x + self.mlp_out(self.act(self.mlp_in(x))))
        x = self.norm1(x)
        x = (x[:, -1:] if last_only else x) + self.attend(x, last_only)
        return x + self.mlp_out(self.act(self.mlp_in(self.norm2(x))))


class EquationTransformer(nn.Module):
    """The equation transformers of Power et al. 2022 (arXiv 2201.02177) as their public reproductions build
    them: the input is ``[x, ∘, y, =]`` (4 tokens), learned token and position embeddings (``nn.Embedding``:
    N(0, 1)), 2 blocks (:class:`EquationBlock`) and an untied bias-free readout over all p + 2 tokens at the
    '=' position (a prediction of ∘ or = counts as wrong, as in the references).

    ``style="power"``: danielmamay/grokking (∘ = p, = = p + 1; no final LayerNorm).
    ``style="grokfast"``: ironjr/grokfast's algorithmic task (= = p, ∘ = p + 1; a final LayerNorm)."""

    def __init__(self, n_tokens: int, n_classes: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512,
                 n_layers: int = 2, style: str = "power"):
        super().__init__()
        if n_classes != n_tokens:
            raise ValueError("an equation transformer reads out over the input vocabulary (n_classes = n_tokens)")
        if style not in ("power", "grokfast"):
            raise ValueError(f"unknown equation transformer style '{style}'")
        self.op_token, self.eq_token = (n_tokens, n_tokens + 1) if style == "power" else (n_tokens + 1, n_tokens)
        self.embed = nn.Parameter(torch.randn(n_tokens + 2, d_model))
        # ironjr/grokfast builds its position table with seq_len=5 for 4-token inputs: the fifth row is never
        # read, but it is initialized N(0, 1) and decayed by the L2 term, so it is in ||θ||² (~128 of ~15,000).
        self.pos = nn.Parameter(torch.randn(5 if style == "grokfast" else 4, d_model))
        self.blocks = nn.ModuleList(EquationBlock(d_model, n_heads, d_mlp, style) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model) if style == "grokfast" else nn.Identity()
        self.head = nn.Linear(d_model, n_tokens + 2, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [n, 2] operand ids -> logits [n, p + 2] at the '=' position."""
        return self.head(self.features(tokens))

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The representation the readout reads (the '=' position after the last block and ln_f): [n, d]."""
        op = torch.full_like(tokens[:, :1], self.op_token)
        eq = torch.full_like(tokens[:, :1], self.eq_token)
        seq = torch.cat([tokens[:, :1], op, tokens[:, 1:], eq], dim=1)
        x = _lookup(self.embed, seq) + self.pos[:4]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=(i == last))
        return self.ln_f(x[:, -1, :])
