"""The weak-to-strong study's config and presets.

Protocol (Burns et al. 2023): four disjoint splits per seed -- weak-train (gold, for the weak
model), transfer (labelled by the weak model, for the student), val (weak-labelled, for the
student's early stopping) and test. No gold label may reach the student's training or model
selection: :class:`W2SConfig` refuses any setting that would allow it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.core.devices import Device
from transferlab.core.errors import ConfigError
from transferlab.core.memory import check_fits
from transferlab.studies.w2s.losses import LABEL_METHODS, LOSSES


def loss_param_names(name: str) -> set[str]:
    """The parameters a loss takes: its constructor's signature (as scikit-learn's ``_get_param_names``), so a
    new loss is one class plus one registry entry."""
    import inspect

    if name not in LOSSES:
        return set()
    return {p for p in inspect.signature(LOSSES[name].__init__).parameters if p != "self"}


class W2SConfig(StudyConfig):
    task: str = "synthetic-noisy"
    classes: list[str] | None = None  # declared class set for a user's file
    losses: list[str] = Field(default_factory=lambda: ["xent"],
                              description="student losses: xent, confidence, logconf, product, product-ramped, "
                                          "window, adaptconf (each a student per seed)")
    label_methods: list[str] = Field(default_factory=list,
                                     description="students that change the weak labels instead of the loss, then "
                                                 "train with xent: knn-refine, bootstrap (heads backend)")
    seeds: int = Field(3, ge=1, le=100)
    seed: int = 0  # first seed; run s uses seed + s for its split, weak init and student init
    task_seed: int = 0  # the data itself (synthetic draw, stdlib sample)
    n_examples: int | None = Field(None, ge=20)  # synthetic tasks: how many to draw (default 4000)
    # split sizes: None = fractions (weak_train .2, transfer .4, val .1, test .3) of the task
    n_weak_train: int | None = Field(None, ge=1)
    n_transfer: int | None = Field(None, ge=1)
    n_val: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)
    backend: Literal["heads", "finetune"] = "heads"
    # weak supervisor for text tasks: the encoder truncated after this many layers
    weak_layer: int = Field(1, ge=0)
    weak_noise: float | None = Field(None, ge=0)  # synthetic/tabular noisy views (task default when None)
    encoder: str = "minilm"  # text tasks: 'minilm' (bundled, hash-checked) or a local HF model path
    max_length: int = Field(128, ge=8, le=512)
    # heads (frozen features)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    eval_every: int = Field(15, ge=1)
    # the student's model selection: weak-labelled only
    student_early_stop: Literal["weak_val", "last", "gold_val"] = "weak_val"
    loss_params: dict[str, dict[str, float]] = Field(default_factory=dict)
    knn_k: int = Field(10, ge=1)
    # analysis
    min_gap: float = Field(0.01, ge=0)
    # weak/strong models: 'zoo:<size>' (or 'zoo:<name>') from the model zoo, or a local HF folder.
    # heads backend: when set, text features are causal-LM hidden states mean-pooled by the attention
    # mask (studies.w2s.zoo_features) instead of the encoder's layers; finetune backend: the models tuned.
    strong_model: str | None = None
    weak_model: str | None = None
    mid_models: list[str] = Field(default_factory=list)  # heads: intermediate rungs (bootstrap, size sweep)
    zoo_root: str | None = None  # default <store>/zoo
    zoo_corpus: str | None = None  # zoo:<size> picks among this corpus's models (default: any)
    resolved_models: dict[str, dict[str, Any]] = Field(default_factory=dict)  # filled by run(): weights ids
    lora: bool = Field(False, description="finetune backend: LoRA adapters instead of full fine-tuning")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_target_modules: list[str] | None = Field(
        None, description="module names LoRA wraps (default: the family's attention projections, e.g. query/value, "
                          "q_proj/v_proj, GPT-2's c_attn); checked against both models before anything trains")
    ft_steps: int = Field(60, ge=1, description="finetune backend: steps of each fine-tuning run")
    ft_lr: float = Field(5e-4, gt=0, description="finetune backend: AdamW learning rate")
    ft_batch_size: int = Field(16, ge=1, description="finetune backend: batch size")
    weak_ft_lr: float | None = Field(None, gt=0, description="the weak model's own learning rate (default: ft_lr)")
    weak_ft_steps: int | None = Field(None, ge=1, description="the weak model's own steps (default: ft_steps)")
    weak_lora: bool | None = Field(None, description="LoRA for the weak model (default: lora)")
    # speed only (not part of the config hash)
    device: Device = Field("auto", description="where the fine-tuning backend and the zoo/causal-LM features "
                           "run: auto (CUDA when present) | cpu | cuda; frozen-feature heads train on the CPU")
    num_threads: int | None = Field(None, ge=1)

    @field_validator("n_examples")
    @classmethod
    def _fits_in_memory(cls, v: int | None) -> int | None:
        if v is not None:  # a synthetic draw: 20 float64 features in ~8 copies (views, noise, tensors)
            check_fits(v * 20 * 8 * 8, f"n_examples={v:,}", "draw fewer examples")
        return v

    @field_validator("losses", "label_methods", "mid_models", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        """``--set losses=xent,logconf`` (a comma-separated string) is a list."""
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("losses")
    @classmethod
    def _known_losses(cls, v: list[str]) -> list[str]:
        for name in v:
            if name in LABEL_METHODS:
                raise ValueError(f"'{name}' changes the labels, not the loss: give it as label_methods=[{name}] "
                                 "(CLI: --set label_methods={name})")
            if name not in LOSSES:
                raise ValueError(f"unknown loss '{name}'; choose from {', '.join(LOSSES)}")
        if len(set(v)) != len(v):
            raise ValueError("a loss is listed twice")
        return v

    @field_validator("label_methods")
    @classmethod
    def _known_label_methods(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in LABEL_METHODS:
                raise ValueError(f"unknown label method '{name}'; choose from {', '.join(LABEL_METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("a label method is listed twice")
        return v

    @property
    def methods(self) -> list[str]:
        """Every student arm: the losses, then the label methods (trained with xent on their labels)."""
        return [*self.losses, *self.label_methods]

    @model_validator(mode="after")
    def _device_exists(self) -> W2SConfig:
        from transferlab.core.devices import resolve_device

        resolve_device(self.device, where="device")  # before anything trains: one line if CUDA is absent
        return self

    @model_validator(mode="after")
    def _no_gold_for_the_student(self) -> W2SConfig:
        if not self.methods:
            raise ValueError("give at least one loss or label method")
        if self.student_early_stop == "gold_val":
            raise ValueError(
                "student_early_stop='gold_val' would select the student with gold labels; "
                "use 'weak_val' (weak-labelled validation split) or 'last'"
            )
        for name, params in self.loss_params.items():
            if name not in LOSSES:
                raise ValueError(f"loss_params names unknown loss '{name}'")
            extra = set(params) - loss_param_names(name)
            if extra:
                raise ValueError(
                    f"loss_params.{name} has unknown keys {sorted(extra)}; "
                    f"known: {sorted(loss_param_names(name))}"
                )
        return self

    def for_weak(self) -> W2SConfig:
        """The settings the weak model fine-tunes with: its own lr, steps and LoRA switch where given."""
        return self.model_copy(update={
            "ft_lr": self.weak_ft_lr or self.ft_lr, "ft_steps": self.weak_ft_steps or self.ft_steps,
            "lora": self.lora if self.weak_lora is None else self.weak_lora})


def refuse_gold(values: dict[str, Any]) -> None:
    """One clear line for the two settings that would leak gold labels into the student (before pydantic)."""
    if "student_labels" in values:  # the student learns from weak labels, always; the ceiling is the gold run
        raise ConfigError(
            "student_labels is not a setting: the student always trains on weak labels (gold would leak)",
            where="W2SConfig",
            fix="drop student_labels; the ceiling run already trains on gold",
        )
    if values.get("student_early_stop", "weak_val") == "gold_val":
        raise ConfigError(
            "student_early_stop=gold_val would select the student with gold labels",
            where="W2SConfig",
            fix="use weak_val (the weak-labelled validation split) or last",
        )



PRESETS = PresetRegistry()
PRESETS.add("quick", "a fast look: 3 seeds, 200 steps", seeds=3, steps=200)
PRESETS.add(
    "mini",
    "the one to run first on real text: stdlib-kind (is a stdlib docstring a function's or a class's) "
    "on the bundled MiniLM, weak = its first layer, xent vs logconf, 3 seeds",
    task="stdlib-kind", losses=["xent", "logconf"], seeds=3,
)
PRESETS.add(
    "paper",
    "Burns et al.-style comparison: 6 losses x 5 seeds",
    losses=["xent", "confidence", "logconf", "product", "window", "adaptconf"],
    seeds=5,
)
PRESETS.add(
    "refine",
    "naive xent vs k-NN label refinement vs bootstrapping",
    losses=["xent"],
    label_methods=["knn-refine", "bootstrap"],
    seeds=5,
)
