"""Plain EFT decoding: batched prompts (left padding), one KV cache per model, per-row EOS."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.eft.components import Components, EFTError, Runner
from transferlab.eft.mix import choose, warp
from transferlab.eft.results import Generation, GenerationResult, TokenInfo


@dataclass
class Settings:
    """How to decode. ``greedy`` ignores temperature/top-k/top-p; ``speculative`` = draft block size."""

    max_new_tokens: int = 32
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    speculative: int = 0

    def validate(self) -> Settings:
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"),
            (
                self.temperature > 0,
                "temperature",
                f"must be > 0, got {self.temperature} (use --greedy for argmax)",
            ),
            (self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}"),
            (0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}"),
            (self.speculative >= 0, "speculative", f"must be >= 0 (0 = off), got {self.speculative}"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise EFTError(f"{name} {msg}", where=f"--{name.replace('_', '-')}", fix="pass a valid value")
        return self

    def warp(self, logprobs: torch.Tensor) -> torch.Tensor:
        return logprobs if self.greedy else warp(logprobs, self.temperature, self.top_k, self.top_p)

    def rng(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(int(self.seed))
        return g


@dataclass
class Batch:
    ids: torch.Tensor  # [B, L] left padded
    mask: torch.Tensor  # [B, L] 1 on real tokens
    pos: torch.Tensor  # [B, L] position ids (0 on padding, like transformers' generate)
    prompts: list[str]


def encode(comp: Components, prompts: Sequence[str], extra_tokens: int, what: str = "prompt") -> Batch:
    """Tokenize and left-pad; refuse prompts that do not fit the context with ``extra_tokens`` more."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise EFTError("no prompt given", fix="pass --prompt TEXT")
    tok = comp.tokenizer
    rows = [list(tok(p)["input_ids"]) for p in prompts]
    return pad_rows(comp, rows, list(prompts), extra_tokens, what)


def pad_rows(comp: Components, rows: list[list[int]], prompts: list[str], extra: int, what: str) -> Batch:
    ctx = comp.context_length()
    for i, r in enumerate(rows):
        where = f"{what} {i + 1}" if len(rows) > 1 else what
        if not r:
            raise EFTError("is empty after tokenization", where=where, fix="give some text")
        if any(t >= comp.vocab_size or t < 0 for t in r):
            raise EFTError(
                "has token ids outside the models' vocabulary",
                where=where,
                fix="use the tokenizer that belongs to the models",
            )
        if ctx is not None and len(r) > ctx:
            raise EFTError(
                f"is {len(r)} tokens, longer than the models' context of {ctx} tokens "
                "(max_position_embeddings)",
                where=where,
                fix=f"shorten it to at most {ctx} tokens",
            )
        if ctx is not None and len(r) + extra > ctx:
            raise EFTError(
                f"{len(r)} tokens + {extra} new tokens exceed the models' context of {ctx} tokens",
                where=where,
                fix=f"lower --max-new-tokens to at most {ctx - len(r)} or shorten the prompt",
            )
    width = max(len(r) for r in rows)
    pad = comp.pad_id()
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    dev = comp.device
    return Batch(ids.to(dev), mask.to(dev), pos.to(dev), prompts)


