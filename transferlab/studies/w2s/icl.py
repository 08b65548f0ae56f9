"""Somerstep et al.'s setting in miniature: a latent concept prior, a transformer that learned it in context,
a biased weak labeller, and refinement by in-context learning.

- **The concept family** (the latent concepts): sparse parities with a polarity over ``bits`` boolean features,
  c(x) = (b + sum_{i in S} x_i) mod 2 with |S| in {1, 2} and b in {0, 1} (2 (d + d(d-1)/2) concepts; 42 at
  d = 6). A labelled example "x -> y" is one token (2 * 2^d of them, plus BOS); the *label words* of an input x
  are its two tokens "x -> 0" and "x -> 1", so p(y | x, context) is the next-token distribution over them.
  (A first version wrote x and y as two tokens; in 1,500 steps it never left the loss ln 2: one token per
  example lets the embedding hold each example's agreement with every concept, which attention then sums.)
- **The prior and its likelihood**: a pretraining sequence draws one concept uniformly, then pairs
  (x_i, y_i) with x_i uniform and y_i = c(x_i) flipped with probability ``noise``, written as BOS e_1 e_2 ...;
  the model is trained to predict every y_i from x_i and the examples before it. A transformer
  trained so approximates the Bayes predictor p(y | x, D) = sum_c p(c | D) p(y | x, c): in-context learning
  as implicit Bayesian inference over the concept prior, the paper's premise.
- **The target and the weak supervisor**: the target concept c* is drawn from the prior (by ``task_seed``);
  the weak labeller gets a fixed set of inputs wrong (a fraction ``weak_error`` of the input space, drawn per
  seed): its errors are a function of x, a bias, not noise, so a student that fits its labels copies them.
- **Refinement** (the paper's ICL refinement): for each weakly labelled example, the strong model reads k
  other weakly labelled examples in its context, and its next-token probabilities over the example's two label
  words are the refined label (or a label is sampled from them). A student (the strong model fine-tuned to
  answer with no demonstrations) then trains on the refined labels.
- **Misalignment**: the total-variation distance between a label distribution p(. | x) and the target
  concept's, p(y | x, c*) = 1 - noise on c*(x), averaged over the examples: the distance the paper bounds.

Everything here is a plain function of tensors and seeds; :mod:`.icl_trainer` drives it inside the w2s pipeline.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F

from transferlab.zoo.model import LMShape, ZooLM, new_lm


@dataclass(frozen=True)
class ConceptSpec:
    """The miniature's world: how many features, and the likelihood noise of the concept prior."""

    bits: int
    noise: float

    @property
    def n_inputs(self) -> int:
        return 2 ** self.bits

    @property
    def bos(self) -> int:
        """The token that starts every sequence (after the 2 * 2^d example tokens)."""
        return 2 * self.n_inputs

    @property
    def vocab_size(self) -> int:
        return 2 * self.n_inputs + 1

    def label_words(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 2) the label words of inputs x: the tokens "x -> 0" and "x -> 1"."""
        return torch.stack([2 * x, 2 * x + 1], dim=-1)


def concept_table(bits: int) -> torch.Tensor:
    """(M, 2^bits) long: each concept's label on every input (input id = the bits read as a binary number)."""
    x = torch.arange(2 ** bits)
    feats = torch.stack([(x >> i) & 1 for i in range(bits)], dim=1)  # (2^d, d)
    subsets = [(i,) for i in range(bits)] + list(combinations(range(bits), 2))
    rows = []
    for s in subsets:
        par = feats[:, list(s)].sum(1) % 2
        rows += [par, 1 - par]
    return torch.stack(rows)


