"""The weak-to-strong study's config and presets.

Protocol (Burns et al. 2023): four disjoint splits per seed -- weak-train (gold, for the weak
model), transfer (labelled by the weak model, for the student), val (weak-labelled, for the
student's early stopping) and test. No gold label may reach the student's training or model
selection: :class:`W2SConfig` refuses any setting that would allow it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import ConfigPart, PresetRegistry, StudyConfig, config_keys, flat_as, get_dotted
from transferlab.core.devices import Device
from transferlab.core.errors import ConfigError, TransferlabError
from transferlab.core.memory import check_fits
from transferlab.studies.w2s.losses import LABEL_METHODS, LOSSES


def loss_param_names(name: str) -> set[str]:
    """The parameters a loss takes: its constructor's signature (as scikit-learn's ``_get_param_names``), so a
    new loss is one class plus one registry entry."""
    import inspect

    if name not in LOSSES:
        return set()
    return {p for p in inspect.signature(LOSSES[name].__init__).parameters if p != "self"}


FEATURES_STUDY = "w2s-features"  # the store's folder for cached features (runs the study makes for itself)
BASELINE_STUDY = "w2s-baseline"  # ... and for the cached floor and ceiling
ICL_MODEL_STUDY = "w2s-icl-model"  # ... and for the in-context model of the icl-concepts miniature
ICL_TASK = "icl-concepts"  # the miniature of Somerstep et al.'s setting (studies/w2s/icl.py)


class Task(ConfigPart):
    """What to classify and how it is split."""

    name: str = Field("synthetic-noisy", description="what to classify: a built-in task (transferlab w2s "
                      "--list-tasks), a .csv/.jsonl file, hf:PATH[:TEXT:LABEL] (a dataset saved with save_to_disk), or "
                      "several comma-separated (one run each, paired tests pooled across them); a file keys its "
                      "runs by its content", json_schema_extra=flat_as("task"))
    classes: list[str] | None = Field(None, description="a user file's declared class names, in label-index "
                                      "order: every label must be one of them (default: the labels found)")
    seed: int = Field(0, description="seed of the data itself (the synthetic draw, the stdlib/library sample, "
                      "an hf: dataset's seeded draw), kept apart from the split seeds",
                      json_schema_extra=flat_as("task_seed"))
    n_examples: int | None = Field(None, ge=20, description="synthetic tasks: how many examples to draw "
                                   "(default 4000); other tasks use all they have")
    # split sizes: None = fractions (weak_train .2, transfer .4, val .1, test .3) of the task
    n_weak_train: int | None = Field(None, ge=1, description="examples with gold labels the weak model trains on "
                                     "(a fifth of them held out for its early stopping); default 20% of the task")
    n_transfer: int | None = Field(None, ge=1, description="examples the weak model labels for the student (and "
                                   "the ceiling trains on with gold); default 40% of the task")
    n_val: int | None = Field(None, ge=1, description="weak-labelled validation examples the student is selected "
                              "on (gold for the ceiling); default 10% of the task")
    n_test: int | None = Field(None, ge=1, description="held-out examples every accuracy and PGR is measured on; "
                               "default 30% of the task")

    @field_validator("n_examples")
    @classmethod
    def _fits_in_memory(cls, v: int | None) -> int | None:
        if v is not None:  # a synthetic draw: 20 float64 features in ~8 copies (views, noise, tensors)
            check_fits(v * 20 * 8 * 8, f"n_examples={v:,}", "draw fewer examples")
        return v


class Weak(ConfigPart):
    """The weak supervisor: which model, and (finetune backend) its own training settings where they differ."""

    model: str | None = Field(None, description="the weak supervisor: zoo:<size>, zoo:<name> or a local Hugging "
                              "Face folder, named as strong.model (default: the encoder's weak.layer)",
                              json_schema_extra=flat_as("weak_model"))
    layer: int = Field(1, ge=0, description="text tasks on the encoder: the weak model reads the encoder's "
                       "hidden states after this many layers (the strong model its last layer)",
                       json_schema_extra=flat_as("weak_layer"))
    noise: float | None = Field(None, ge=0, description="synthetic, tabular and feature-file tasks: standard "
                                "deviation of the Gaussian noise on the weak view, in units of the standardized "
                                "features (default: the task's own, 1.0 synthetic, 2.0 tabular)",
                                json_schema_extra=flat_as("weak_noise"))
    lr: float | None = Field(None, gt=0, description="finetune backend: the weak model's own learning rate "
                             "(default: finetune.lr)", json_schema_extra=flat_as("weak_ft_lr"))
    steps: int | None = Field(None, ge=1, description="finetune backend: the weak model's own steps (default: "
                              "finetune.steps)", json_schema_extra=flat_as("weak_ft_steps"))
    lora: bool | None = Field(None, description="finetune backend: LoRA for the weak model (default: "
                              "finetune.lora)", json_schema_extra=flat_as("weak_lora"))


class Strong(ConfigPart):
    """The strong model (and the rungs between weak and strong); without named models, the text encoder."""

    # 'zoo:<size>' (or 'zoo:<name>') from the model zoo, or a local HF folder. heads backend: when set, text
    # features are causal-LM hidden states mean-pooled by the attention mask (studies.w2s.zoo_features) instead
    # of the encoder's layers; finetune backend: the models tuned.
    model: str | None = Field(None, description="the strong model: zoo:<size>, zoo:<name> or a local "
                              "Hugging Face folder (heads: its mean-pooled hidden states; finetune: the model "
                              "trained); default: the encoder's last layer", json_schema_extra=flat_as("strong_model"))
    mid_models: list[str] = Field(default_factory=list, description="heads backend: models between weak and strong "
                                  "(intermediate rungs for bootstrap and the size sweep), named as strong.model")
    encoder: str = Field("minilm", description="text tasks without weak/strong models: 'minilm' (the bundled "
                         "all-MiniLM-L6-v2, hash-checked) or a local Hugging Face encoder folder")
    max_length: int = Field(128, ge=8, le=512, description="tokens kept per text (longer texts are truncated)")

    @field_validator("mid_models", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        return _split(v)


class Heads(ConfigPart):
    """heads backend: how every head (weak, ceiling, students) trains on the frozen features."""

    steps: int = Field(300, ge=1, description="heads backend: optimizer steps of every head (weak, ceiling, "
                       "students)")
    batch_size: int = Field(128, ge=1, description="heads backend: examples per step of every head")
    lr: float = Field(1e-2, gt=0, description="heads backend: AdamW learning rate of the heads")
    weight_decay: float = Field(1e-4, ge=0, description="heads backend: AdamW (decoupled) weight decay of the "
                                "heads")


class Finetune(ConfigPart):
    """finetune backend: how the Hugging Face models themselves are trained (the weak one's own settings in weak)."""

    steps: int = Field(60, ge=1, description="finetune backend: steps of each fine-tuning run",
                       json_schema_extra=flat_as("ft_steps"))
    lr: float = Field(5e-4, gt=0, description="finetune backend: AdamW learning rate",
                      json_schema_extra=flat_as("ft_lr"))
    batch_size: int = Field(16, ge=1, description="finetune backend: batch size",
                            json_schema_extra=flat_as("ft_batch_size"))
    lora: bool = Field(False, description="finetune backend: LoRA adapters instead of full fine-tuning")
    lora_r: int = Field(8, ge=1, description="rank of the LoRA adapters (lora=true or weak_lora=true)")
    lora_target_modules: list[str] | None = Field(
        None, description="module names LoRA wraps (default: the family's attention projections, e.g. query/value, "
                          "q_proj/v_proj, GPT-2's c_attn); checked against both models before anything trains")


class Students(ConfigPart):
    """The students: the losses and label methods they train with on weak labels, and how each is selected.
    Nothing here can reach the floor or ceiling, which are cached without it."""

    losses: list[str] = Field(default_factory=lambda: ["xent"],
                              description="student losses, each a student per seed",
                              json_schema_extra={"choices": lambda: list(LOSSES)})
    label_methods: list[str] = Field(default_factory=list,
                                     description="students that change the weak labels instead of the loss, then "
                                                 "train with xent (heads backend)",
                                     json_schema_extra={"choices": lambda: list(LABEL_METHODS)})
    # the student's model selection: weak-labelled only
    early_stop: Literal["weak_val", "last", "gold_val"] = Field(
        "weak_val", description="how the student's step is chosen: weak_val (best accuracy against weak labels on "
        "the val split) or last; gold_val is refused (it would leak gold labels)",
        json_schema_extra=flat_as("student_early_stop"))
    loss_params: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="a loss's own parameters by its name, e.g. {logconf: {a_max: 0.5}} "
        "(the keys are its constructor's arguments; default: each loss's defaults)")
    knn_k: int = Field(10, ge=1, description="knn-refine: neighbours in the strong features whose weak labels are "
                       "averaged")
    # ICL refinement (Somerstep et al., arXiv:2405.16236): the icl-refine label method (studies/w2s/icl_refine.py)
    icl_k: int = Field(8, ge=1, le=64, description="icl-refine: weakly labelled demonstrations in each prompt "
                       "(the refinement batch size)")
    icl_template: str = Field("{text}\nLabel: {label}\n\n", description="icl-refine on text tasks: how one "
                              "demonstration is written, with {text} and {label} (its label word) once each; the "
                              "query is the template cut before {label}")
    icl_label_words: list[str] | None = Field(None, description="icl-refine on text tasks: one word per class, in "
                                              "class order, whose next-token probabilities are the label (default: "
                                              "the class names); their first tokens must differ")
    icl_read: Literal["sample", "probs"] = Field("sample", description="icl-refine: the refined label is a label "
                                                 "sampled from the next-token probabilities over the label words "
                                                 "(sample, as the paper does) or those probabilities (probs)")
    icl_ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32], description="icl-concepts: the "
                              "refinement batch sizes swept (the misalignment of the refined labels and a student "
                              "at each)")

    @field_validator("icl_ks", "icl_label_words", mode="before")
    @classmethod
    def _split_commas_icl(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("icl_template")
    @classmethod
    def _icl_template(cls, v: str) -> str:
        from transferlab.studies.w2s.icl_refine import check_template

        problem = check_template(v)
        if problem:
            raise ValueError(f"the template {problem}; e.g. '{{text}}\\nLabel: {{label}}\\n\\n'")
        return v

    @field_validator("icl_ks")
    @classmethod
    def _icl_ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 or k > 64 for k in v) or len(set(v)) != len(v):
            raise ValueError("give distinct batch sizes between 1 and 64, e.g. 1,2,4,8,16,32")
        return sorted(v)

    @field_validator("icl_label_words")
    @classmethod
    def _icl_words(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v) or any(not w.strip() for w in v)):
            raise ValueError("give at least two distinct, non-empty label words, one per class, e.g. no,yes")
        return v

    @field_validator("losses", "label_methods", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        """``--set losses=xent,logconf`` (a comma-separated string) is a list."""
        return _split(v)

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
    def _no_gold_for_the_student(self) -> Students:
        if not self.methods:
            raise ValueError("give at least one loss or label method")
        if self.early_stop == "gold_val":
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


class IclConcepts(ConfigPart):
    """Task icl-concepts, the miniature of Somerstep et al.'s setting (studies/w2s/icl.py): the concept prior, the
    biased weak labeller and the in-context model. It defines the task, so it keys the floor and ceiling."""

    bits: int = Field(6, ge=2, le=8, description="icl-concepts: boolean features of an input (2^bits inputs; "
                      "a labelled example x -> y is one token)", json_schema_extra=flat_as("icl_bits"))
    noise: float = Field(0.1, gt=0, lt=0.5, description="icl-concepts: label noise of the concept prior's "
                         "likelihood (pretraining labels flip with this probability)",
                         json_schema_extra=flat_as("icl_noise"))
    weak_error: float = Field(0.2, gt=0, lt=0.5, description="icl-concepts: fraction of the inputs the biased "
                              "weak labeller gets wrong (a fixed set per seed: a bias, not noise)",
                              json_schema_extra=flat_as("icl_weak_error"))
    pretrain_steps: int = Field(2000, ge=1, description="icl-concepts: steps pretraining the in-context "
                                "model on the concept prior (trained once, cached in the store)",
                                json_schema_extra=flat_as("icl_pretrain_steps"))
    d_model: int = Field(64, ge=16, description="icl-concepts: width of the in-context model (a Llama decoder, "
                         "heads of width 16)", json_schema_extra=flat_as("icl_d_model"))
    layers: int = Field(2, ge=1, description="icl-concepts: layers of the in-context model",
                        json_schema_extra=flat_as("icl_layers"))
    ft_steps: int = Field(150, ge=1, description="icl-concepts: steps fine-tuning each student and the "
                          "ceiling (the in-context model taught to answer with no demonstrations)",
                          json_schema_extra=flat_as("icl_ft_steps"))
    ft_lr: float = Field(1e-3, gt=0, description="icl-concepts: AdamW learning rate of that fine-tuning",
                         json_schema_extra=flat_as("icl_ft_lr"))


class Analysis(ConfigPart):
    """How the results are read."""

    min_gap: float = Field(0.01, ge=0, description="refuse the run when the ceiling beats the weak model by less "
                           "than this accuracy (PGR would be undefined); a seed with a smaller gap gets no PGR of "
                           "its own")


def _split(v: Any) -> Any:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    return v


# The parts only the students read: the floor and ceiling are cached under the hash of everything else
# (run.baseline_config), so a part or field added later keys the baseline unless it is put here.
STUDENT_PARTS = ("students", "analysis")


class W2SConfig(StudyConfig):
    """A weak-to-strong comparison: the task, the weak and strong models, how the heads (or the fine-tuned models)
    train, the students and the analysis. Every key also has its flat name (``task``, ``steps``, ``lr``,
    ``ft_steps``, ``weak_ft_lr``, ``student_early_stop``, ...): the run id is the hash of that flat view."""

    seeds: int = Field(3, ge=1, le=100, description="repetitions: each seed draws its own splits, weak model and "
                       "student inits; 3 or more give PGR a 95% interval")
    seed: int = Field(0, description="first seed; repetition s uses seed + s for its split, weak init and student "
                      "init")
    backend: Literal["heads", "finetune"] = Field("heads", description="heads: linear heads on frozen features "
                                                  "(encoder layers or causal-LM states), seconds on a CPU; finetune: "
                                                  "the weak and strong Hugging Face models themselves are trained")
    eval_every: int = Field(15, ge=1, description="steps between evaluations, for early stopping and the "
                            "gold-accuracy curves (both backends)")
    task: Task = Field(default_factory=Task, description="what to classify and its splits")
    weak: Weak = Field(default_factory=Weak, description="the weak supervisor")
    strong: Strong = Field(default_factory=Strong, description="the strong model")
    heads: Heads = Field(default_factory=Heads, description="heads backend: training of every head")
    finetune: Finetune = Field(default_factory=Finetune, description="finetune backend: training of the models")
    students: Students = Field(default_factory=Students, description="the students on weak labels")
    icl_concepts: IclConcepts = Field(default_factory=IclConcepts, description="task icl-concepts: the "
                                      "miniature of refinement by in-context learning")
    analysis: Analysis = Field(default_factory=Analysis, description="how the results are read")
    zoo_root: str | None = Field(None, description="the model zoo's folder for zoo: references (default: "
                                 "<store>/zoo)")
    zoo_corpus: str | None = Field(None, description="zoo:<size> picks the model of that size pretrained on this "
                                   "corpus (default: any)")
    resolved_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="filled by the run, not by you: the identity of every model's weights "
        "(so a run keys on them)")
    # speed only (not part of the config hash)
    device: Device = Field("auto", description="where the fine-tuning backend and the zoo/causal-LM features "
                           "run: auto (CUDA when present) | cpu | cuda; frozen-feature heads train on the CPU")
    num_threads: int | None = Field(None, ge=1, description="CPU threads torch may use (default: torch's own); "
                                    "speed only, not part of the run id")

    @property
    def methods(self) -> list[str]:
        """Every student arm: the losses, then the label methods (trained with xent on their labels)."""
        return self.students.methods

    @model_validator(mode="after")
    def _icl_setting(self) -> W2SConfig:
        text_only = [k for k in ("icl_template", "icl_label_words") if not self.at_default(k)]
        if self.task.name == ICL_TASK and text_only:
            raise ValueError(f"{', '.join(text_only)} apply to text tasks; task {ICL_TASK}'s label words are its "
                             "example tokens: leave them unset")
        mini_keys = {k for k, path in config_keys(type(self)).paths.items() if path[0] == "icl_concepts"}
        mini_only = [k for k in sorted(mini_keys | {"icl_ks"}) if not self.at_default(k)]  # icl-concepts' own
        if self.task.name != ICL_TASK and mini_only:
            raise ValueError(f"{', '.join(mini_only)} apply to task {ICL_TASK} only; leave them unset or set "
                             f"task={ICL_TASK}")
        if self.task.name == ICL_TASK:
            extra = [m for m in self.methods if m not in ("xent", "icl-refine")]
            if extra:
                raise ValueError(f"task {ICL_TASK} trains xent (naive) and icl-refine students only, not "
                                 f"{', '.join(extra)}; set losses=[xent] label_methods=[icl-refine]")
            too_long = [k for k in {*self.students.icl_ks, self.students.icl_k} if k > 39]
            if too_long:
                raise ValueError(f"task {ICL_TASK}'s in-context model reads at most 39 demonstrations, not "
                                 f"{max(too_long)}; keep icl_k and icl_ks <= 39")
            if self.backend != "heads" or uses_model_names(self):
                raise ValueError(f"task {ICL_TASK} trains its own in-context model: leave backend, weak_model and "
                                 "strong_model unset")
        elif "icl-refine" in self.students.label_methods and not self.strong.model:
            raise ValueError("icl-refine needs a causal LM to prompt: set strong_model=zoo:<size> or a local "
                             f"Hugging Face folder (or use task={ICL_TASK}, the miniature)")
        return self


    @model_validator(mode="after")
    def _device_exists(self) -> W2SConfig:
        from transferlab.core.devices import resolve_device

        resolve_device(self.device, where="device")  # before anything trains: one line if CUDA is absent
        return self

    def input_files(self) -> list[str]:
        """A task read from a file (.csv/.jsonl, the folder of hf:PATH), a local encoder, and the finetune
        backend's local weak and strong models: their content keys the run and its floor and ceiling (the heads
        backend keys on its models' weights through ``resolved_models``)."""
        from transferlab.data.classification import is_user_file
        from transferlab.data.hf_tasks import is_hf_task, parse_hf_task

        out = []
        for task in (t.strip() for t in self.task.name.split(",")):
            if is_hf_task(task):
                try:
                    out.append(parse_hf_task(task)[0])
                except TransferlabError:
                    out.append(task)  # malformed: loading it says why
            elif is_user_file(task):
                out.append(task)
        if self.strong.encoder != "minilm" and self.backend == "heads" and not uses_model_names(self):
            out.append(self.strong.encoder)
        if self.backend == "finetune":
            out += [m for m in (self.weak.model, self.strong.model) if m and not m.startswith("zoo:")]
        return out

    def for_weak(self) -> W2SConfig:
        """The settings the weak model fine-tunes with: its own lr, steps and LoRA switch where given."""
        w, ft = self.weak, self.finetune
        return self.updated(ft_lr=w.lr or ft.lr, ft_steps=w.steps or ft.steps,
                            lora=ft.lora if w.lora is None else w.lora)


