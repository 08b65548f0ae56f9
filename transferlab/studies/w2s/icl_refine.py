"""The ``icl-refine`` label method on any causal LM (Somerstep et al., arXiv:2405.16236): refinement by
in-context learning.

For each weakly labelled example the strong causal LM reads a prompt of k other weakly labelled examples,
each written with the template (``{text}`` and ``{label}``, the label as its label word), then the example's
own text up to where its label word would go. The refined label is its next-token distribution restricted to
the label words (each word's first token), renormalized, or a label sampled from it (the paper samples).
The student then trains on the refined labels.

The pieces are plain functions (prompt building, label-word tokens, reading probabilities), so the miniature
of :mod:`.icl` and users' Hugging Face or zoo models share the same reading: softmax over the label words'
next-token logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from transferlab.core.errors import ConfigError


def check_template(template: str) -> str | None:
    """None when the template is usable, else what is wrong (one line)."""
    if template.count("{text}") != 1 or template.count("{label}") != 1:
        return "needs exactly one {text} and one {label}"
    if template.index("{text}") > template.index("{label}"):
        return "{text} must come before {label} (the label is read after the text)"
    rest = template.replace("{text}", "").replace("{label}", "")
    if "{" in rest or "}" in rest:
        return "has a brace other than {text} and {label} (write literal braces as text without them)"
    return None


def render(template: str, text: str, label: str) -> str:
    """One demonstration: the template with its text and label word filled in."""
    return template.replace("{text}", text).replace("{label}", label)


def query_prompt(template: str, text: str) -> tuple[str, str]:
    """(prompt, gap): the template filled with the query's text, up to its label word, with the trailing
    whitespace taken off (tokenizers put a word's leading space inside its token); ``gap`` is that whitespace."""
    head = template.split("{label}")[0].replace("{text}", text)
    stripped = head.rstrip()
    return stripped, head[len(stripped):]


def build_prompt(template: str, demos: list[tuple[str, str]], query: str) -> str:
    """k demonstrations (text, label word), then the query up to its label."""
    return "".join(render(template, t, w) for t, w in demos) + query_prompt(template, query)[0]


def encode(tok: Any, text: str) -> list[int]:
    """Token ids without the tokenizer's own specials (a BERT-style [SEP] would end the prompt), after the BOS
    token where the tokenizer has one."""
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    bos = getattr(tok, "bos_token_id", None)
    return [bos, *ids] if bos is not None else ids


def label_token_ids(tok: Any, template: str, words: list[str]) -> list[int]:
    """Each label word's first token as it follows the template's prompt (``Label: yes`` -> the id of
    `` yes`` in a GPT-2-style vocabulary, of ``yes`` in a WordPiece one). Refuses words that share it."""
    anchor, gap = query_prompt(template, "text")
    a = encode(tok, anchor)
    ids = []
    for w in words:
        b = encode(tok, anchor + gap + w)
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        if i >= len(b):
            raise ConfigError(f"label word {w!r} adds no token after the prompt", where="icl_label_words",
                              fix="give non-empty label words")
        ids.append(int(b[i]))
    if len(set(ids)) != len(ids):
        first = [tok.convert_ids_to_tokens(i) for i in ids]
        raise ConfigError(f"the label words {words} start with the same token ({first}), so their "
                          "probabilities cannot be told apart", where="icl_label_words",
                          fix="choose label words whose first tokens differ (e.g. yes,no or A,B)")
    return ids


def sample_labels(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One-hot labels drawn from each row's distribution (the paper samples the strong model's answer)."""
    draw = torch.multinomial(probs.float().clamp_min(0), 1, generator=gen).squeeze(1)
    return torch.nn.functional.one_hot(draw, probs.shape[1]).to(probs.dtype)


def pick_demos(queries: torch.Tensor, pool: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """(len(queries), k) indices: k examples of ``pool`` drawn without replacement for each query, never the
    query itself."""
    if len(pool) - 1 < k:
        raise ConfigError(f"icl_k={k} demonstrations need at least {k + 1} weakly labelled examples, the split has "
                          f"{len(pool)}", where="icl_k", fix="lower icl_k or raise n_transfer")
    out = torch.empty(len(queries), k, dtype=torch.long)
    for j, qi in enumerate(queries.tolist()):
        cand = pool[torch.randperm(len(pool), generator=gen)[: k + 1]]
        out[j] = cand[cand != qi][:k]
    return out


@torch.no_grad()
def next_token_label_probs(model: Any, tok: Any, prompts: list[str], label_ids: list[int], *,
                           max_length: int | None = None, batch_size: int = 8, device: str = "cpu") -> torch.Tensor:
    """(len(prompts), K): softmax over the label words' logits at each prompt's next token. Prompts longer
    than ``max_length`` tokens keep their end (the query); batches are right-padded and each row is read at
    its own last token, so a causal model never sees a pad."""
    enc = [encode(tok, p) for p in prompts]
    if max_length is not None:
        enc = [e[-max_length:] for e in enc]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = torch.empty(len(prompts), len(label_ids))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), int(pad), dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(enc[i])] = torch.tensor(enc[i])
            mask[r, : len(enc[i])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = logits[torch.arange(len(idx)), mask.sum(1).to(device) - 1]
        out[torch.tensor(idx)] = torch.softmax(last[:, label_ids].float(), -1).cpu()
    return out


def load_lm(model_path: str | Path, device: str = "cpu") -> tuple[Any, Any, str]:
    """(model, tokenizer, device) of a local causal LM (a zoo model's folder or the user's)."""
    from transferlab.core.devices import resolve_device
    from transferlab.models.hf_causal import load_causal_lm, load_tokenizer

    dev = resolve_device(device, where="device")
    return load_causal_lm(model_path).to(dev), load_tokenizer(model_path, role="strong"), str(dev)


def refine_texts(model_path: str | Path | tuple[Any, Any, str], texts: list[str], weak: torch.Tensor,
                 queries: torch.Tensor, pool: torch.Tensor, *, k: int, template: str, words: list[str], seed: int,
                 max_length: int, device: str = "cpu") -> torch.Tensor:
    """ICL refinement of ``queries`` (indices into ``texts``) by the causal LM at ``model_path`` (or an already
    loaded ``(model, tokenizer, device)``): k demonstrations from ``pool`` with their weak labels (the argmax of
    ``weak``'s rows) in each prompt. (len(queries), K) probabilities over the label words."""
    from transferlab.models.hf_causal import context_length

    model, tok, dev = model_path if isinstance(model_path, tuple) else load_lm(model_path, device)
    label_ids = label_token_ids(tok, template, words)
    hard = weak.argmax(-1)
    demos = pick_demos(queries, pool, k, torch.Generator().manual_seed(seed))
    prompts = [build_prompt(template, [(texts[j], words[int(hard[j])]) for j in row.tolist()], texts[int(q)])
               for q, row in zip(queries, demos)]
    ctx = context_length(model)
    per_text = max_length * (k + 1) + 8 * (k + 1)  # text tokens plus the template's own per example
    limit = min(ctx, per_text) if ctx else per_text
    return next_token_label_probs(model, tok, prompts, label_ids, max_length=limit, device=dev)
