"""What generation and scoring return: token ids, text, and per-token diagnostics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TokenInfo:
    """One produced (or scored) token and what every component thought of it.

    ``ft_logprob`` / ``ref_logprob`` hold one value per (ft, ref) pair. ``changed_argmax`` is True
    where the fine-tuning delta moved the most likely token away from the base model's.
    """

    id: int
    text: str
    eft_logprob: float
    base_logprob: float
    ft_logprob: list[float]
    ref_logprob: list[float]
    base_argmax: int
    eft_argmax: int
    changed_argmax: bool


@dataclass
class Generation:
    prompt: str
    token_ids: list[int]
    text: str
    stopped_at_eos: bool
    tokens: list[TokenInfo] = field(default_factory=list)
    stop_reason: str | None = None  # "eos", "stop" (a stop string), "criteria", or None (max_new_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    generations: list[Generation]
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if len(self.generations) == 1:
            out["token_ids"] = self.generations[0].token_ids
            out["text"] = self.generations[0].text
        out["generations"] = [g.to_dict() for g in self.generations]
        out["stats"] = self.stats
        return out


@dataclass
class Score:
    prompt: str
    continuation: str
    tokens: list[TokenInfo]

    @property
    def eft_logprob(self) -> float:
        return float(sum(t.eft_logprob for t in self.tokens))

    @property
    def base_logprob(self) -> float:
        return float(sum(t.base_logprob for t in self.tokens))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "continuation": self.continuation,
            "n_tokens": len(self.tokens),
            "eft_logprob": self.eft_logprob,
            "base_logprob": self.base_logprob,
            "tokens": [asdict(t) for t in self.tokens],
        }
