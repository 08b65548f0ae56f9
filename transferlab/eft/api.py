"""The EFT front door: load models once, then generate, score, or hand a LogitsProcessor to HF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from transferlab.eft.components import Components, Runner, check_beta
from transferlab.eft.decode import Settings, encode, generate_plain, pad_rows
from transferlab.eft.processor import EFTLogitsProcessor
from transferlab.eft.results import GenerationResult, Score
from transferlab.eft.score import score as _score
from transferlab.eft.speculative import generate_speculative


class EFT:
    """Emulated fine-tuning over Hugging Face causal LMs that share one tokenizer.

    >>> eft = EFT.from_pretrained(base="big", ft="small-ft", ref="small", beta=1.0)   # doctest: +SKIP
    >>> eft.generate("Q: 2+2?", max_new_tokens=8, greedy=True).generations[0].text   # doctest: +SKIP

    ``pairs`` holds (ft, ref, weight) triples; two pairs with weights (lam, 1 - lam) give the
    paper's test-time interpolation between fine-tuning objectives. ``tokenizers`` maps a role
    (ft, ref, ft1, ...) to that model's own tokenizer (checked to share the vocabulary; its chat
    template serves ``chat``); ``chat`` names the roles that see the prompt in a chat template.
    """

    def __init__(
        self,
        base: Any,
        pairs: Sequence[tuple[Any, Any, float]] | None = None,
        tokenizer: Any = None,
        *,
        ft: Any = None,
        ref: Any = None,
        beta: float = 1.0,
        allow_negative_beta: bool = False,
        components: Components | None = None,
        tokenizers: Mapping[str, Any] | None = None,
        chat: Sequence[str] | None = None,
        system: str | None = None,
    ):
        if components is None:
            if pairs is None:
                pairs = [(ft, ref, 1.0)]
            components = Components.build(base, pairs, tokenizer, tokenizers=dict(tokenizers or {}))
        if chat is not None or system is not None:
            components.set_formats(chat, system)
        self.components = components
        self.beta = check_beta(beta, allow_negative_beta)

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        ft: str | Path | Sequence[str | Path],
        ref: str | Path | Sequence[str | Path],
        *,
        weights: Sequence[float] | None = None,
        beta: float = 1.0,
        allow_negative_beta: bool = False,
        tokenizer: str | Path | None = None,
        device: str | Mapping[str, str] | None = "auto",
        dtype: str | torch.dtype = "float32",
        device_map: str | Mapping[str, Any] | None = None,
        attn_implementation: str | None = None,
        quantization: str | None = None,
        chat: Sequence[str] | None = None,
        system: str | None = None,
    ) -> EFT:
        """Load the models from local folders (nothing is downloaded).

        ``device``: ``auto`` (CUDA when present), a device for all models, or a dict from a role
        (base, ft, ref, ft1, ...) to its device. ``device_map`` (accelerate), ``dtype`` (float32,
        bfloat16, float16, auto), ``attn_implementation`` and ``quantization`` (8bit / 4bit, needs
        bitsandbytes and a GPU) apply to every model. ``chat``: roles whose model sees the prompt
        in its tokenizer's chat template (e.g. ``["ft"]`` for a chat fine-tune on plain bases);
        ``system``: an optional system message for those.
        """
        beta = check_beta(beta, allow_negative_beta)  # refuse bad input before loading anything
        comp = Components.from_pretrained(
            base, ft, ref, weights=weights, tokenizer=tokenizer, device=device, dtype=dtype,
            device_map=device_map, attn_implementation=attn_implementation, quantization=quantization,
        )
        comp.set_formats(chat, system)
        return cls(None, components=comp, beta=beta, allow_negative_beta=True)

    @property
    def tokenizer(self) -> Any:
        return self.components.tokenizer

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 32,
        greedy: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        speculative: int = 0,
        adaptive: bool = True,
        stop: str | Sequence[str] | None = None,
        stopping_criteria: Sequence[Any] | None = None,
        logits_processors: Sequence[Any] | None = None,
        diagnostics: bool = True,
    ) -> GenerationResult:
        """Decode each prompt (batched, left padded) until its own EOS, a ``stop`` string, a
        ``stopping_criteria`` entry or ``max_new_tokens``.

        ``speculative=k`` drafts blocks of up to k tokens with the (heaviest) fine-tuned model; the
        output distribution is the same EFT distribution (and token for token the same when
        greedy). ``adaptive`` (default) adapts the draft length to the acceptance and falls back to
        plain steps when drafts keep failing (see :mod:`transferlab.eft.speculative`).
        ``logits_processors``: transformers ``LogitsProcessor``s applied to the EFT log-probs
        (``input_ids`` = the base model's view of each row); ``stopping_criteria``: transformers
        ``StoppingCriteria`` on the same ids.
        """
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        s = Settings(max_new_tokens, greedy, temperature, top_k, top_p, seed, speculative, adaptive, stops,
                     tuple(stopping_criteria or ()), tuple(logits_processors or ())).validate()
        batch = encode(self.components, prompts, s.max_new_tokens)
        run = generate_speculative if s.speculative else generate_plain
        return run(self.components, batch, self.beta, s, diagnostics)

    def score(self, prompts: str | Sequence[str], continuations: str | Sequence[str]) -> list[Score]:
        """EFT log-likelihood of each continuation, per token (teacher forcing)."""
        return _score(self.components, prompts, continuations, self.beta)

    def next_token_logprobs(self, prompts: str | Sequence[str] | Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] EFT log-probabilities of the token after each prompt (texts, or lists of token ids)."""
        if not isinstance(prompts, str) and prompts and not isinstance(prompts[0], str):
            rows = [list(map(int, r)) for r in prompts]
            batch = pad_rows(self.components, rows, [""] * len(rows), 1, "prompt")
        else:
            batch = encode(self.components, prompts, 1)  # type: ignore[arg-type]
        with torch.inference_mode():
            logits = [
                Runner(m, self.components.vocab_size, self.components.device)(v.ids, v.mask, v.pos, last_only=True)[
                    :, -1
                ]
                for m, v in zip(self.components.models, batch.views)
            ]
        return self.components.mix(logits, self.beta)

    def logits_processor(self, attention_mask: torch.Tensor | None = None) -> EFTLogitsProcessor:
        """A processor for ``self.components.models[0].generate(..., logits_processor=[proc])``."""
        return EFTLogitsProcessor(self.components, self.beta, attention_mask=attention_mask)
