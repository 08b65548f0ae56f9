"""Multiple-choice benchmarks and an SFT set built from the standard library, and their scoring.

Both come from the stdlib files the zoo never trains on: the validation split of the built-in
corpora (:func:`transferlab.data.corpora.in_val`, the same ``val_percent``). Those files are split
again by hash, ``sha256("zoo-pairs|" + path) % 2``: 0 -> benchmark files, 1 -> SFT files, so the
fine-tuning set and the benchmarks never share a file.

Benchmarks (category in brackets), each item with 4 choices and one gold answer:

- ``next_line`` [code]: a few lines of a function (docstring removed, ``ast.unparse`` form) ->
  the true next line, or a line of another function re-indented to the same depth.
- ``keyword`` [code]: the lines before a statement -> the statement with its real keyword, or
  with another keyword of its group (return/yield/raise/assert, or if/elif/while/with).
- ``doc_continuation`` [docs]: the first words of a docstring -> its next 6 words, or 6 words
  from another docstring.
- ``doc_word_order`` [docs]: the first words of a docstring -> its next 6 words in their order, or the
  same 6 words shuffled (minimal pairs, as in BLiMP: the same unigram frequencies, so only the model's
  knowledge of English word order decides).
- ``doc_to_name`` [docs, not in the default set]: ``\"\"\"summary\"\"\"\\ndef`` -> `` name(`` of the
  documented function, or the name of another function. The zoo's corpora never put a docstring next to its
  definition (``prose`` holds the docstrings, ``code`` the code without them), so before SFT this is at chance
  by construction: it measures what the SFT set (docstring -> code) teaches, not pretraining. Opt in with
  ``benchmarks=[..., doc_to_name]``.

Distractors (except ``keyword``'s) are the 3 of 24 random draws closest to the gold in length
(characters), so that a summed log-likelihood is not decided by length alone.

Scoring follows lm-evaluation-harness's ``loglikelihood``: trailing whitespace of the context
moves to the continuation; ``whole = enc(context + continuation)``, the context is its first
``len(enc(context))`` tokens and the continuation the rest; a choice's score is the summed
log-probability of its continuation tokens given everything before them (left-truncated to the
model's window). Accuracy = argmax is gold; confidence = softmax over the choices' scores at gold; continuous =
the gold choice's summed log-probability divided by its continuation's characters (DataDecide's length-normalized
likelihood of the correct answer).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferlab.core.errors import DataError
from transferlab.data.corpora import in_val, stdlib_files

BENCHMARK_CATEGORIES: dict[str, str] = {  # the default set
    "next_line": "code",
    "keyword": "code",
    "doc_continuation": "docs",
    "doc_word_order": "docs",
}
ALL_BENCHMARKS: dict[str, str] = {**BENCHMARK_CATEGORIES, "doc_to_name": "docs"}
KEYWORD_GROUPS = (("return", "yield", "raise", "assert"), ("if", "elif", "while", "with"))
N_CHOICES = 4


@dataclass(frozen=True)
class MCItem:
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass
class _Function:
    name: str
    summary: str  # first paragraph of the docstring, one line
    words: list[str]  # all words of the docstring
    lines: list[str]  # the function without its docstring, ast.unparse form


def heldout_files(part: str, val_percent: float = 10.0) -> list[tuple[str, str]]:
    """(relative path, source) of held-out stdlib files: ``part`` is "bench" or "sft"."""
    return list(_heldout_files(part, val_percent))


@functools.lru_cache(maxsize=8)
def _heldout_files(part: str, val_percent: float) -> tuple[tuple[str, str], ...]:
    want = {"bench": 0, "sft": 1}[part]
    out = []
    for rel, p in stdlib_files():
        if not in_val(rel, val_percent):
            continue
        if int(hashlib.sha256(f"zoo-pairs|{rel}".encode()).hexdigest(), 16) % 2 != want:
            continue
        try:
            out.append((rel, p.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return tuple(out)


def functions_of(source: str) -> list[_Function]:
    """Functions of one source with a docstring, in source order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc or node.name.startswith("__"):
            continue
        node.body = node.body[1:] or [ast.Pass()]
        try:
            lines = ast.unparse(node).splitlines()
        except (ValueError, RecursionError):
            continue
        summary = " ".join(doc.split("\n\n")[0].split())
        out.append(_Function(node.name, summary, doc.split(), lines))
    out.sort(key=lambda f: f.name)
    return out


