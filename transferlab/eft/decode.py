"""Plain EFT decoding: batched prompts (left padding), one KV cache per model, per-row stops.

Every model has its own view of the batch (:class:`View`: ids, mask, positions), since each may
see the prompt in its own format (plain or chat); generated tokens go to all of them. A row stops
at its EOS, at one of ``stop`` strings (HF ``stop_strings`` semantics: the string's tokens are
kept), or when a ``stopping_criteria`` callable (a transformers ``StoppingCriteria``:
``(input_ids, scores) -> bool tensor [B]``) says so. ``logits_processors`` (transformers
``LogitsProcessor``s, ``(input_ids, scores) -> scores``) reshape the EFT log-probs before the
choice; ``input_ids`` is the base model's view of each row (prompt + produced tokens).
"""

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
    adaptive: bool = True
    stop: tuple[str, ...] = ()
    stopping_criteria: tuple[Any, ...] = ()
    logits_processors: tuple[Any, ...] = ()

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
        self.stop = tuple(self.stop or ())
        if any(not isinstance(x, str) or not x for x in self.stop):
            raise EFTError("stop strings must be non-empty text", where="--stop", fix="pass e.g. --stop '\\n\\n'")
        for name in ("stopping_criteria", "logits_processors"):
            items = tuple(getattr(self, name) or ())
            if any(not callable(x) for x in items):
                raise EFTError(f"every entry of {name} must be callable (input_ids, scores)", where=name,
                               fix="pass transformers StoppingCriteria / LogitsProcessor objects")
            setattr(self, name, items)
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
class View:
    """One model's view of a batch."""

    ids: torch.Tensor  # [B, L] left padded
    mask: torch.Tensor  # [B, L] 1 on real tokens
    pos: torch.Tensor  # [B, L] position ids (0 on padding, like transformers' generate)


@dataclass
class Batch:
    views: list[View]  # one per model of Components.models (shared objects where formats agree)
    prompts: list[str]

    @property
    def ids(self) -> torch.Tensor:
        return self.views[0].ids

    @property
    def mask(self) -> torch.Tensor:
        return self.views[0].mask

    @property
    def pos(self) -> torch.Tensor:
        return self.views[0].pos