def token_table(
    comp: Components, logits: Sequence[torch.Tensor], mix: torch.Tensor, tokens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token diagnostics for ``tokens`` (any leading shape) under every component."""
    v = comp.vocab_size
    lp = [F.log_softmax(x[..., :v].float(), dim=-1) for x in logits]
    at = tokens.unsqueeze(-1)
    base_arg = lp[0].argmax(-1)
    eft_arg = mix.argmax(-1)
    return {
        "eft": mix.gather(-1, at).squeeze(-1),
        "base": lp[0].gather(-1, at).squeeze(-1),
        "ft": torch.stack([lp[p.ft].gather(-1, at).squeeze(-1) for p in comp.pairs], -1),
        "ref": torch.stack([lp[p.ref].gather(-1, at).squeeze(-1) for p in comp.pairs], -1),
        "base_argmax": base_arg,
        "eft_argmax": eft_arg,
    }


def token_infos(comp: Components, rows: list[dict[str, Any]], ids: list[int]) -> list[TokenInfo]:
    """Rows of plain values (one dict per token, keys as in :func:`token_table`) -> TokenInfo list."""
    out = []
    for r, t in zip(rows, ids):
        out.append(
            TokenInfo(
                id=int(t),
                text=comp.tokenizer.decode([int(t)]),
                eft_logprob=r["eft"],
                base_logprob=r["base"],
                ft_logprob=r["ft"],
                ref_logprob=r["ref"],
                base_argmax=r["base_argmax"],
                eft_argmax=r["eft_argmax"],
                changed_argmax=r["base_argmax"] != r["eft_argmax"],
            )
        )
    return out


class Recorder:
    """Collects produced tokens and their diagnostics step by step, per row."""

    def __init__(self, comp: Components, batch: Batch, diagnostics: bool):
        self.comp = comp
        self.batch = batch
        self.diagnostics = diagnostics
        n = batch.ids.shape[0]
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.steps: list[tuple[dict[str, torch.Tensor], list[int]]] = []
        self.eos = torch.tensor(comp.eos_ids(), dtype=torch.long, device=batch.ids.device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=batch.ids.device)
        self.stopped = [False] * n

    def add(
        self,
        tokens: torch.Tensor,
        logits: Sequence[torch.Tensor] | None = None,
        mix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Record one token per row (finished rows get padding); returns the tokens to feed."""
        active = ~self.finished
        tokens = torch.where(active, tokens, torch.full_like(tokens, self.comp.pad_id()))
        table = token_table(self.comp, logits, mix, tokens) if self.diagnostics and mix is not None else None
        tok_list = tokens.tolist()
        rows = torch.nonzero(active).flatten().tolist()
        for b in rows:
            self.ids[b].append(tok_list[b])
        if table is not None:
            self.steps.append((table, rows))
        if self.eos.numel():
            hit = torch.isin(tokens, self.eos) & active
            for b in torch.nonzero(hit).flatten().tolist():
                self.stopped[b] = True
            self.finished |= hit
        return tokens

    def result(self, stats: dict[str, Any]) -> GenerationResult:
        gens = []
        per_row: list[list[dict[str, Any]]] = [[] for _ in self.batch.prompts]
        for table, rows in self.steps:
            cols = {k: v.detach().cpu().tolist() for k, v in table.items()}
            for b in rows:
                per_row[b].append({k: c[b] for k, c in cols.items()})
        for b, prompt in enumerate(self.batch.prompts):
            infos = token_infos(self.comp, per_row[b], self.ids[b]) if per_row[b] else []
            text = self.comp.tokenizer.decode(self.ids[b], skip_special_tokens=True)
            gens.append(Generation(prompt, self.ids[b], text, self.stopped[b], infos))
        stats = dict(stats)
        stats["new_tokens"] = sum(len(x) for x in self.ids)
        if stats.get("seconds"):
            stats["tokens_per_s"] = stats["new_tokens"] / stats["seconds"]
        return GenerationResult(gens, stats)


@torch.inference_mode()
def generate_plain(
    comp: Components,
    batch: Batch,
    beta: float,
    s: Settings,
    diagnostics: bool = True,
) -> GenerationResult:
    """One forward per model per step; every model keeps its own KV cache."""
    t0 = time.perf_counter()
    runners = [Runner(m, comp.vocab_size) for m in comp.models]
    for r in runners:
        r.reset()
    rng = s.rng(comp.device)
    rec = Recorder(comp, batch, diagnostics)
    mask = batch.mask
    next_pos = batch.pos[:, -1:] + 1
    logits = [r(batch.ids, mask, batch.pos, last_only=True)[:, -1] for r in runners]
    ones = torch.ones_like(mask[:, :1])
    steps = 0
    for step in range(s.max_new_tokens):
        mix = comp.mix(logits, beta)
        tokens = rec.add(choose(s.warp(mix), greedy=s.greedy, generator=rng), logits, mix)
        steps += 1
        if bool(rec.finished.all()) or step == s.max_new_tokens - 1:
            break
        mask = torch.cat([mask, ones], dim=1)
        logits = [r(tokens[:, None], mask, next_pos, last_only=True)[:, -1] for r in runners]
        next_pos = next_pos + 1
    return rec.result({"mode": "plain", "steps": steps, "seconds": time.perf_counter() - t0})
