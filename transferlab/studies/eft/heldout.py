"""The EFT scoring mode on token windows: held-out loss of several EFT mixes at once, batched.

:meth:`transferlab.eft.EFT.score` scores text continuations (tokenized, teacher forced, one
forward per model). A held-out evaluation scores windows of token ids cut from a validation
stream, thousands of them: this module does the same teacher-forced arithmetic
(:meth:`Components.mix` on each model's logits) without the text round trip, the padding or the
per-token Python objects, and shares each model's forward pass between every mix that uses it
(the up-scaled and the down-scaled EFT of one demo use the same four models).

A window ``w`` of ``T + 1`` tokens is scored like the engine's LM loss: the logits at position
``t`` predict ``w[t + 1]``, so each window gives ``T`` token log-probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.core.memory import release_freed_memory
from transferlab.eft.api import EFT
from transferlab.eft.components import EFTError
from transferlab.models import hf_causal


def check_windows(windows: torch.Tensor, vocab_size: int, context: int | None) -> torch.Tensor:
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.shape[0] < 1:
        raise EFTError(
            f"windows must be a [n, T + 1] tensor of token ids with n >= 1 and T >= 1, got {tuple(windows.shape)}",
            where="windows",
            fix="cut windows with transferlab.train.lm.windows(ids, seq_len)",
        )
    w = windows.long()
    if int(w.min()) < 0 or int(w.max()) >= vocab_size:
        raise EFTError(
            "has token ids outside the models' vocabulary",
            where="windows",
            fix="use the tokenizer that belongs to the models",
        )
    if context is not None and w.shape[1] - 1 > context:
        raise EFTError(
            f"windows of {w.shape[1]} tokens read {w.shape[1] - 1} tokens, more than the models' context of {context}",
            where="windows",
            fix=f"cut windows of at most {context + 1} tokens",
        )
    return w


@torch.inference_mode()
def window_logprobs(
    mixes: Mapping[str, EFT | Any],
    windows: torch.Tensor,
    *,
    batch_size: int = 32,
    betas: Mapping[str, list[float]] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token log-probs ``[n, T]`` of ``windows[:, 1:]`` under each entry of ``mixes``.

    An entry is an :class:`EFT` (scored at its own ``beta``) or a plain causal LM (scored alone).
    Every distinct model runs once per batch, whichever entries share it. An EFT entry goes through
    :meth:`Components.mix`, the arithmetic of :meth:`EFT.score`. ``betas`` adds, for an EFT entry
    ``name``, the same mix at other betas under the keys ``f"{name}@{beta:g}"`` through the cheaper
    :func:`sweep` (forwards and log-softmaxes shared; equal to ``mix`` up to float32 rounding).
    """
    if not mixes:
        raise EFTError("nothing to score", where="mixes", fix="pass at least one EFT or model")
    efts = {k: v for k, v in mixes.items() if isinstance(v, EFT)}
    plain = {k: v for k, v in mixes.items() if not isinstance(v, EFT)}
    models = _models(mixes)
    vocab = min([e.components.vocab_size for e in efts.values()] + [hf_causal.output_width(m) for m in plain.values()])
    contexts = [n for n in map(hf_causal.context_length, models) if n is not None]
    w_all = check_windows(windows, vocab, min(contexts) if contexts else None)
    extra = {k: list(v) for k, v in (betas or {}).items()}
    for k in extra:
        if k not in efts:
            raise EFTError(f"'{k}' is not an EFT entry", where="betas", fix=f"use one of {sorted(efts)}")
    device = next(models[0].parameters()).device
    out: dict[str, list[torch.Tensor]] = {k: [] for k in mixes}
    for k, bs in extra.items():
        for b in bs:
            out[f"{k}@{b:g}"] = []
    for i in range(0, len(w_all), batch_size):
        release_freed_memory()  # the previous batch's [batch, T, vocab] tensors, or RSS climbs (see core.memory)
        w = w_all[i : i + batch_size].to(device)
        target = w[:, 1:, None]
        fw = _Forwards(w[:, :-1])
        for name, m in plain.items():
            out[name].append(fw.logprobs(m, hf_causal.output_width(m)).gather(-1, target).squeeze(-1).cpu())
        for name, e in efts.items():
            comp = e.components
            out[name].append(comp.mix([fw(m) for m in comp.models], e.beta).gather(-1, target).squeeze(-1).cpu())
            if extra.get(name):
                for b, lp in zip(extra[name], sweep(comp, fw, target, extra[name])):
                    out[f"{name}@{b:g}"].append(lp.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def sweep(comp: Any, fw: _Forwards, target: torch.Tensor, betas: list[float]) -> list[torch.Tensor]:
    """The mix of :func:`transferlab.eft.mix.eft_logprobs` at many betas, gathered at ``target``.

    The per-model log-softmaxes and the delta are computed once: for each beta only
    ``z = log pi_base + beta * delta`` and its log-normalizer remain. At beta = 0 the base's own
    (already normalized) log-probs are returned as they are.
    """
    v = comp.vocab_size
    lp = [fw.logprobs(m, v) for m in comp.models]
    base = lp[0]
    delta = torch.zeros_like(base)
    for p in comp.pairs:
        delta += p.weight * (lp[p.ft] - lp[p.ref])
    out = []
    for b in betas:
        if b == 0:
            out.append(base.gather(-1, target).squeeze(-1))
            continue
        z = base + b * delta
        out.append(z.gather(-1, target).squeeze(-1) - torch.logsumexp(z, dim=-1))
    return out


class _Forwards:
    """Each model's float32 logits (and log-softmax over the first ``width`` logits) on one batch, once."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids
        self.cache: dict[int, torch.Tensor] = {}
        self.lp_cache: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, model: Any) -> torch.Tensor:
        key = id(model)
        if key not in self.cache:
            self.cache[key] = model(input_ids=self.ids, use_cache=False).logits.float()
        return self.cache[key]

    def logprobs(self, model: Any, width: int) -> torch.Tensor:
        key = (id(model), width)
        if key not in self.lp_cache:
            self.lp_cache[key] = F.log_softmax(self(model)[..., :width], dim=-1)
        return self.lp_cache[key]


def _models(mixes: Mapping[str, Any]) -> list[Any]:
    seen: list[Any] = []
    for v in mixes.values():
        for m in v.components.models if isinstance(v, EFT) else [v]:
            if not any(m is s for s in seen):
                seen.append(m)
    return seen


def heldout_loss(logprobs: torch.Tensor) -> float:
    """Mean per-token negative log-likelihood (nats) of a ``[n, T]`` table."""
    return float(-logprobs.double().mean())
