"""EFT log-likelihood of given continuations: teacher forcing, one forward pass per model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transferlab.eft.components import Components, EFTError
from transferlab.eft.decode import pad_rows, token_infos, token_table
from transferlab.eft.results import Score


@torch.inference_mode()
def score(
    comp: Components, prompts: Sequence[str] | str, continuations: Sequence[str] | str, beta: float
) -> list[Score]:
    """Per-token EFT log-probs of ``continuations[i]`` after ``prompts[i]`` (one prompt is broadcast)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    conts = [continuations] if isinstance(continuations, str) else list(continuations)
    if len(prompts) == 1 and len(conts) > 1:
        prompts = prompts * len(conts)
    if len(prompts) != len(conts) or not conts:
        raise EFTError(
            f"{len(prompts)} prompt(s) for {len(conts)} continuation(s)",
            where="--continuation",
            fix="give one prompt, or one prompt per continuation",
        )
    tok = comp.tokenizer
    p_ids = [list(tok(p)["input_ids"]) for p in prompts]
    c_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in conts]
    for i, c in enumerate(c_ids):
        if not c:
            raise EFTError("is empty after tokenization", where=f"continuation {i + 1}", fix="give some text")
        if not p_ids[i]:
            raise EFTError(
                "is empty after tokenization",
                where=f"prompt {i + 1}",
                fix="give some text (the first continuation token needs a context)",
            )
    batch = pad_rows(comp, [p + c for p, c in zip(p_ids, c_ids)], prompts, 0, "prompt + continuation")
    from transformers import DynamicCache

    logits = []
    for m in comp.models:
        out = m(
            input_ids=batch.ids,
            attention_mask=batch.mask,
            position_ids=batch.pos,
            past_key_values=DynamicCache(config=m.config),
            use_cache=True,
        )
        logits.append(out.logits[..., : comp.vocab_size].float())
    width = batch.ids.shape[1]
    results = []
    for i, (c, prompt, cont) in enumerate(zip(c_ids, prompts, conts)):
        n = len(c)
        at = slice(width - n - 1, width - 1)  # logits at t-1 predict token t
        row_logits = [x[i, at] for x in logits]
        mix = comp.mix(row_logits, beta)
        targets = batch.ids[i, width - n :]
        table = token_table(comp, row_logits, mix, targets)
        cols = {k: v.cpu().tolist() for k, v in table.items()}
        rows = [{k: cols[k][j] for k in cols} for j in range(n)]
        results.append(Score(prompt, cont, token_infos(comp, rows, c)))
    return results
