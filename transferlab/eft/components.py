"""Who takes part in an EFT mix: the base model, (ft, ref) pairs with weights, one tokenizer.

Models are deduplicated by identity (two fine-tunes of one reference share its forward pass and
its KV cache). :class:`Runner` wraps one model with its own ``DynamicCache``, passed through the
model's current cache argument (``cache`` in transformers >= 5.2x, ``past_key_values`` before).

Each model may see the prompt in its own format (:mod:`transferlab.eft.prompts`): proxy-tuning and
emulated disalignment give a chat fine-tune its chat template and the bases the plain prompt.
Models may sit on different devices; every model's logits are brought to the base model's device
for the mix.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
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


ROLES_HELP = "base, ft, ref (all pairs) or ft1, ref2, ... (one pair)"


@dataclass
class Components:
    """The models of one EFT mix. ``models[0]`` is the base (knowledge) model.

    ``formats[i]`` is how model i sees a prompt ("plain" or "chat"); ``model_tokenizers[i]`` the
    tokenizer whose chat template it uses (its own folder's, else the shared one)."""

    models: list[Any]
    pairs: list[Pair]
    tokenizer: Any
    vocab_size: int
    names: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    model_tokenizers: list[Any] = field(default_factory=list)
    roles: dict[str, list[int]] = field(default_factory=dict)
    system: str | None = None

    def __post_init__(self) -> None:
        if not self.formats:
            self.formats = ["plain"] * len(self.models)
        if not self.model_tokenizers:
            self.model_tokenizers = [self.tokenizer] * len(self.models)
        if not self.roles:
            self.roles = role_indices(self.pairs)

    def set_formats(self, chat: Sequence[str] | None, system: str | None = None) -> None:
        """Give the models of the named roles the chat template (``chat=["ft"]``), the others plain."""
        from transferlab.eft.prompts import check_chat_template

        chat = list(chat or [])
        for role in chat:
            if role not in self.roles:
                raise EFTError(f"unknown role '{role}'", where="--chat", fix=f"use one of {ROLES_HELP}")
        seats: list[tuple[int, str, bool]] = [(0, "base", "base" in chat)]  # (model, role, chat?)
        for k, p in enumerate(self.pairs, start=1):
            seats.append((p.ft, f"ft{k}", "ft" in chat or f"ft{k}" in chat))
            seats.append((p.ref, f"ref{k}", "ref" in chat or f"ref{k}" in chat))
        want = ["plain"] * len(self.models)
        for i in range(len(self.models)):
            mine = [(r, c) for j, r, c in seats if j == i]
            if len({c for _, c in mine}) > 1:
                raise EFTError(
                    f"one model sits in roles {', '.join(r for r, _ in mine)} with different prompt formats",
                    where="--chat",
                    fix="give all its roles the same format, or load it twice (from two folders)",
                )
            if mine and mine[0][1]:
                want[i] = "chat"
        for i, f in enumerate(want):
            if f == "chat":
                check_chat_template(self.model_tokenizers[i], self.names[i] if i < len(self.names) else f"model {i}")
        self.formats = want
        self.system = system

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
        own = [tokenizer] * len(models)
        for role, tok in (tokenizers or {}).items():
            if tok is not None and role in role_of:
                j = next(i for i, x in enumerate(models) if x is role_of[role])
                own[j] = tok
        return cls(models, idx_pairs, tokenizer, vocab, list(names or []), model_tokenizers=own)

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        ft: str | Path | Sequence[str | Path],
        ref: str | Path | Sequence[str | Path],
        *,
        weights: Sequence[float] | None = None,
        tokenizer: str | Path | None = None,
        device: str | Mapping[str, str] | None = "auto",
        dtype: str | torch.dtype = "float32",
        device_map: str | Mapping[str, Any] | None = None,
        attn_implementation: str | None = None,
        quantization: str | None = None,
    ) -> Components:
        """Load the models from local folders. ``device`` is one device for all, or a dict from a
        role (base, ft, ref, ft1, ref2, ...) to its device (roles left out take ``auto``);
        ``device_map``, ``attn_implementation`` and ``quantization`` apply to every model (a
        ``device_map`` dict keyed by roles gives each its own). See
        :func:`transferlab.models.hf_causal.load_causal_lm`."""
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
        for role, p in paths.items():  # check every path and setting before loading anything heavy
            hf_causal.check_folder(p, role)
        devices = _per_role(device, paths, "--device", default="auto")
        maps = _per_role(device_map, paths, "--device-map", default=None, keyed=_is_role_dict(device_map, paths))
        for role in paths:
            hf_causal.load_options(role=role, dtype=dtype, device=devices[role], device_map=maps[role],
                                   attn_implementation=attn_implementation, quantization=quantization)
        for role, p in paths.items():
            key = p.resolve()
            if key not in loaded:
                loaded[key] = hf_causal.load_causal_lm(
                    p, role=role, dtype=dtype, device=devices[role], device_map=maps[role],
                    attn_implementation=attn_implementation, quantization=quantization,
                )
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
        """Where the mix is computed: the device of the base model's output head."""
        head = self.models[0].get_output_embeddings() if hasattr(self.models[0], "get_output_embeddings") else None
        weight = getattr(head, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
            return weight.device
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


def role_indices(pairs: Sequence[Pair]) -> dict[str, list[int]]:
    """Role name -> model indices: base, ft, ref (every pair) and ft1, ref1, ... (one pair)."""
    roles: dict[str, list[int]] = {"base": [0], "ft": [], "ref": []}
    for i, p in enumerate(pairs):
        roles["ft"].append(p.ft)
        roles["ref"].append(p.ref)
        roles[f"ft{i + 1}"], roles[f"ref{i + 1}"] = [p.ft], [p.ref]
    return roles


def _is_role_dict(value: Any, paths: Mapping[str, Path]) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(str(k) in _role_names(paths) for k in value)


def _role_names(paths: Mapping[str, Path]) -> set[str]:
    names = set(paths)
    if "ft1" in names or "ft" in names:
        names |= {"ft", "ref"}
    return names


def _per_role(value: Any, paths: Mapping[str, Path], flag: str, default: Any, keyed: bool | None = None) -> dict:
    """One setting per role: the same value for all, or a dict keyed by roles (ft/ref cover every pair)."""
    if keyed is None:
        keyed = isinstance(value, Mapping)
    if not keyed:
        return {r: (default if value is None else value) for r in paths}
    unknown = [k for k in value if k not in _role_names(paths)]
    if unknown:
        names = ", ".join(sorted(_role_names(paths)))
        raise EFTError(f"unknown role '{unknown[0]}'", where=flag, fix=f"use one of {names}")
    out = {}
    for r in paths:
        generic = r.rstrip("0123456789")
        out[r] = value.get(r, value.get(generic, default))
    return out


def cache_argument(model: Any) -> str:
    """The keyword a model's forward takes its KV cache by: ``cache`` (current transformers) or
    ``past_key_values`` (before the rename; deprecated, removed in 5.40)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The cache a forward returned, read without touching the deprecated ``past_key_values`` alias."""
    if isinstance(out, Mapping):
        if out.get("cache") is not None:
            return out["cache"]
        return out.get("past_key_values")
    return getattr(out, "cache", None)


class Runner:
    """One model and its KV cache: feed tokens, get float32 logits, crop on rejection.

    Inputs are moved to the model's input device and logits to ``out_device`` (the mix's)."""

    def __init__(self, model: Any, vocab_size: int, out_device: torch.device | None = None):
        self.model = model
        self.vocab_size = vocab_size
        self.cache: Any = None
        self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._cache_kw = cache_argument(model)
        self.device = hf_causal.input_device(model)
        self.out_device = out_device

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)

    def length(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    @torch.inference_mode()
    def __call__(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, last_only: bool
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {self._cache_kw: self.cache}
        if self._keep:
            kwargs["logits_to_keep"] = 1 if last_only else 0
        dev = self.device
        out = self.model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True, **kwargs
        )
        new = returned_cache(out)
        if new is not None:
            self.cache = new
        logits = out.logits[:, -1:] if last_only else out.logits
        logits = logits[..., : self.vocab_size].float()
        return logits if self.out_device is None else logits.to(self.out_device)

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