def collect_functions(part: str, val_percent: float = 10.0) -> list[_Function]:
    funcs = []
    for _, src in heldout_files(part, val_percent):
        funcs.extend(functions_of(src))
    return funcs


# ---- the SFT set ---------------------------------------------------------------------------------
def sft_documents(val_percent: float = 10.0, max_lines: int = 6) -> list[str]:
    """Instruction-like documents: ``\"\"\"summary\"\"\"`` then the function's first lines (name, code)."""
    docs = []
    for f in collect_functions("sft", val_percent):
        body = "\n".join(f.lines[:max_lines])
        head = body.split("def ", 1)[-1] if "def " in body else body
        docs.append(f'"""{f.summary}"""\ndef {head}')
    if len(docs) < 4:
        raise DataError(f"only {len(docs)} SFT documents in the held-out stdlib files",
                        fix="raise val_percent")
    return docs


# ---- benchmarks ----------------------------------------------------------------------------------
def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _pick(rng: random.Random, pool: Sequence[str], gold: str, k: int, n_draw: int = 24) -> list[str] | None:
    """``k`` distinct distractors: of ``n_draw`` random draws from ``pool``, the ``k`` closest to the
    gold in length (characters), so that summed log-likelihoods are not decided by length alone."""
    seen = {gold}
    draws: list[str] = []
    for _ in range(n_draw):
        c = pool[rng.randrange(len(pool))] if pool else gold
        if c not in seen:
            seen.add(c)
            draws.append(c)
    draws.sort(key=lambda c: abs(len(c) - len(gold)))
    return draws[:k] if len(draws) >= k else None


def _item(rng: random.Random, context: str, gold: str, distractors: list[str]) -> MCItem:
    choices = [gold, *distractors]
    order = list(range(len(choices)))
    rng.shuffle(order)
    return MCItem(context, tuple(choices[i] for i in order), order.index(0))


def _next_line(funcs: list[_Function], rng: random.Random, n_ctx: int = 4) -> list[MCItem]:
    pool = [ln.strip() for f in funcs for ln in f.lines[1:] if 6 <= len(ln.strip()) <= 60]
    items = []
    for f in funcs:
        cands = [i for i in range(2, len(f.lines)) if 6 <= len(f.lines[i].strip()) <= 60]
        if not cands:
            continue
        i = cands[rng.randrange(len(cands))]
        gold = f.lines[i]
        ind = _indent(gold)
        d = _pick(rng, pool, gold.strip(), N_CHOICES - 1)
        if d is None:
            continue
        context = "\n".join(f.lines[max(0, i - n_ctx):i]) + "\n"
        items.append(_item(rng, context, gold, [ind + x for x in d]))
    return items


def _keyword(funcs: list[_Function], rng: random.Random, n_ctx: int = 4) -> list[MCItem]:
    items = []
    for f in funcs:
        cands = []
        for i in range(1, len(f.lines)):
            s = f.lines[i].strip()
            kw = s.split(" ", 1)[0].rstrip(":")
            for group in KEYWORD_GROUPS:
                if kw in group and len(s) <= 60:
                    cands.append((i, kw, group))
        if not cands:
            continue
        i, kw, group = cands[rng.randrange(len(cands))]
        line = f.lines[i]
        ind, s = _indent(line), line.strip()
        rest = s[len(kw):]
        others = [k for k in group if k != kw]
        context = "\n".join(f.lines[max(0, i - n_ctx):i]) + "\n" + ind
        items.append(_item(rng, context, s, [k + rest for k in others]))
    return items


