"""EFT as a transformers ``LogitsProcessor``: ``base.generate(..., logits_processor=[proc])``.

The processor holds the small models (ft, ref) and one KV cache each. ``generate`` hands it the
base model's next-token logits; it returns the EFT log-probabilities (padded with -inf to the
base model's width), so greedy search, sampling and the usual warpers (temperature, top-k,
top-p, which ``generate`` applies after this processor) act on the EFT distribution.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from transferlab.eft.components import Components, EFTError, Runner


class EFTLogitsProcessor(LogitsProcessor):
    """Mix the base model's logits with the fine-tuning delta of small (ft, ref) pairs.

    Pass the prompt's ``attention_mask`` for left-padded batches; without it, leading
    ``pad_token_id`` tokens are taken as padding. A new ``generate`` call is detected when the
    sequence does not extend the previous one by one token; :meth:`reset` forces it.
    Greedy and sampling are supported; beam search (which reorders rows) is not.
    """

    def __init__(
        self,
        components: Components,
        beta: float = 1.0,
        *,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
    ):
        if any(f != "plain" for f in components.formats):
            raise EFTError(
                "EFTLogitsProcessor gives every model the base model's token ids, so it cannot give one "
                "of them a chat-formatted prompt",
                where="EFTLogitsProcessor",
                fix="use EFT.generate (it keeps one view of the prompt per model), or drop chat=",
            )
        self.comp = components
        self.beta = float(beta)
        self.prompt_mask = attention_mask
        self.pad_token_id = components.pad_id() if pad_token_id is None else pad_token_id
        self.runners = [Runner(m, components.vocab_size, components.device) for m in components.models[1:]]
        self.last_ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None

    def reset(self, attention_mask: torch.Tensor | None = None) -> None:
        self.last_ids = None
        if attention_mask is not None:
            self.prompt_mask = attention_mask

    def _start(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        if self.prompt_mask is not None and tuple(self.prompt_mask.shape) == tuple(input_ids.shape):
            mask = self.prompt_mask.to(input_ids.device).long()
        else:
            mask = (input_ids != self.pad_token_id).long().cummax(dim=1).values  # leading pads only
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        for r in self.runners:
            r.reset()
        self.mask, self.next_pos = mask, pos[:, -1:] + 1
        return [r(input_ids, mask, pos, last_only=True)[:, -1] for r in self.runners]

    def _step(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        assert self.mask is not None and self.next_pos is not None
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = [r(input_ids[:, -1:], self.mask, self.next_pos, last_only=True)[:, -1] for r in self.runners]
        self.next_pos = self.next_pos + 1
        return out

    def _continues(self, input_ids: torch.Tensor) -> bool:
        last = self.last_ids
        return (
            last is not None
            and input_ids.shape[0] == last.shape[0]
            and input_ids.shape[1] == last.shape[1] + 1
            and bool((input_ids[:, :-1] == last).all())
        )

    @torch.inference_mode()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if scores.shape[-1] < self.comp.vocab_size:
            raise EFTError(
                f"the base model gives {scores.shape[-1]} logits, fewer than the shared vocabulary "
                f"({self.comp.vocab_size})",
                where="EFTLogitsProcessor",
                fix="build the processor from the Components of this base model",
            )
        small = self._step(input_ids) if self._continues(input_ids) else self._start(input_ids)
        self.last_ids = input_ids.clone()
        mix = self.comp.mix([scores, *small], self.beta)
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        out[:, : self.comp.vocab_size] = mix
        return out
