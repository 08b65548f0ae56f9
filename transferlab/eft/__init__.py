"""Emulated fine-tuning (Mitchell et al. 2023, arXiv 2310.12962) at decoding time.

log p(y_t) = log pi_base(y_t) + beta * sum_i w_i [log pi_ft_i(y_t) - log pi_ref_i(y_t)], renormalized.
"""

from transferlab.eft.api import EFT
from transferlab.eft.components import Components, EFTError, Pair, Runner, check_beta
from transferlab.eft.decode import Settings
from transferlab.eft.mix import choose, eft_logprobs, warp
from transferlab.eft.processor import EFTLogitsProcessor
from transferlab.eft.results import Generation, GenerationResult, Score, TokenInfo
from transferlab.eft.speculative import accept_counts, residual

__all__ = [
    "EFT",
    "Components",
    "EFTError",
    "EFTLogitsProcessor",
    "Generation",
    "GenerationResult",
    "Pair",
    "Runner",
    "Score",
    "Settings",
    "TokenInfo",
    "accept_counts",
    "check_beta",
    "choose",
    "eft_logprobs",
    "residual",
    "warp",
]
