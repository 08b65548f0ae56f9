"""Speculative EFT (Mitchell et al. 2023, sec. on speculative decoding).

The small fine-tuned model drafts ``k`` tokens; the large base and the small reference(s) score
the block in one forward pass each; standard accept/reject keeps the exact EFT distribution:
accept draft d with probability min(1, p(d) / q(d)), on the first rejection draw from the
normalized residual max(0, p - q), and draw a bonus token from p when every draft was accepted.

Batches: each row accepts its own number of drafts, but KV caches share one length, so every
row advances by the smallest count over the unfinished rows. Truncating a row's accepted prefix
at a point fixed by the other rows keeps its distribution exact (the rows are independent).
Caches keep every committed token except the newest ("pending"), which leads the next block.

Draft length (``adaptive=True``, the default): the block grows by two after a fully accepted block
(up to ``speculative``) and otherwise shrinks to halfway between its length and one more than the
drafts accepted; when even a one-token draft is rejected, decoding falls back to plain EFT steps
(a block of zero drafts costs one forward per model, as plain decoding does) for 1, 2, 4, ... 64
steps before it drafts again.
A draft length chosen from the past keeps every committed token's distribution exact, so the
output is still the EFT distribution (token for token the same when greedy). With acceptance near
zero this runs near plain EFT's speed instead of paying for k rejected drafts at every step.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from transferlab.eft.components import Components, Runner
from transferlab.eft.decode import Batch, Recorder, Settings
from transferlab.eft.mix import choose
from transferlab.eft.results import GenerationResult


class DraftLength:
    """The adaptive draft-length rule of the module docstring (a fixed ``k`` when not adaptive)."""

    def __init__(self, k_max: int, adaptive: bool = True, max_wait: int = 64):
        self.k_max, self.adaptive, self.max_wait = k_max, adaptive, max_wait
        self.k = k_max
        self.wait = 0
        self.backoff = 1
        self.plain_steps = 0

    def next(self) -> int:
        if self.wait > 0:
            self.wait -= 1
            self.plain_steps += 1
            return 0
        return self.k

    def update(self, drafted: int, accepted: int) -> None:
        if not self.adaptive or drafted == 0:
            return
        if accepted >= drafted:
            self.k = min(self.k_max, drafted + 2)
            self.backoff = 1
        elif accepted == 0 and drafted == 1:
            self.k = 1
            self.wait = self.backoff
            self.backoff = min(2 * self.backoff, self.max_wait)
        else:
            self.k = max(1, (drafted + accepted + 1) // 2)
            if accepted:
                self.backoff = 1


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
    dev = comp.device
    runners = [Runner(m, comp.vocab_size, dev) for m in comp.models]
    for r in runners:
        r.reset()
    d = drafter_index(comp)
    rng = s.rng(dev)
    rec = Recorder(comp, batch, diagnostics, s)
    n_rows = batch.ids.shape[0]
    rows = torch.arange(n_rows, device=dev)
    views = batch.views
    for r, v in zip(runners, views):
        if v.ids.shape[1] > 1:
            r(v.ids[:, :-1], v.mask[:, :-1], v.pos[:, :-1], last_only=True)
    pend = [v.ids[:, -1] for v in views]  # per model: its last prompt token, then the last committed one
    pos = [v.pos[:, -1] for v in views]
    masks = [v.mask for v in views]
    plan = DraftLength(s.speculative, s.adaptive)
    lengths: dict[int, int] = {}
    produced = steps = drafted = accepted = 0
    while produced < s.max_new_tokens and not bool(rec.finished.all()):
        kk = min(plan.next(), s.max_new_tokens - produced - 1)
        lengths[kk] = lengths.get(kk, 0) + 1
        cur, q_logits, drafts = pend[d], [], []
        for i in range(kk + 1):
            m_i = torch.cat([masks[d], torch.ones_like(masks[d][:, :1]).expand(-1, i)], dim=1)
            lg = runners[d](cur[:, None], m_i, (pos[d] + i)[:, None], last_only=True)[:, -1]
            q_logits.append(lg)
            if i < kk:
                cur = choose(s.warp(F.log_softmax(lg, -1)), greedy=s.greedy, generator=rng)
                drafts.append(cur)
        logits = []
        for j, r in enumerate(runners):
            if j == d:
                logits.append(torch.stack(q_logits, 1))
                continue
            block = torch.stack([pend[j].to(dev), *drafts], dim=1)
            bmask = torch.cat([masks[j], torch.ones_like(masks[j][:, :1]).expand(-1, kk)], dim=1)
            bpos = pos[j][:, None] + torch.arange(kk + 1, device=pos[j].device)
            logits.append(r(block, bmask, bpos, last_only=False))
        mix = comp.mix(logits, beta)  # [B, kk + 1, V]
        dr = torch.stack(drafts, dim=1) if kk else torch.zeros(n_rows, 0, dtype=torch.long, device=dev)
        target = rec.process_block(mix, dr)  # after the logits processors, at every block position
        p = s.warp(target)
        q = s.warp(F.log_softmax(logits[d][:, :kk], -1)) if kk else None
        if kk and s.greedy:
            n_acc = (dr == target[:, :kk].argmax(-1)).long().cumprod(-1).sum(-1)
        elif kk:
            u = torch.rand(n_rows, kk, generator=rng, device=dev)
            n_acc = accept_counts(p[:, :kk], q, dr, u)
        else:
            n_acc = torch.zeros(n_rows, dtype=torch.long, device=dev)
        if s.greedy:
            extra = target[rows, n_acc].argmax(-1)
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
        plan.update(kk, int(n_acc[active].min()))
        tok = extra
        for j in range(m):
            proposal = dr[:, j] if j < kk else extra
            tok = rec.add(torch.where(n_acc > j, proposal, extra), [x[:, j] for x in logits], mix[:, j])
            if bool(rec.finished.all()):
                m = j + 1
                break
        for i, r in enumerate(runners):
            r.crop(masks[i].shape[1] - 1 + m)
            pos[i] = pos[i] + m
            masks[i] = torch.cat([masks[i], torch.ones_like(masks[i][:, :1]).expand(-1, m)], dim=1)
            pend[i] = tok
        produced += m
        steps += 1
    stats = {
        "mode": "speculative",
        "draft_block": s.speculative,
        "adaptive": s.adaptive,
        "draft_lengths": {str(k): v for k, v in sorted(lengths.items())},
        "plain_steps": plan.plain_steps,
        "steps": steps,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "seconds": time.perf_counter() - t0,
    }
    return rec.result(stats)
