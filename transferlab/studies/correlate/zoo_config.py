"""Config of the zoo's own pretrain -> SFT pairs for the correlate study (presets ``micro``, ``default``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.models.zoo import parse_sizes


class ZooPairsConfig(StudyConfig):
    """Pretrain every (mixture, size) on a prose/code token mixture, fine-tune it on the SFT set,
    score both stages on the stdlib benchmarks, then run the cross-stage correlation analysis."""

    preset: str = "custom"
    mixtures: list[int] = Field(default_factory=lambda: [100, 75, 50, 25],
                                description="percent of prose tokens in each pretraining mixture (rest code)")
    sizes: list[str] = Field(default_factory=lambda: ["xxs", "s"], description="zoo sizes (the scales)")
    tokens: int = Field(200_000, ge=1, description="pretraining tokens per model")
    vocab_size: int = Field(2048, ge=300)
    val_percent: float = Field(10.0, gt=0, lt=100)
    max_files: int | None = Field(None, ge=1, description="pretrain on only the first stdlib files (tests)")
    seq_len: int = Field(64, ge=8)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    eval_every: int = Field(50, ge=1)
    eval_tokens: int = Field(4096, ge=1)
    sft_steps: int = Field(60, ge=1, description="fine-tuning steps on the SFT set")
    sft_lr: float = Field(1e-3, gt=0)
    sft_eval_every: int = Field(20, ge=1)
    n_items: int = Field(60, ge=4, description="items per benchmark")
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of the correlate analysis")
    seed: int = 0
    num_threads: int | None = Field(1, ge=1, description="torch threads (1 is fastest for tiny models)")

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return parse_sizes(v)

    @field_validator("mixtures")
    @classmethod
    def _v_mix(cls, v: list[int]) -> list[int]:
        if any(not 0 <= p <= 100 for p in v):
            raise ValueError("every mixture is a percent of prose in [0, 100]")
        if len(set(v)) != len(v):
            raise ValueError("a mixture is repeated")
        return v

    @model_validator(mode="after")
    def _check(self) -> ZooPairsConfig:
        if len(self.mixtures) * len(self.sizes) < 3:
            raise ValueError("need at least 3 models (mixtures x sizes) for a correlation")
        if self.tokens < self.batch_size * self.seq_len:
            raise ValueError(f"tokens {self.tokens} is less than one step of {self.batch_size * self.seq_len}")
        return self

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.seq_len)


PRESETS = PresetRegistry()
PRESETS.add("default", "5 mixtures (100..0% prose) x 2 sizes (xxs, s), 200k pretraining tokens, 60 SFT steps, "
            "60 items per benchmark; under 15 min on 2 cores", mixtures=[100, 75, 50, 25, 0])
PRESETS.add(
    "micro",
    "test-sized: 4 mixtures x 2 tiny sizes, a few thousand tokens, 25 stdlib files; seconds",
    sizes=["xxs", "xs"],
    tokens=8 * 64 * 8,
    vocab_size=400,
    max_files=25,
    seq_len=64,
    batch_size=8,
    eval_every=4,
    eval_tokens=520,
    sft_steps=6,
    sft_eval_every=3,
    n_items=8,
    n_boot=200,
)
