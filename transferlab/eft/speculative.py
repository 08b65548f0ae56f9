"""Speculative EFT (Mitchell et al. 2023, sec. on speculative decoding).

The small fine-tuned model drafts ``k`` tokens; the large base and the small reference(s) score
the block in one forward pass each; standard accept/reject keeps the exact EFT distribution:
accept draft d with probability min(1, p(d) / q(d)), on the first rejection draw from the
normalized residual max(0, p - q), and draw a bonus token from p when every draft was accepted.

Batches: each row accepts its own number of drafts, but KV caches share one length, so every
row advances by the smallest count over the unfinished rows. Truncating a row's accepted prefix
at a point fixed by the other rows keeps its distribution exact (the rows are independent).
Caches keep every committed token except the newest ("pending"), which leads the next block.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from transferlab.eft.components import Components, Runner
from transferlab.eft.decode import Batch, Recorder, Settings
from transferlab.eft.mix import choose
from transferlab.eft.results import GenerationResult


def drafter_index(comp: Components) -> int:
    """The fine-tuned model of the heaviest pair drafts."""
    best = max(comp.pairs, key=lambda p: p.weight)
    return best.ft


def accept_counts(
    p_logprobs: torch.Tensor, q_logprobs: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """Leading accepted drafts per row: draft j is kept while u_j < p_j(d_j) / q_j(d_j).

    p_logprobs, q_logprobs: [B, k, V]; drafts, uniforms: [B, k]. Returns [B] counts in 0..k.
    """
    lp = p_logprobs.gather(-1, drafts[..., None]).squeeze(-1)
    lq = q_logprobs.gather(-1, drafts[..., None]).squeeze(-1)
    ok = uniforms < torch.exp(lp - lq)
    return ok.long().cumprod(-1).sum(-1)


def residual(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor | None) -> torch.Tensor:
    """Normalized residual max(0, p - q) per row ([B, V] probabilities); p where q is None or p == q."""
    p = p_logprobs.exp()
    if q_logprobs is None:
        return p
    res = (p - q_logprobs.exp()).clamp_min(0.0)
    total = res.sum(-1, keepdim=True)
    return torch.where(total > 0, res / total.clamp_min(1e-30), p)


@torch.inference_mode()
def generate_speculative(
    comp: Components,
    batch: Batch,
    beta: float,
    s: Settings,
    diagnostics: bool = True,
) -> GenerationResult:
    t0 = time.perf_counter()
    k = s.speculative
    runners = [Runner(m, comp.vocab_size) for m in comp.models]
    for r in runners:
        r.reset()
    d = drafter_index(comp)
    rng = s.rng(comp.device)
    rec = Recorder(comp, batch, diagnostics)
    n_rows = batch.ids.shape[0]
    rows = torch.arange(n_rows, device=batch.ids.device)
    if batch.ids.shape[1] > 1:
        for r in runners:
            r(batch.ids[:, :-1], batch.mask[:, :-1], batch.pos[:, :-1], last_only=True)
    pending, pend_pos, mask = batch.ids[:, -1], batch.pos[:, -1], batch.mask
    ones = torch.ones_like(mask[:, :1])
    produced = steps = drafted = accepted = 0
    while produced < s.max_new_tokens and not bool(rec.finished.all()):
        kk = min(k, s.max_new_tokens - produced - 1)
        past = mask.shape[1] - 1
        cur, q_logits, drafts = pending, [], []
        for i in range(kk + 1):
            m_i = torch.cat([mask] + [ones] * i, dim=1)
            lg = runners[d](cur[:, None], m_i, (pend_pos + i)[:, None], last_only=True)[:, -1]
            q_logits.append(lg)
            if i < kk:
                cur = choose(s.warp(F.log_softmax(lg, -1)), greedy=s.greedy, generator=rng)
                drafts.append(cur)
        block = torch.stack([pending, *drafts], dim=1)
        bmask = torch.cat([mask] + [ones] * kk, dim=1)
        bpos = pend_pos[:, None] + torch.arange(kk + 1, device=block.device)
        logits = [
            torch.stack(q_logits, 1) if j == d else r(block, bmask, bpos, last_only=False)
            for j, r in enumerate(runners)
        ]
        mix = comp.mix(logits, beta)  # [B, kk + 1, V]
        p = s.warp(mix)
        q = s.warp(F.log_softmax(logits[d][:, :kk], -1)) if kk else None
        if kk and s.greedy:
            n_acc = (block[:, 1:] == mix[:, :kk].argmax(-1)).long().cumprod(-1).sum(-1)
        elif kk:
            u = torch.rand(n_rows, kk, generator=rng, device=block.device)
            n_acc = accept_counts(p[:, :kk], q, block[:, 1:], u)
        else:
            n_acc = torch.zeros(n_rows, dtype=torch.long, device=block.device)
        if s.greedy:
            extra = mix[rows, n_acc].argmax(-1)
        else:
            q_at = None
            if q is not None:
                q_pad = torch.cat([q, torch.full_like(q[:, :1], float("-inf"))], dim=1)
                q_at = q_pad[rows, n_acc]
            extra = torch.multinomial(residual(p[rows, n_acc], q_at), 1, generator=rng).squeeze(-1)
        active = ~rec.finished
        m = min(int((n_acc + 1)[active].min()), s.max_new_tokens - produced)
        drafted += kk * int(active.sum())
        accepted += int(n_acc[active].sum())
        for j in range(m):
            proposal = block[:, j + 1] if j < kk else extra
            tok = torch.where(n_acc > j, proposal, extra)
            pending = rec.add(tok, [x[:, j] for x in logits], mix[:, j])
        for r in runners:
            r.crop(past + m)
        pend_pos = pend_pos + m
        mask = torch.cat([mask] + [ones] * m, dim=1)
        produced += m
        steps += 1
    stats = {
        "mode": "speculative",
        "draft_block": k,
        "steps": steps,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "seconds": time.perf_counter() - t0,
    }
    return rec.result(stats)