def examples(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Example tokens: "x -> y" is token 2x + y (one token per labelled example)."""
    return 2 * x + y


def with_bos(tokens: torch.Tensor, spec: ConceptSpec) -> torch.Tensor:
    return torch.cat([torch.full((tokens.shape[0], 1), spec.bos, dtype=torch.long), tokens], dim=1)


def pretrain_batch(table: torch.Tensor, spec: ConceptSpec, batch: int, pairs: int, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, x, y): ``batch`` sequences BOS e_1 ... e_pairs of example tokens e_i = "x_i -> y_i", one concept per
    sequence from the uniform prior, labels flipped with probability ``spec.noise``."""
    c = torch.randint(len(table), (batch,), generator=gen)
    x = torch.randint(spec.n_inputs, (batch, pairs), generator=gen)
    y = table[c.unsqueeze(1), x]
    flip = (torch.rand(batch, pairs, generator=gen) < spec.noise).long()
    y = (y + flip) % 2
    return with_bos(examples(x, y), spec), x, y


def label_logits(logits: torch.Tensor, label_ids: torch.Tensor | list[int]) -> torch.Tensor:
    """The logits of the label words only: (..., V) -> (..., K), with ``label_ids`` either one list for every
    row or a (..., K) tensor of each row's own label words. Softmax of these is p(label | prompt)."""
    if isinstance(label_ids, torch.Tensor):
        return logits[label_ids] if logits.dim() == 1 else logits.gather(-1, label_ids)
    return logits[..., list(label_ids)]


def model_shape(spec: ConceptSpec, d_model: int, layers: int, pairs: int) -> LMShape:
    heads = max(1, d_model // 16)
    return LMShape(vocab_size=spec.vocab_size, d_model=d_model, n_layers=layers, n_heads=heads, d_ff=4 * d_model,
                   seq_len=pairs + 1)


def pretrain(spec: ConceptSpec, shape: LMShape, *, steps: int, batch: int, lr: float, seed: int,
             log_every: int = 0) -> tuple[ZooLM, list[tuple[int, float]]]:
    """Train a small Llama decoder on sequences from the concept prior. At every position the next token is an
    example "x -> y"; the loss is the cross-entropy of its label y among the two label words of its x, so the
    model learns p(y | x, the examples before). Returns the model and (step, loss) pairs."""
    table = concept_table(spec.bits)
    torch.manual_seed(seed)
    model = new_lm(shape, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pairs = shape.seq_len - 1
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.1, 1 - s / max(1, steps)))
    losses: list[tuple[int, float]] = []
    model.train()
    for step in range(steps):
        ids, x, y = pretrain_batch(table, spec, batch, pairs, gen)
        logits = label_logits(model(ids[:, :-1]), spec.label_words(x))  # (B, P, 2)
        loss = F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            losses.append((step, float(loss.detach())))
    model.eval()
    return model, losses


def bayes_label_probs(table: torch.Tensor, spec: ConceptSpec, ctx_x: torch.Tensor, ctx_y: torch.Tensor,
                      query: torch.Tensor) -> torch.Tensor:
    """The Bayes predictor under the concept prior, p(y = 1 | query, context), (B,) for contexts (B, k): the
    target the pretrained transformer approximates (for tests and the report's reference curve)."""
    agree = table[:, ctx_x] == ctx_y.unsqueeze(0)  # (M, B, k)
    lo = torch.log(torch.tensor(spec.noise)), torch.log(torch.tensor(1 - spec.noise))
    loglik = torch.where(agree, lo[1], lo[0]).sum(-1)  # (M, B)
    post = torch.softmax(loglik, dim=0)
    p1_given_c = torch.where(table[:, query] == 1, 1 - spec.noise, spec.noise)  # (M, B)
    return (post * p1_given_c).sum(0)


@torch.no_grad()
def refine(model: ZooLM, spec: ConceptSpec, x: torch.Tensor, weak: torch.Tensor, queries: torch.Tensor,
           pool: torch.Tensor, k: int, gen: torch.Generator, batch: int = 512) -> torch.Tensor:
    """ICL refinement: (len(queries), 2) label probabilities. Each query's prompt is BOS and k examples drawn at
    random (without replacement) from ``pool`` (never the query itself) with their weak labels (``weak``: (n,)
    hard labels); its label is read from the next-token distribution over its two label words "x -> 0" and
    "x -> 1"."""
    from transferlab.studies.w2s.icl_refine import pick_demos

    demos = pick_demos(queries, pool, k, gen)
    out = torch.empty(len(queries), 2)
    for lo in range(0, len(queries), batch):
        q, ctx = queries[lo : lo + batch], demos[lo : lo + batch]
        ids = with_bos(examples(x[ctx], weak[ctx]), spec)
        logits = label_logits(model(ids)[:, -1], spec.label_words(x[q]))
        out[lo : lo + len(q)] = torch.softmax(logits, -1)
    return out


def misalignment(probs: torch.Tensor, target_labels: torch.Tensor, noise: float) -> torch.Tensor:
    """Per example: the total-variation distance between a label distribution (n, 2) and the target concept's
    p(y | x, c*) (1 - noise on the target label): |p(c*(x)) - (1 - noise)|."""
    p_target = probs.gather(1, target_labels.long().unsqueeze(1)).squeeze(1)
    return (p_target - (1 - noise)).abs()


def finetune(model: ZooLM, spec: ConceptSpec, x: torch.Tensor, train_idx: torch.Tensor, train_probs: torch.Tensor,
             val_idx: torch.Tensor, val_probs: torch.Tensor, *, steps: int, batch: int, lr: float, seed: int,
             eval_every: int, select: str) -> tuple[torch.Tensor, int]:
    """The student: a copy of the strong model fine-tuned to answer without demonstrations (the prompt is BOS
    alone; the label of x is read from its two label words), by soft cross-entropy on the given labels. Selected
    on ``val_probs`` (its own supervision, never gold for a student) when ``select == 'val'``, else its last step.
    Returns its (2^d, 2) label probabilities on every input and the step chosen."""
    student = copy.deepcopy(model)
    student.train()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    bos = torch.full((1, 1), spec.bos, dtype=torch.long)
    every_word = spec.label_words(torch.arange(spec.n_inputs))  # (2^d, 2)

    def logp_all() -> torch.Tensor:
        return F.log_softmax(label_logits(student(bos)[0, -1], every_word), -1)

    def predict() -> torch.Tensor:
        student.eval()
        with torch.no_grad():
            p = logp_all().exp()
        student.train()
        return p

    best, best_step, best_acc = predict(), 0, -1.0
    for step in range(1, steps + 1):
        rows = torch.randint(len(train_idx), (min(batch, len(train_idx)),), generator=gen)
        logp = logp_all()[x[train_idx[rows]]]
        loss = -(train_probs[rows] * logp).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if select == "val" and (step % eval_every == 0 or step == steps):
            p = predict()
            acc = float((p[x[val_idx]].argmax(1) == val_probs.argmax(1)).float().mean())
            if acc > best_acc:
                best, best_step, best_acc = p, step, acc
    if select != "val":
        best, best_step = predict(), steps
    return best, best_step
