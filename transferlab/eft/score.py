"""EFT log-likelihood of given continuations: teacher forcing, one forward pass per model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transferlab.eft.components import Components, EFTError
from transferlab.eft.decode import View, pad_view, token_infos, token_table
from transferlab.eft.results import Score
from transferlab.models import hf_causal


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
    from transferlab.eft.prompts import render

    tok = comp.tokenizer
    c_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in conts]
    for i, c in enumerate(c_ids):
        if not c:
            raise EFTError("is empty after tokenization", where=f"continuation {i + 1}", fix="give some text")
    views: dict[tuple[str, int], View] = {}
    per_model: list[View] = []
    for m_i, fmt in enumerate(comp.formats):  # each model sees the prompt in its own format
        mtok = tok if fmt == "plain" else comp.model_tokenizers[m_i]
        key = (fmt, id(mtok))
        if key not in views:
            p_ids = [render(mtok, p, fmt, comp.system) for p in prompts]
            for i, ids in enumerate(p_ids):
                if not ids:
                    raise EFTError(
                        "is empty after tokenization",
                        where=f"prompt {i + 1}",
                        fix="give some text (the first continuation token needs a context)",
                    )
            views[key] = pad_view(comp, [p + c for p, c in zip(p_ids, c_ids)], 0, "prompt + continuation")
        per_model.append(views[key])
    logits = []
    for m, v in zip(comp.models, per_model):
        dev = hf_causal.input_device(m)
        out = m(
            input_ids=v.ids.to(dev),
            attention_mask=v.mask.to(dev),
            position_ids=v.pos.to(dev),
            use_cache=False,
        )
        logits.append(out.logits[..., : comp.vocab_size].float().to(comp.device))
    results = []
    for i, (c, prompt, cont) in enumerate(zip(c_ids, prompts, conts)):
        n = len(c)
        row_logits = []
        for x, v in zip(logits, per_model):
            width = v.ids.shape[1]
            row_logits.append(x[i, width - n - 1 : width - 1])  # logits at t-1 predict token t
        mix = comp.mix(row_logits, beta)
        targets = per_model[0].ids[i, per_model[0].ids.shape[1] - n :]
        table = token_table(comp, row_logits, mix, targets)
        cols = {k: v.cpu().tolist() for k, v in table.items()}
        rows = [{k: cols[k][j] for k in cols} for j in range(n)]
        results.append(Score(prompt, cont, token_infos(comp, rows, c)))
    return results
