"""Config of the cross-stage correlation study ("The Magic Correlations", arXiv 2602.11217)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig


class CorrelateConfig(StudyConfig):
    """What to read and how to analyse it. Every field has a default except ``path``.

    ``path`` is a tidy CSV (columns model, stage, benchmark, accuracy, plus optional mixture,
    scale, confidence) or a folder of lm-evaluation-harness outputs laid out as
    ``<path>/<stage>/<model>/**/results_*.json`` (see :mod:`transferlab.studies.correlate.harness`).
    """

    HASH_WHEN_CHANGED = frozenset({"sizes"})  # runs made before sizes existed keep their ids

    path: str = Field(description="a tidy CSV (model, stage, benchmark, accuracy[, mixture, scale, confidence]) or "
                      "a folder <path>/<stage>/<model>/**/results_*.json of lm-evaluation-harness output; its "
                      "content is part of the run id")
    pre_stage: str = Field("pretrain", description="stage name (folder or CSV value) before fine-tuning")
    post_stage: str = Field("sft", description="stage name (folder or CSV value) after fine-tuning")
    metric: str = Field("acc", description="harness accuracy metric: acc or acc_norm")
    tasks: list[str] | None = Field(None, description="keep only these benchmarks (default: all)")
    categories: dict[str, str] = Field(default_factory=dict,
                                       description="benchmark -> category, overrides the default map")
    n_boot: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples of models")
    ci: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    seed: int = Field(0, description="seed of the bootstrap resampling")
    reliable_threshold: float = Field(
        0.7, ge=-1.0, le=1.0,
        description="a benchmark is a reliable predictor if its cross-stage Spearman >= this and the "
                    "interval's lower end > 0",
    )
    min_models: int = Field(3, ge=2, description="fewest models a correlation is computed on")
    ece_bins: int = Field(10, ge=2, le=100, description="equal-width confidence bins of the expected calibration "
                          "error")
    sizes: dict[str, str] | None = Field(
        None,
        description="model -> its size (a parameter count such as 150M or 1B, or a zoo size name), overriding the "
                    "scale column; with the same mixture at two or more sizes the report gives DataDecide's decision "
                    "accuracy (a model named '<mixture>-<size>' without a mixture column is that mixture)")

    @field_validator("sizes")
    @classmethod
    def _v_sizes(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        from transferlab.studies.correlate.analysis import size_value

        for model, size in (v or {}).items():
            if size_value(size) is None:
                raise ValueError(f"size '{size}' of model '{model}' is not a parameter count such as 150M, 1B or "
                                 "1.2e9, nor a zoo size name")
        return v

    @model_validator(mode="after")
    def _distinct_stages(self) -> CorrelateConfig:
        if self.pre_stage == self.post_stage:
            raise ValueError(f"--pre and --post are both '{self.pre_stage}': a stage correlates with itself")
        return self

    def input_files(self) -> list[str]:
        return [self.path]

    def stages(self) -> tuple[str, str]:
        return self.pre_stage, self.post_stage


PRESETS = PresetRegistry()
PRESETS.add("quick", "few resamples, for a first look", n_boot=500)
PRESETS.add("paper", "stages named as in the paper (pretrain -> sft), 10k resamples", n_boot=10_000)