def encode(comp: Components, prompts: Sequence[str], extra_tokens: int, what: str = "prompt") -> Batch:
    """Tokenize (each model in its own format) and left-pad; refuse prompts that do not fit the
    context with ``extra_tokens`` more."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise EFTError("no prompt given", fix="pass --prompt TEXT or --prompts-file PATH")
    prompts = list(prompts)
    views: dict[tuple[str, int], View] = {}
    out: list[View] = []
    for i, fmt in enumerate(comp.formats):
        tok = comp.tokenizer if fmt == "plain" else comp.model_tokenizers[i]
        key = (fmt, id(tok))
        if key not in views:
            label = what if fmt == "plain" else f"{what} (chat format)"
            rows = [render_within_context(comp, tok, p, fmt, f"{label} {j + 1}" if len(prompts) > 1 else label)
                    for j, p in enumerate(prompts)]
            views[key] = pad_view(comp, rows, extra_tokens, label)
        out.append(views[key])
    return Batch(out, prompts)


PREFIX_CHARS_PER_TOKEN = 16  # a prompt longer than this many characters per context token is first cut


def render_within_context(comp: Components, tok: Any, prompt: str, fmt: str, what: str) -> list[int]:
    """``render``, except that a prompt far longer than the models' context is refused from a prefix cut at a
    space (tokenizing all of a 10 MB prompt to learn that it does not fit took seconds). The prefix's words
    tokenize as they do in the whole prompt, so its count is a lower bound; when that does not settle it, the
    whole prompt is tokenized and ``pad_view`` judges."""
    from transferlab.eft.prompts import render

    ctx = comp.context_length()
    if ctx is not None and len(prompt) > PREFIX_CHARS_PER_TOKEN * (ctx + 1):
        cut = prompt.rfind(" ", 0, PREFIX_CHARS_PER_TOKEN * (ctx + 1))
        n = len(render(tok, prompt[:cut], fmt, comp.system)) if cut > 0 else 0
        if n > ctx:
            raise EFTError(f"is longer than the models' context of {ctx} tokens (its first {cut:,} of "
                           f"{len(prompt):,} characters are already {n:,} tokens)", where=what,
                           fix=f"shorten it to at most {ctx} tokens")
    return render(tok, prompt, fmt, comp.system)


def pad_rows(comp: Components, rows: list[list[int]], prompts: list[str], extra: int, what: str) -> Batch:
    """A batch in which every model sees the same token ids ``rows``."""
    view = pad_view(comp, rows, extra, what)
    return Batch([view] * len(comp.models), prompts)


def pad_view(comp: Components, rows: list[list[int]], extra: int, what: str) -> View:
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
    return View(ids.to(dev), mask.to(dev), pos.to(dev))


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
    """Collects produced tokens and their diagnostics step by step, per row, and decides stops."""

    def __init__(self, comp: Components, batch: Batch, diagnostics: bool, settings: Settings | None = None):
        self.comp = comp
        self.batch = batch
        self.diagnostics = diagnostics
        s = settings or Settings()
        self.stop_strings = tuple(s.stop)
        self.criteria = tuple(s.stopping_criteria)
        self.processors = tuple(s.logits_processors)
        n = batch.ids.shape[0]
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.steps: list[tuple[dict[str, torch.Tensor], list[int]]] = []
        self.eos = torch.tensor(comp.eos_ids(), dtype=torch.long, device=batch.ids.device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=batch.ids.device)
        self.stopped = [False] * n
        self.reason: list[str | None] = [None] * n
        self.seq = batch.ids  # the base model's view: prompt + produced tokens (pads on finished rows)
        self._tail = max((len(x) for x in self.stop_strings), default=0) + 16  # chars decoded per check

    def process(self, mix: torch.Tensor, seq: torch.Tensor | None = None) -> torch.Tensor:
        """The EFT log-probs [B, V] after the logits processors (renormalized)."""
        if not self.processors:
            return mix
        scores = mix
        for proc in self.processors:
            scores = proc(self.seq if seq is None else seq, scores)
        return F.log_softmax(scores.float(), dim=-1)

    def process_block(self, mix: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
        """``process`` at every position j of a [B, k + 1, V] block, after the first j drafts."""
        if not self.processors:
            return mix
        seq = self.seq
        cols = []
        for j in range(mix.shape[1]):
            ctx = torch.cat([seq, drafts[:, :j].to(seq.device)], dim=1)
            cols.append(self.process(mix[:, j], ctx))
        return torch.stack(cols, dim=1)

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
        if self.processors or self.criteria:
            self.seq = torch.cat([self.seq, tokens[:, None].to(self.seq.device)], dim=1)
        if self.eos.numel():
            hit = torch.isin(tokens, self.eos) & active
            for b in torch.nonzero(hit).flatten().tolist():
                self.stopped[b] = True
                self.reason[b] = "eos"
            self.finished |= hit
        if self.stop_strings:
            for b in rows:
                if self.finished[b]:
                    continue
                text = self.comp.tokenizer.decode(self.ids[b][-self._tail :], skip_special_tokens=False)
                if any(x in text for x in self.stop_strings):
                    self._finish(b, "stop")
        if self.criteria:
            scores = mix if mix is not None else torch.zeros(len(tok_list), 1)
            for crit in self.criteria:
                done = crit(self.seq, scores)
                flags = done.tolist() if isinstance(done, torch.Tensor) and done.dim() else [bool(done)] * len(tok_list)
                for b in rows:
                    if flags[b] and not self.finished[b]:
                        self._finish(b, "criteria")
        return tokens

    def _finish(self, b: int, why: str) -> None:
        self.finished[b] = True
        self.reason[b] = why

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
            gens.append(Generation(prompt, self.ids[b], text, self.stopped[b], infos, self.reason[b]))
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
    """One forward per model per step; every model keeps its own KV cache and its own view."""
    t0 = time.perf_counter()
    runners = [Runner(m, comp.vocab_size, comp.device) for m in comp.models]
    for r in runners:
        r.reset()
    rng = s.rng(comp.device)
    rec = Recorder(comp, batch, diagnostics, s)
    views = batch.views
    masks = [v.mask for v in views]
    next_pos = [v.pos[:, -1:] + 1 for v in views]
    logits = [r(v.ids, v.mask, v.pos, last_only=True)[:, -1] for r, v in zip(runners, views)]
    steps = 0
    for step in range(s.max_new_tokens):
        mix = comp.mix(logits, beta)
        tokens = rec.add(choose(s.warp(rec.process(mix)), greedy=s.greedy, generator=rng), logits, mix)
        steps += 1
        if bool(rec.finished.all()) or step == s.max_new_tokens - 1:
            break
        masks = [torch.cat([m, torch.ones_like(m[:, :1])], dim=1) for m in masks]
        logits = [r(tokens[:, None], m, p, last_only=True)[:, -1] for r, m, p in zip(runners, masks, next_pos)]
        next_pos = [p + 1 for p in next_pos]
    return rec.result({"mode": "plain", "steps": steps, "seconds": time.perf_counter() - t0})