def _doc_continuation(funcs: list[_Function], rng: random.Random, span: int = 6) -> list[MCItem]:
    docs = [f.words for f in funcs if len(f.words) >= 8 + span]
    items = []
    for w in docs:
        k = min(len(w) - span, max(6, len(w) // 3))
        gold = " " + " ".join(w[k:k + span])
        pool = []
        for _ in range(24):
            o = docs[rng.randrange(len(docs))]
            j = rng.randrange(0, len(o) - span + 1)
            pool.append(" " + " ".join(o[j:j + span]))
        d = _pick(rng, pool, gold, N_CHOICES - 1)
        if d is not None:
            items.append(_item(rng, " ".join(w[max(0, k - 24):k]), gold, d))
    return items


def _doc_word_order(funcs: list[_Function], rng: random.Random, span: int = 6) -> list[MCItem]:
    items = []
    for f in funcs:
        w = f.words
        if len(w) < 8 + span:
            continue
        k = min(len(w) - span, max(6, len(w) // 3))
        words = w[k:k + span]
        gold = " " + " ".join(words)
        seen, d = {gold}, []
        for _ in range(24):
            perm = list(words)
            rng.shuffle(perm)
            c = " " + " ".join(perm)
            if c not in seen:
                seen.add(c)
                d.append(c)
            if len(d) == N_CHOICES - 1:
                break
        if len(d) == N_CHOICES - 1:
            items.append(_item(rng, " ".join(w[max(0, k - 24):k]), gold, d))
    return items


def _doc_to_name(funcs: list[_Function], rng: random.Random) -> list[MCItem]:
    names = sorted({f.name for f in funcs})
    items = []
    for f in funcs:
        if not re.match(r"^[A-Za-z]", f.summary) or len(f.summary) > 160:
            continue
        d = _pick(rng, names, f.name, N_CHOICES - 1)
        if d is not None:
            items.append(_item(rng, f'"""{f.summary}"""\ndef', f" {f.name}(", [f" {x}(" for x in d]))
    return items


_BUILDERS = {"next_line": _next_line, "keyword": _keyword, "doc_continuation": _doc_continuation,
             "doc_word_order": _doc_word_order, "doc_to_name": _doc_to_name}


def build_benchmarks(tok: Any, *, n_items: int, max_cont_tokens: int, max_ctx_chars: int = 400,
                     seed: int = 0, val_percent: float = 10.0,
                     names: Sequence[str] | None = None) -> dict[str, list[MCItem]]:
    """``n_items`` items per benchmark of ``names`` (default: :data:`BENCHMARK_CATEGORIES`; fewer raises
    DataError), every choice at most ``max_cont_tokens`` tokens, drawn deterministically (``seed``) from the
    benchmark files."""
    funcs = collect_functions("bench", val_percent)
    out: dict[str, list[MCItem]] = {}
    for name in (names if names is not None else BENCHMARK_CATEGORIES):
        builder = _BUILDERS[name]
        rng = random.Random(f"{seed}|{name}")
        cands = builder(funcs, rng)
        rng.shuffle(cands)
        items = []
        for it in cands:
            if len(items) == n_items:
                break
            if len(it.context) > max_ctx_chars:
                it = MCItem(it.context[-max_ctx_chars:], it.choices, it.gold)
            if all(len(encode_pair(tok, it.context, c)[1]) <= max_cont_tokens for c in it.choices):
                items.append(it)
        if len(items) < n_items:
            raise DataError(f"benchmark '{name}' has {len(items)} usable items, fewer than n_items={n_items}",
                            where="zoo pairs benchmarks", fix="lower n_items or raise seq_len")
        out[name] = items
    return out


# ---- scoring -------------------------------------------------------------------------------------
def encode_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them (see the module docstring)."""
    n = len(context) - len(context.rstrip())
    if n:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    if len(ctx) >= len(whole):  # a merge swallowed the boundary: encode the parts separately
        return ctx, tok(continuation, add_special_tokens=False)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx):]


@torch.no_grad()
def loglikelihoods(model: Any, pairs: Sequence[tuple[list[int], list[int]]], max_len: int,
                   pad_id: int, batch: int = 64) -> np.ndarray:
    """Summed log p(continuation | context) per pair; sequences left-truncated to ``max_len`` inputs."""
    model.eval()
    out = np.empty(len(pairs))
    seqs = []
    for ctx, cont in pairs:
        if not 0 < len(cont) <= max_len:
            raise DataError(f"a continuation of {len(cont)} tokens does not fit a window of {max_len}",
                            fix="shorten the choices or raise seq_len")
        ids = (list(ctx) + list(cont))[-(max_len + 1):]
        seqs.append((ids, len(cont)))
    for s in range(0, len(seqs), batch):
        chunk = seqs[s:s + batch]
        width = max(len(ids) for ids, _ in chunk) - 1
        x = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for r, (ids, _) in enumerate(chunk):
            x[r, : len(ids) - 1] = torch.tensor(ids[:-1])
        logp = torch.log_softmax(model(input_ids=x, use_cache=False).logits.float(), dim=-1)
        for r, (ids, n_cont) in enumerate(chunk):
            t = len(ids) - 1
            tgt = torch.tensor(ids[1:])[t - n_cont:]
            out[s + r] = float(logp[r, t - n_cont:t].gather(-1, tgt[:, None]).sum())
    return out


def choice_stats(ll: np.ndarray, gold: int) -> tuple[bool, float]:
    """(argmax is gold, softmax of the log-likelihoods at gold) of one item."""
    p = np.exp(ll - ll.max())
    p /= p.sum()
    return bool(int(np.argmax(ll)) == gold), float(p[gold])


def continuation_chars(item: MCItem, choice: str) -> int:
    """Characters of a choice's continuation as scored: the context's trailing whitespace moves to it."""
    return len(item.context) - len(item.context.rstrip()) + len(choice)


def score_items(model: Any, tok: Any, items: Sequence[MCItem], max_len: int) -> dict[str, np.ndarray]:
    """Per item: ``correct`` (argmax is gold), ``p_gold`` (softmax of the choices' log-likelihoods at gold),
    ``p_max``, ``brier`` (multi-class Brier term) and ``continuous``, the gold continuation's log-likelihood per
    character (DataDecide's continuous score, length-normalized by characters)."""
    pairs = [encode_pair(tok, it.context, c) for it in items for c in it.choices]
    ll = loglikelihoods(model, pairs, max_len, tok.eos_token_id)
    out: dict[str, list[float]] = {k: [] for k in ("correct", "p_gold", "p_max", "brier", "continuous")}
    k = 0
    for it in items:
        lli = ll[k:k + len(it.choices)]
        k += len(it.choices)
        p = np.exp(lli - lli.max())
        p /= p.sum()
        a, c = choice_stats(lli, it.gold)
        onehot = np.zeros_like(p)
        onehot[it.gold] = 1.0
        out["correct"].append(float(a))
        out["p_gold"].append(c)
        out["p_max"].append(float(p.max()))
        out["brier"].append(float(((p - onehot) ** 2).sum()))
        out["continuous"].append(float(lli[it.gold]) / continuation_chars(it, it.choices[it.gold]))
    return {key: np.array(v) for key, v in out.items()}


def score_benchmark(model: Any, tok: Any, items: Sequence[MCItem], max_len: int) -> dict[str, float]:
    """Mean accuracy, mean confidence (p(gold)) and mean continuous score of ``model`` on ``items``."""
    s = score_items(model, tok, items, max_len)
    return {"accuracy": float(np.mean(s["correct"])), "confidence": float(np.mean(s["p_gold"])),
            "continuous": float(np.mean(s["continuous"])), "n_items": len(items)}
