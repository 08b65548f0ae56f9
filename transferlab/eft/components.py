"""Who takes part in an EFT mix: the base model, (ft, ref) pairs with weights, one tokenizer.

Models are deduplicated by identity (two fine-tunes of one reference share its forward pass and
its KV cache). :class:`Runner` wraps one model with its own ``DynamicCache``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transferlab.core.errors import TransferlabError
from transferlab.models import hf_causal


class EFTError(TransferlabError):
    """Bad input to emulated fine-tuning (beta, prompts, lengths, settings)."""


def check_beta(beta: float, allow_negative: bool) -> float:
    beta = float(beta)
    if not math.isfinite(beta):
        raise EFTError(f"beta must be a finite number, got {beta}", where="beta", fix="pass e.g. --beta 1.0")
    if beta < 0 and not allow_negative:
        raise EFTError(
            f"negative beta ({beta}) subtracts the fine-tuning delta (it emulates 'un-tuning')",
            where="beta",
            fix="pass --allow-negative-beta (allow_negative_beta=True) if that is what you want",
        )
    return beta


@dataclass
class Pair:
    """One fine-tuning delta: indices into :attr:`Components.models` and its weight."""

    ft: int
    ref: int
    weight: float


@dataclass
class Components:
    """The models of one EFT mix. ``models[0]`` is the base (knowledge) model."""

    models: list[Any]
    pairs: list[Pair]
    tokenizer: Any
    vocab_size: int
    names: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        base: Any,
        pairs: Sequence[tuple[Any, Any, float]],
        tokenizer: Any,
        *,
        tokenizers: dict[str, Any] | None = None,
        names: Sequence[str] | None = None,
    ) -> Components:
        if not pairs:
            raise EFTError("EFT needs at least one (ft, ref) pair", fix="pass --ft PATH --ref PATH")
        models: list[Any] = [base]
        role_of: dict[str, Any] = {"base": base}
        idx_pairs = []
        for i, (ft, ref, w) in enumerate(pairs):
            if not math.isfinite(float(w)):
                raise EFTError(
                    f"weight {w} of pair {i + 1} is not finite", where="--weight", fix="pass numbers"
                )
            ids = []
            for m in (ft, ref):
                found = next((j for j, x in enumerate(models) if x is m), None)
                if found is None:
                    models.append(m)
                    found = len(models) - 1
                ids.append(found)
            sfx = "" if len(pairs) == 1 else str(i + 1)
            role_of[f"ft{sfx}"], role_of[f"ref{sfx}"] = ft, ref
            idx_pairs.append(Pair(ids[0], ids[1], float(w)))
        vocab = hf_causal.shared_vocab_size(role_of, tokenizer, tokenizers)
        return cls(models, idx_pairs, tokenizer, vocab, list(names or []))

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        ft: str | Path | Sequence[str | Path],
        ref: str | Path | Sequence[str | Path],
        *,
        weights: Sequence[float] | None = None,
        tokenizer: str | Path | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> Components:
        fts = [ft] if isinstance(ft, (str, Path)) else list(ft)
        refs = [ref] if isinstance(ref, (str, Path)) else list(ref)
        if len(fts) != len(refs):
            raise EFTError(
                f"{len(fts)} fine-tuned model(s) but {len(refs)} reference model(s)",
                where="--ft/--ref",
                fix="give one --ref for every --ft, in the same order",
            )
        if weights is None or len(weights) == 0:
            weights = [1.0] if len(fts) == 1 else [1.0 / len(fts)] * len(fts)
        if len(weights) != len(fts):
            raise EFTError(
                f"{len(weights)} weight(s) for {len(fts)} (ft, ref) pair(s)",
                where="--weight",
                fix="give one --weight per --ft, or none",
            )
        paths = {"base": Path(base)}
        for i, (f, r) in enumerate(zip(fts, refs)):
            sfx = "" if len(fts) == 1 else str(i + 1)
            paths[f"ft{sfx}"], paths[f"ref{sfx}"] = Path(f), Path(r)
        loaded: dict[Path, Any] = {}
        for role, p in paths.items():  # check every path before loading anything heavy
            hf_causal.check_folder(p, role)
        for role, p in paths.items():
            key = p.resolve()
            if key not in loaded:
                loaded[key] = hf_causal.load_causal_lm(p, role=role, dtype=dtype, device=device)
        tok = hf_causal.load_tokenizer(tokenizer if tokenizer is not None else base, role="base")
        toks = {
            r: hf_causal.load_tokenizer(p, role=r)
            for r, p in paths.items()
            if r != "base" and hf_causal.has_tokenizer(p) and p.resolve() != Path(base).resolve()
        }
        pairs = [
            (loaded[Path(f).resolve()], loaded[Path(r).resolve()], float(w))
            for f, r, w in zip(fts, refs, weights)
        ]
        return cls.build(
            loaded[Path(base).resolve()], pairs, tok, tokenizers=toks, names=[str(p) for p in paths.values()]
        )

    @property
    def device(self) -> torch.device:
        return next(self.models[0].parameters()).device

    def context_length(self) -> int | None:
        lengths = [n for n in (hf_causal.context_length(m) for m in self.models) if n is not None]
        return min(lengths) if lengths else None

    def eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gen_cfg = getattr(self.models[0], "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        for x in eos if isinstance(eos, (list, tuple)) else [eos]:
            if x is not None:
                ids.add(int(x))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return sorted(i for i in ids if i < self.vocab_size)

    def pad_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        eos = self.eos_ids()
        return eos[0] if eos else 0

    def mix(self, logits: Sequence[torch.Tensor], beta: float) -> torch.Tensor:
        """EFT log-probs from one logits tensor per model (same leading shape)."""
        from transferlab.eft.mix import eft_logprobs

        v = self.vocab_size
        return eft_logprobs(
            logits[0][..., :v],
            [logits[p.ft][..., :v] for p in self.pairs],
            [logits[p.ref][..., :v] for p in self.pairs],
            [p.weight for p in self.pairs],
            beta,
        )


class Runner:
    """One model and its KV cache: feed tokens, get float32 logits, crop on rejection."""

    def __init__(self, model: Any, vocab_size: int):
        self.model = model
        self.vocab_size = vocab_size
        self.cache: Any = None
        self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)

    def length(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    @torch.inference_mode()
    def __call__(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, last_only: bool
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self._keep:
            kwargs["logits_to_keep"] = 1 if last_only else 0
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
            **kwargs,
        )
        self.cache = out.past_key_values
        logits = out.logits[:, -1:] if last_only else out.logits
        return logits[..., : self.vocab_size].float()

    def crop(self, length: int) -> None:
        """Roll the cache back to its first ``length`` positions."""
        remove = self.length() - length
        if remove <= 0:
            return
        try:
            self.cache.crop(-remove)
        except (ValueError, RuntimeError):
            self.cache.crop(length)  # older transformers: crop(max_length)
        if self.length() != length:
            raise EFTError(
                f"the KV cache of {type(self.model).__name__} cannot be rolled back",
                where="speculative",
                fix="run without --speculative for this model family",
            )
