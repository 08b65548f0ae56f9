"""The zoo's family of sizes: Llama decoders with tied embeddings, ~2.5x apart in parameters."""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.core.errors import ConfigError


@dataclass(frozen=True)
class SizeSpec:
    """One member of the family: a Llama decoder with tied input/output embeddings."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    def non_embedding_params(self) -> int:
        """Attention (4 d^2) + SwiGLU MLP (3 d d_ff) + 2 RMSNorms per layer, plus the final norm."""
        per_layer = 4 * self.d_model**2 + 3 * self.d_model * self.d_ff + 2 * self.d_model
        return self.n_layers * per_layer + self.d_model

    def embedding_params(self, vocab_size: int) -> int:
        return vocab_size * self.d_model  # tied: the LM head shares it


# v2: six sizes over 116x in non-embedding parameters (13.4k .. 1.55M), each ~2.2-4x the one before;
# d_ff ~ 8/3 d rounded as Llama does; heads of 16-32 dimensions
FAMILY: dict[str, SizeSpec] = {
    s.name: s
    for s in (
        SizeSpec("xxs", 32, 1, 2, 96),  # 13,408
        SizeSpec("xs", 48, 2, 3, 128),  # 55,536
        SizeSpec("s", 64, 3, 4, 176),  # 150,976
        SizeSpec("m", 96, 3, 4, 256),  # 332,448
        SizeSpec("l", 128, 4, 4, 352),  # 803,968
        SizeSpec("xl", 160, 5, 5, 432),  # 1,550,560
    )
}
DEFAULT_SIZES = tuple(FAMILY)


def size_spec(name: str) -> SizeSpec:
    if name not in FAMILY:
        raise ConfigError(
            f"unknown model size '{name}'",
            where="sizes",
            fix=f"choose from {', '.join(FAMILY)} (comma-separated)",
        )
    return FAMILY[name]


def pretrain_tokens(size: str, tokens: int | None, tokens_per_param: float | None) -> int:
    """A size's pretraining budget: a fixed ``tokens``, else ``tokens_per_param`` x its non-embedding parameters
    (the zoo build's rule, shared by every study that pretrains zoo models)."""
    if tokens is not None:
        return tokens
    return int(round(tokens_per_param * size_spec(size).non_embedding_params()))


def parse_sizes(sizes: str | list[str] | tuple[str, ...]) -> list[str]:
    items = [s.strip() for s in (sizes.split(",") if isinstance(sizes, str) else sizes) if s.strip()]
    if not items:
        raise ConfigError("no model sizes given", where="sizes", fix=f"e.g. --sizes {','.join(DEFAULT_SIZES)}")
    for s in items:
        size_spec(s)
    if len(set(items)) != len(items):
        raise ConfigError(f"a size is repeated in {items}", where="sizes", fix="list each size once")
    return items
