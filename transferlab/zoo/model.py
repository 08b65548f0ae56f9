"""The zoo's language model, in one readable file: a Llama decoder that trains fast on a CPU.

The architecture is exactly Hugging Face's ``LlamaForCausalLM`` (pre-RMSNorm, rotary position
embeddings, SwiGLU MLP, no biases, tied input/output embeddings), and the parameters carry the same
names, so a trained model is saved as a ``LlamaForCausalLM`` (:func:`to_hf`) and every study loads it
with ``AutoModelForCausalLM.from_pretrained``. A test checks that both compute the same logits.

It exists because training through Hugging Face's module is slow at the zoo's sizes: per layer it
builds masks, position ids and rotary tables and runs many small element-wise kernels. Here the
rotary table is built once per sequence length, q/k/v and gate/up each run as one matmul,
attention is ``scaled_dot_product_attention`` (causal, no mask tensor), and the norm is
``F.rms_norm``. Under ``torch.autocast`` in bfloat16 the matmuls run in bf16 while the parameters
(the master copy the optimizer updates) stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LMShape:
    """What fixes a zoo model's tensors (seven fields, as nanoGPT's config)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    rope_theta: float = 10000.0


RMS_EPS = 1e-6  # LlamaConfig's default rms_norm_eps


class RMSNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32, as Llama does (the residual stream stays float32 under autocast; the next matmul
        # casts to bf16), as one fused kernel
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight, eps=RMS_EPS)


class Attention(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        d = s.d_model
        self.n_heads = s.n_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        qkv = F.linear(x, w)
        q, k, v = qkv.view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        if qkv.dtype == torch.bfloat16 and qkv.device.type == "cpu":
            # the CPU's flash attention runs 3-7x slower in bf16 than in float32 at these head widths
            # (measured: 62 vs 15 ms forward + backward, d_head 24, 1 thread): attend in float32, outside
            # autocast (which would cast q, k, v back to bf16)
            with torch.autocast("cpu", enabled=False):
                q, k, v = q.float(), k.float(), v.float()
                y = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, is_causal=True)
        else:
            q, k = rotate(q, cos.to(q.dtype), sin.to(q.dtype)), rotate(k, cos.to(q.dtype), sin.to(q.dtype))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in Llama's half-split convention: x*cos + rotate_half(x)*sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class MLP(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        self.gate_proj = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.up_proj = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.down_proj = nn.Linear(s.d_ff, s.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight])).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        self.input_layernorm = RMSNorm(s.d_model)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.d_model)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Named ``model`` inside :class:`ZooLM`, as in ``LlamaForCausalLM``."""

    def __init__(self, s: LMShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.d_model)
        self.layers = nn.ModuleList(Block(s) for _ in range(s.n_layers))
        self.norm = RMSNorm(s.d_model)


class ZooLM(nn.Module):
    """ids [B, T] -> logits [B, T, V]; the LM head is the token embedding (tied)."""

    def __init__(self, shape: LMShape):
        super().__init__()
        if shape.d_model % shape.n_heads or (shape.d_model // shape.n_heads) % 2:
            raise ValueError(f"d_model {shape.d_model} must split into {shape.n_heads} heads of even width")
        self.shape = shape
        self.model = Body(shape)
        self._rope: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def rope(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (t, device)
        if key not in self._rope:
            hd = self.shape.d_model // self.shape.n_heads
            inv = 1.0 / self.shape.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
            ang = torch.outer(torch.arange(t, dtype=torch.float32), inv)
            emb = torch.cat((ang, ang), dim=-1).to(device)
            self._rope[key] = (emb.cos(), emb.sin())
        return self._rope[key]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(ids)
        cos, sin = self.rope(ids.shape[1], ids.device)
        for block in self.model.layers:
            x = block(x, cos, sin)
        x = self.model.norm(x)
        return F.linear(x, self.model.embed_tokens.weight)


def init_weights(model: ZooLM, seed: int, std: float = 0.02) -> ZooLM:
    """Llama's initialization (``initializer_range`` 0.02: normal linears and embedding, unit norms),
    deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def new_lm(shape: LMShape, seed: int) -> ZooLM:
    return init_weights(ZooLM(shape), seed)


def hf_config(shape: LMShape, eos_id: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,
        max_position_embeddings=shape.seq_len,
        rms_norm_eps=RMS_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attention_dropout=0.0,
        use_cache=True,
    )


def to_hf(model: ZooLM, eos_id: int) -> Any:
    """The same weights as a ``LlamaForCausalLM`` (float32, eval mode), ready for ``save_pretrained``."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(hf_config(model.shape, eos_id))
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"zoo -> Llama weight names differ: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.float().eval()


def from_hf(hf: Any, seq_len: int | None = None) -> ZooLM:
    """A ZooLM holding a ``LlamaForCausalLM``'s weights (to fine-tune a saved zoo model fast)."""
    c = hf.config
    theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
    shape = LMShape(c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                    c.intermediate_size, seq_len or c.max_position_embeddings, float(theta))
    if c.num_key_value_heads != c.num_attention_heads or getattr(c, "attention_bias", False):
        raise ValueError("only plain Llama models (no grouped-query attention, no biases) convert to ZooLM")
    m = ZooLM(shape)
    state = {k: v.detach().float() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    m.load_state_dict(state, strict=True)
    return m


def count_non_embedding(model: nn.Module) -> int:
    """Parameters of a model (a ZooLM or a Hugging Face LM) other than its token (and tied output) embeddings."""
    emb = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else (
        model.model.embed_tokens.weight)
    return sum(p.numel() for p in model.parameters() if p is not emb)


def flops_per_token(shape: LMShape) -> float:
    """Training FLOPs per token (Kaplan et al. 2020's 6N, counting the tied head as a matmul): 6 x
    (non-embedding params + V x d) + 6 x n_layers x T x d for attention scores and values (causal
    halves the work, the backward doubles it: 2 x 2 x ... x 1/2 x 3)."""
    d, L = shape.d_model, shape.n_layers
    non_emb = L * (4 * d * d + 3 * d * shape.d_ff + 2 * d) + d
    return 6.0 * (non_emb + shape.vocab_size * d) + 6.0 * L * shape.seq_len * d
