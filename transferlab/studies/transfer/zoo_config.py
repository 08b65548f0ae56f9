"""Configs of the model zoo build and of the ``transferlab transfer`` sweep, with presets.

(The configs of the fits on a user's CSV are in ``config.py``.)
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.core.memory import check_fits, lm_memory_bytes
from transferlab.models.zoo import DEFAULT_SIZES, parse_sizes, size_spec


def check_lm_memory(sizes: list[str], vocab_size: int, seq_len: int, batch_size: int) -> None:
    """Refuse a vocabulary or batch that cannot fit before a tokenizer or a model is built."""
    biggest = max((size_spec(s) for s in sizes), key=lambda sp: sp.d_model * sp.n_layers)
    need = lm_memory_bytes(vocab_size, biggest.d_model, biggest.n_layers, biggest.d_ff, seq_len, batch_size)
    check_fits(need, f"size {biggest.name} with vocab_size={vocab_size:,}", "use a smaller vocab_size or batch")


def _sizes(v: list[str] | str) -> list[str]:
    return parse_sizes(v)


class ZooConfig(StudyConfig):
    """Pretrain every size of the family on one corpus for the same number of tokens."""

    sizes: list[str] = Field(default_factory=lambda: list(DEFAULT_SIZES))
    tokens: int = Field(1_000_000, ge=1, description="training tokens per model")
    corpus: str = Field("prose", description="prose | code | files:GLOB | hf:PATH[:COLUMN]")
    vocab_size: int = Field(4096, ge=300)
    tokenizer_corpora: list[str] = Field(default_factory=lambda: ["prose", "code"])
    val_percent: float = Field(10.0, gt=0, lt=100)
    max_files: int | None = Field(None, ge=1, description="use only the first files of the stdlib (tests)")
    seq_len: int = Field(128, ge=2)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    eval_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    eval_tokens: int = Field(16384, ge=1)
    seed: int = 0
    monitor: bool = True
    num_threads: int | None = Field(None, ge=1)

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return _sizes(v)

    @model_validator(mode="after")
    def _steps(self) -> ZooConfig:
        if self.tokens < self.batch_size * self.seq_len:
            raise ValueError(
                f"tokens {self.tokens} is less than one step of {self.batch_size * self.seq_len} "
                f"tokens (batch_size x seq_len)"
            )
        if self.checkpoint_every % self.eval_every:
            raise ValueError("checkpoint_every must be a multiple of eval_every")
        check_lm_memory(self.sizes, self.vocab_size, self.seq_len, self.batch_size)
        return self

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.seq_len)


class TransferRunConfig(StudyConfig):
    """The effective-data-transferred sweep: scratch runs over D and fine-tuning runs over D_F, per size."""

    preset: str = "custom"
    sizes: list[str] = Field(default_factory=lambda: ["xxs", "s", "m"])
    pretrain_corpus: str = "prose"
    target_corpus: str = "code"
    pretrain_tokens: int = Field(400_000, ge=1)
    scratch_D: list[int] = Field(default_factory=lambda: [4_000, 16_000, 64_000, 256_000])
    finetune_D: list[int] = Field(default_factory=lambda: [4_000, 16_000, 64_000])
    vocab_size: int = Field(4096, ge=300)
    val_percent: float = Field(10.0, gt=0, lt=100)
    max_files: int | None = Field(None, ge=1)
    seq_len: int = Field(64, ge=2)
    batch_size: int = Field(16, ge=1)
    pretrain_lr: float = Field(3e-3, gt=0)
    scratch_lr: float = Field(3e-3, gt=0)
    finetune_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    max_epochs: float = Field(8.0, gt=0, description="target runs see at most this many passes over D")
    min_steps: int = Field(40, ge=1)
    max_steps: int = Field(400, ge=1)
    eval_every: int = Field(20, ge=1)
    pretrain_eval_every: int = Field(50, ge=1)
    eval_tokens: int = Field(16384, ge=1)
    patience: int = Field(3, ge=0, description="early stopping: evaluations without a better val loss")
    bootstrap: int = Field(200, ge=0)
    fix: dict[str, float] = Field(default_factory=dict, description="scratch-law parameters held fixed")
    seed: int = 0
    num_threads: int | None = Field(None, ge=1)

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return _sizes(v)

    @field_validator("scratch_D", "finetune_D")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("must be a non-empty list of positive token counts")
        return sorted(set(v))

    @model_validator(mode="after")
    def _check(self) -> TransferRunConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} > max_steps {self.max_steps}")
        if min(self.scratch_D + self.finetune_D) < self.seq_len + 1:
            raise ValueError(
                f"every D must hold at least one window of seq_len + 1 = {self.seq_len + 1} tokens"
            )
        check_lm_memory(self.sizes, self.vocab_size, self.seq_len, self.batch_size)
        return self

    def steps_for(self, D: int) -> int:
        """At most ``max_epochs`` passes over D, clamped to [min_steps, max_steps], rounded up to an eval."""
        raw = math_ceil(self.max_epochs * D / (self.batch_size * self.seq_len))
        steps = min(self.max_steps, max(self.min_steps, raw))
        return -(-steps // self.eval_every) * self.eval_every

    def zoo(self) -> ZooConfig:
        return ZooConfig(
            sizes=self.sizes,
            tokens=self.pretrain_tokens,
            corpus=self.pretrain_corpus,
            vocab_size=self.vocab_size,
            tokenizer_corpora=[self.pretrain_corpus, self.target_corpus],
            val_percent=self.val_percent,
            max_files=self.max_files,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            lr=self.pretrain_lr,
            weight_decay=self.weight_decay,
            eval_every=self.pretrain_eval_every,
            checkpoint_every=2 * self.pretrain_eval_every,
            eval_tokens=self.eval_tokens,
            seed=self.seed,
            num_threads=self.num_threads,
        )


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


PRESETS = PresetRegistry()
# quick's grid and protocol: 1M pretraining tokens, scratch and fine-tuning runs of up to 30 passes over D
# with early stopping (Hernandez et al.), 50-600 steps
GRID = dict(
    pretrain_tokens=1_000_000,
    scratch_D=[4_000, 16_000, 64_000, 256_000],
    finetune_D=[4_000, 16_000, 64_000],
    max_steps=600,
    min_steps=50,
    max_epochs=30.0,
    eval_every=25,
    eval_tokens=16384,
)
PRESETS.add(
    "quick",
    "3 sizes (xxs, s, m: 25x in non-embedding params), 4 scratch D x 3 D_F; <= 15 min on 2 cores",
    sizes=["xxs", "s", "m"],
    bootstrap=200,
    **GRID,
)
PRESETS.add(
    "full",
    "all 5 sizes (xxs..l: 64x in non-embedding params) on quick's grid: 4 scratch D x 3 D_F; ~20 min on 2 cores",
    sizes=["xxs", "xs", "s", "m", "l"],
    bootstrap=1000,
    **GRID,
)
PRESETS.add(
    "micro",
    "test-sized: 2 tiny sizes, a few thousand tokens, 30 stdlib files; seconds",
    sizes=["xxs", "xs"],
    pretrain_tokens=1_600,
    scratch_D=[170, 510, 1_530],
    finetune_D=[170, 510],
    vocab_size=400,
    max_files=30,
    seq_len=16,
    batch_size=8,
    max_steps=16,
    min_steps=8,
    eval_every=4,
    pretrain_eval_every=4,
    eval_tokens=340,
    patience=0,
    bootstrap=0,
    fix={"E": 1.0},
)
