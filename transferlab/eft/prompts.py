"""How each model of an EFT mix sees a prompt: plain text, or wrapped in a chat template.

Proxy-tuning (Liu et al. 2024) and emulated disalignment (Zhou et al. 2024) give the chat
fine-tune its chat template and the base models the plain prompt; the generated tokens are then
appended to every model's own context. The template is rendered to text and tokenized without
the tokenizer's special tokens, then the BOS token is put in front only when the tokenizer adds one
to plain text and the template did not already write it: every context starts with exactly one BOS.
"""

from __future__ import annotations

from typing import Any

from transferlab.core.errors import TransferlabError


class PromptFormatError(TransferlabError):
    """A prompt cannot be put in the asked format (e.g. the tokenizer has no chat template)."""


FORMATS = ("plain", "chat")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_chat_template(tokenizer: Any, where: str) -> None:
    if not has_chat_template(tokenizer):
        raise PromptFormatError(
            f"the tokenizer of {where} has no chat template",
            where="--chat",
            fix="save the fine-tune's tokenizer (with its chat_template) next to it, or drop --chat for that role",
        )


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front of plain text."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = list(tokenizer("a")["input_ids"])
    return bool(ids) and ids[0] == bos


def one_bos(tokenizer: Any, ids: list[int], want_bos: bool) -> list[int]:
    """``ids`` starting with exactly one BOS when ``want_bos`` (else as rendered, doubled BOS removed)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return ids
    while len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    if want_bos and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def render(tokenizer: Any, prompt: str, fmt: str = "plain", system: str | None = None) -> list[int]:
    """Token ids of ``prompt`` as one model sees it (``fmt`` = plain or chat)."""
    if fmt == "plain":
        return list(tokenizer(prompt)["input_ids"])
    if fmt != "chat":
        raise PromptFormatError(f"unknown prompt format '{fmt}'", fix=f"use one of {', '.join(FORMATS)}")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # jinja errors (e.g. a template without a system role) have many types
        raise PromptFormatError(
            f"the chat template cannot render this prompt ({str(err).splitlines()[0][:160]})",
            where="--chat",
            fix="drop --system if the template has no system role, or fix the template",
        ) from None
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return one_bos(tokenizer, ids, adds_bos(tokenizer))