# The icl_ keys came after w2s runs were stored: at their defaults they stay out of the run id (and of the floor and
# ceiling's key), so those runs keep their ids.
W2SConfig.HASH_WHEN_CHANGED = frozenset(k for k in config_keys(W2SConfig).paths if k.startswith("icl_"))


def uses_model_names(cfg: W2SConfig) -> bool:
    """Weak/strong models are named: the encoder is not used."""
    return bool(cfg.weak.model or cfg.strong.model or cfg.strong.mid_models)


def refuse_gold(values: dict[str, Any]) -> None:
    """One clear line for the two settings that would leak gold labels into the student (before pydantic)."""
    if "student_labels" in values:  # the student learns from weak labels, always; the ceiling is the gold run
        raise ConfigError(
            "student_labels is not a setting: the student always trains on weak labels (gold would leak)",
            where="W2SConfig",
            fix="drop student_labels; the ceiling run already trains on gold",
        )
    if values.get("student_early_stop") == "gold_val" or get_dotted(values, "students.early_stop") == "gold_val":
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
    "micro",
    "test-sized: the synthetic task (400 examples), 60 steps a head, 3 seeds (PGR's interval needs 3); a second",
    task="synthetic-noisy", n_examples=400, steps=60, seeds=3,
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
PRESETS.add(
    "icl-refine",
    "Somerstep et al.'s refinement by in-context learning, in miniature (task icl-concepts): a small Llama decoder "
    "pretrained on (x, c(x)) sequences from a prior over 42 sparse-parity concepts (trained once, cached in the "
    "store), a biased weak labeller (20% of inputs wrong, always the same), naive fine-tuning on its labels vs "
    "fine-tuning on labels refined from k = 1..32 weakly labelled demonstrations (the icl-refine student: k = 32), "
    "5 seeds. Departs from the paper: "
    "boolean concepts with one token per labelled example instead of language and LLMs, a student that is the "
    "in-context model fine-tuned to answer without demonstrations (it can memorize the 64 inputs), and an "
    "empirical exponential fit instead of the paper's bound",
    task=ICL_TASK, losses=["xent"], label_methods=["icl-refine"], icl_k=32, seeds=5,
)

