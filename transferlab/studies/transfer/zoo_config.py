"""The config of the ``transferlab transfer`` sweep, with presets (the zoo build's is
:class:`transferlab.zoo.build.ZooConfig`; the fits on a user's CSV are configured in ``config.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.zoo.build import ZooConfig
from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import parse_sizes


def _sizes(v: list[str] | str) -> list[str]:
    return parse_sizes(v)


class TransferRunConfig(StudyConfig):
    """The effective-data-transferred sweep: scratch runs over D and fine-tuning runs over D_F, per size."""

    preset: str = "custom"
    sizes: list[str] = Field(default_factory=lambda: ["xxs", "xs", "s", "m", "l"],
                             description="zoo sizes (model sizes N) every D and D_F is run at: xxs, xs, s, m, l, xl")
    pretrain_corpus: str = Field("prose", description="the source corpus the zoo pretrains on")
    target_corpus: str = Field("code", description="the target corpus of the scratch and fine-tuning runs")
    pretrain_tokens_per_param: float | None = Field(
        20.0, gt=0, description="pretraining tokens per non-embedding parameter: a budget that grows with N "
                                "(null: pretrain_tokens)")
    pretrain_tokens: int | None = Field(
        None, ge=1, description="a fixed pretraining budget in tokens, the same text for every size (Hernandez et "
                                "al.'s protocol; set pretrain_tokens_per_param to null)")
    scratch_D: list[int] = Field(default_factory=lambda: [4_000, 16_000, 64_000, 256_000],
                                 description="target pool sizes of the from-scratch runs (tokens)")
    finetune_D: list[int] = Field(default_factory=lambda: [4_000, 16_000, 64_000],
                                  description="target pool sizes D_F of the fine-tuning runs (tokens)")
    vocab_size: int = Field(4096, ge=300, le=1_000_000, description="BPE vocabulary size")
    val_percent: float = Field(10.0, gt=0, lt=100, description="percent of files held out for validation")
    max_files: int | None = Field(None, ge=1, description="use only the first stdlib files and no "
                                     "installed distribution (tests; the mini presets: 1000, all of the stdlib)")
    pretrain: TrainSettings = Field(default_factory=TrainSettings, description="how the zoo models pretrain")
    target: TrainSettings = Field(
        default_factory=lambda: TrainSettings(seq_len=128, batch_size=16, evals=20, monitor=False),
        description="how the scratch and fine-tuning runs train (their lr: scratch_lr / finetune_lr)")
    scratch_lr: float = Field(3e-3, gt=0, allow_inf_nan=False, description="peak lr of the from-scratch runs")
    finetune_lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="peak lr of the fine-tuning runs")
    max_epochs: float = Field(30.0, gt=0, description="target runs see at most this many passes over D")
    min_steps: int = Field(50, ge=1, description="fewest steps of a target run")
    max_steps: int = Field(600, ge=1, description="most steps of a target run")
    patience: int = Field(3, ge=0, description="early stopping: evaluations without a better val loss")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the transfer fit")
    interval: Literal["residual", "pairs"] = Field(
        "residual", description="bootstrap method of the intervals: residual (new losses simulated from the fitted "
                                "laws with resampled residuals; every resample keeps every size and D) or pairs "
                                "(resample the runs; most resamples lose a size and cannot be fitted)")
    budget_size: str | None = Field(
        None, description="the third axis: the zoo size (one of sizes) pretrained at every budget_tokens and "
                          "fine-tuned at every finetune_D (null: no budget axis)")
    budget_tokens: list[int] = Field(
        default_factory=list, description="pretraining budgets (tokens, at least 3) of the budget axis; D_T's "
                                          "dependence on them is fitted as a power law and by Barnett's "
                                          "transfer-gap form")
    fix: dict[str, float] = Field(default_factory=dict, description="scratch-law parameters held fixed")
    seed: int = Field(0, ge=0, description="seed of the fits' bootstrap")
    workers: int = Field(
        1, ge=0, description="processes that pretrain and run the target runs side by side, one thread each "
                             "(0: one per core); the results are those of one process")

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return _sizes(v)

    @field_validator("budget_tokens")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError("pretraining budgets must be positive token counts")
        return sorted(set(v))

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
        if min(self.scratch_D + self.finetune_D) < self.target.seq_len + 1:
            raise ValueError(
                f"every D must hold at least one window of target.seq_len + 1 = {self.target.seq_len + 1} tokens"
            )
        if self.pretrain.seq_len != self.target.seq_len:
            raise ValueError("pretrain.seq_len and target.seq_len must be equal (the models' context)")
        if (self.budget_size is None) != (not self.budget_tokens):
            raise ValueError("set budget_size and budget_tokens together (the budget axis), or neither")
        if self.budget_size is not None:
            if self.budget_size not in self.sizes:
                raise ValueError(f"budget_size {self.budget_size!r} must be one of sizes {self.sizes} (its scratch "
                                 "runs give D_T)")
            if len(self.budget_tokens) < 3:
                raise ValueError(f"budget_tokens needs at least 3 budgets to fit D_T against them, got "
                                 f"{self.budget_tokens}")
            if min(self.budget_tokens) < self.pretrain.seq_len + 1:
                raise ValueError(f"every budget must hold one window of pretrain.seq_len + 1 = "
                                 f"{self.pretrain.seq_len + 1} tokens")
        return self

    @property
    def protocol(self) -> str:
        """``fixed-budget``: every size pretrained on the same tokens (Hernandez et al.); ``tokens-per-param``:
        a budget that grows with N (Chinchilla's 20 tokens per parameter in ``full`` and ``quick``)."""
        return "fixed-budget" if self.pretrain_tokens is not None else "tokens-per-param"

    def steps_for(self, D: int) -> int:
        """At most ``max_epochs`` passes over D, clamped to [min_steps, max_steps]."""
        raw = -int(-self.max_epochs * D // (self.target.batch_size * self.target.seq_len))
        return min(self.max_steps, max(self.min_steps, raw))

    def zoo(self, sizes: list[str] | None = None, tokens: int | None = None) -> ZooConfig:
        """The zoo build of the sweep (of ``sizes`` only, when given; at a fixed budget of ``tokens``, when
        given: the budget axis)."""
        return ZooConfig(
            sizes=sizes or self.sizes, tokens_per_param=None if tokens is not None else self.pretrain_tokens_per_param,
            tokens=tokens if tokens is not None else self.pretrain_tokens,
            corpus=self.pretrain_corpus, vocab_size=self.vocab_size,
            # the zoo build's order (prose, code), so a zoo built by `transferlab zoo build` is reused
            tokenizer_corpora=[c for c in ("prose", "code") if c in {self.pretrain_corpus, self.target_corpus}]
            + sorted({self.pretrain_corpus, self.target_corpus} - {"prose", "code"}),
            heldout=sorted({self.pretrain_corpus, self.target_corpus}), val_percent=self.val_percent,
            max_files=self.max_files, train=self.pretrain,
        )


PRESETS = PresetRegistry()
PRESETS.add(
    "full",
    "5 sizes (xxs..l: 13k..804k non-embedding params, 60x) pretrained to 20 tokens/param on prose, then 4 scratch D "
    "x 3 D_F on code with early stopping (Hernandez et al.'s fine-tuning protocol, but a pretraining budget that grows "
    "with N, unlike theirs: see fixed-pretrain); one process per core",
    sizes=["xxs", "xs", "s", "m", "l"], bootstrap=1000, workers=0,
)
PRESETS.add(
    "quick",
    "3 sizes (xs, s, m: 6x) pretrained to 20 tokens/param on prose with a 2,048-token BPE, 4 scratch D x 2 D_F "
    "(4k, 16k) on code, at most 400 steps a run, one process per core: <= 15 min on 2 cores from an empty store "
    "(the smaller sizes ossify at D_F = 64k in `full`, so quick stops at 16k); the budget grows with N, so beta mixes "
    "model size and pretraining data (fixed-pretrain holds the budget fixed)",
    sizes=["xs", "s", "m"], finetune_D=[4_000, 16_000], vocab_size=2048, max_steps=400, bootstrap=200, workers=0,
)
PRESETS.add(
    "fixed-pretrain",
    "Hernandez et al.'s protocol: quick's 3 sizes (xs, s, m), grid and runs, but every size pretrained on the same "
    "3,019,520 tokens of prose (s's 20 tokens/param, so 54 / 20 / 9 tokens per parameter for xs / s / m) instead of "
    "a budget that grows with N; plus the budget axis: s pretrained to 2.5, 5, 10 and 20 tokens/param (377k..3.0M "
    "tokens) and fine-tuned at each D_F. Shares quick's scratch runs and s model. Departs from the paper: its "
    "pretraining was large for every size, here m sees fewer tokens than its Chinchilla budget. ~14 min on one "
    "core from an empty store (its runs' times, docs/RESULTS.md), ~6 min after quick",
    sizes=["xs", "s", "m"], finetune_D=[4_000, 16_000], vocab_size=2048, max_steps=400, bootstrap=200, workers=0,
    pretrain_tokens_per_param=None, pretrain_tokens=3_019_520,
    budget_size="s", budget_tokens=[377_440, 754_880, 1_509_760, 3_019_520],
)
PRESETS.add(
    "mini",
    "3 sizes (xxs, xs, s: 11x) pretrained to 10 tokens/param on the standard library's prose only (its own small "
    "corpus and 2,048-token BPE: seconds to build), 3 scratch D x 2 D_F on code, at most 300 steps a run, one "
    "process per core (meant for 1-3 min; xxs ossifies at this budget and is left out of the transfer fit, but its "
    "scratch runs pin the scratch law's N dependence)",
    sizes=["xxs", "xs", "s"], pretrain_tokens_per_param=10.0, scratch_D=[4_000, 16_000, 64_000],
    finetune_D=[4_000, 16_000], max_steps=300, min_steps=30, max_epochs=20.0, bootstrap=100, workers=0,
    max_files=1000, vocab_size=2048,
    pretrain={"seq_len": 64, "batch_size": 32}, target={"seq_len": 64, "batch_size": 16, "evals": 10, "monitor": False},
)
PRESETS.add(
    "micro",
    "test-sized: 2 tiny sizes, a few thousand tokens, 30 stdlib files; seconds",
    sizes=["xxs", "xs"],
    pretrain_tokens_per_param=None,
    pretrain_tokens=1_600,
    scratch_D=[170, 510, 1_530],
    finetune_D=[170, 510],
    vocab_size=400,
    max_files=30,
    pretrain={"seq_len": 16, "batch_size": 8, "min_steps": 4, "evals": 4, "eval_tokens": 340},
    target={"seq_len": 16, "batch_size": 8, "evals": 4, "eval_tokens": 340, "monitor": False},
    max_steps=16,
    min_steps=8,
    patience=0,
    bootstrap=0,
    fix={"E": 1.0},
)
