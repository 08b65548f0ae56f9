"""Config of the zoo's own pretrain -> SFT pairs for the correlate study (presets ``micro``, ``default``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import parse_sizes, pretrain_tokens


class ZooPairsConfig(StudyConfig):
    """Pretrain every (mixture, size) on a prose/code token mixture, fine-tune it on the SFT set,
    score both stages on the stdlib benchmarks, then run the cross-stage correlation analysis."""

    preset: str = "custom"
    mixtures: list[int] = Field(default_factory=lambda: [100, 75, 50, 25, 0],
                                description="percent of prose tokens in each pretraining mixture (rest code)")
    sizes: list[str] = Field(default_factory=lambda: ["xs", "s"], description="zoo sizes (the scales)")
    tokens_per_param: float | None = Field(
        20.0, gt=0, description="pretraining tokens per non-embedding parameter (Chinchilla's 20, as the zoo build)")
    tokens: int | None = Field(None, ge=1, description="a fixed number of pretraining tokens per model instead")
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size (its own tokenizer)")
    val_percent: float = Field(10.0, gt=0, lt=100, description="percent of files held out for validation")
    max_files: int | None = Field(None, ge=1, description="pretrain on only the first stdlib files and "
                                     "no installed distribution (tests; mini: 1000, all of the stdlib)")
    pretrain: TrainSettings = Field(
        default_factory=lambda: TrainSettings(seq_len=64, batch_size=16, lr=3e-3, eval_tokens=4096, monitor=False),
        description="how each (mixture, size) model pretrains")
    sft: TrainSettings = Field(
        default_factory=lambda: TrainSettings(seq_len=64, batch_size=16, lr=1e-3, evals=3, eval_tokens=4096,
                                              monitor=False),
        description="how each model is fine-tuned on the SFT set")
    sft_steps: int = Field(60, ge=1, description="fine-tuning steps on the SFT set")
    n_items: int = Field(200, ge=4, description="items per benchmark")
    benchmarks: list[str] = Field(
        default_factory=lambda: ["next_line", "keyword", "doc_continuation", "doc_word_order"],
        description="benchmarks to score (also: doc_to_name, which only SFT can teach; see zoo_benchmarks)")
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of the correlate analysis")
    seed: int = Field(0, ge=0, description="seed of the benchmarks' item draw and the bootstrap")

    @property
    def seq_len(self) -> int:
        return self.pretrain.seq_len

    def tokens_for(self, size: str) -> int:
        """Pretraining tokens of a size: ``tokens``, or ``tokens_per_param`` x its non-embedding parameters."""
        return pretrain_tokens(size, self.tokens, self.tokens_per_param)

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return parse_sizes(v)

    @field_validator("benchmarks")
    @classmethod
    def _v_bench(cls, v: list[str]) -> list[str]:
        from transferlab.studies.correlate.zoo_benchmarks import ALL_BENCHMARKS

        bad = [b for b in v if b not in ALL_BENCHMARKS]
        if bad:
            raise ValueError(f"unknown benchmark(s) {', '.join(bad)}; choose among {', '.join(ALL_BENCHMARKS)}")
        if len(set(v)) != len(v) or len(v) < 2:
            raise ValueError("need at least 2 distinct benchmarks")
        return v

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
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise ValueError("set exactly one of tokens_per_param and tokens (the other to null)")
        for size in self.sizes:
            if self.tokens_for(size) < self.pretrain.seq_len + 1:
                raise ValueError(f"{self.tokens_for(size)} pretraining tokens for size {size} is less than one "
                                 f"window of {self.pretrain.seq_len + 1}")
        if self.pretrain.seq_len != self.sft.seq_len:
            raise ValueError("pretrain.seq_len and sft.seq_len must be equal")
        return self


PRESETS = PresetRegistry()
PRESETS.add("default", "5 mixtures (100..0% prose) x 2 sizes (xs, s): 10 models, each pretrained to 20 tokens per "
            "parameter (xs 1.1M, s 3.0M tokens), 60 SFT "
            "steps, 200 items per benchmark (the same as ZooPairsConfig() in Python)")
PRESETS.add(
    "mini",
    "3 mixtures (100, 50, 0% prose) x 2 sizes (xxs, xs): 6 models, 300k pretraining tokens each from the standard "
    "library's files only (its own small corpus: seconds to extract), 40 SFT steps, 100 items per benchmark",
    mixtures=[100, 50, 0], sizes=["xxs", "xs"], tokens=300_000, tokens_per_param=None, sft_steps=40, n_items=100,
    n_boot=1000, max_files=1000,
)
PRESETS.add(
    "micro",
    "test-sized: 4 mixtures x 2 tiny sizes, a few thousand tokens, 25 stdlib files; seconds",
    mixtures=[100, 75, 50, 25],
    sizes=["xxs", "xs"],
    tokens=8 * 64 * 8,
    tokens_per_param=None,
    vocab_size=400,
    max_files=25,
    pretrain={"seq_len": 64, "batch_size": 8, "min_steps": 4, "evals": 2, "eval_tokens": 520, "monitor": False},
    sft={"seq_len": 64, "batch_size": 8, "evals": 2, "eval_tokens": 520, "monitor": False},
    sft_steps=6,
    n_items=8,
    n_boot=200,
)
