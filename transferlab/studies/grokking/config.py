"""The grokking study's config and the papers' presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import ConfigPart, PresetRegistry, StudyConfig, flat_as
from transferlab.core.memory import check_fits
from transferlab.data.algorithmic import MODULAR_OPERATIONS, OPERATIONS, S5_OPERATIONS, is_prime


class Task(ConfigPart):
    """The algorithmic task and its train/validation split."""

    operation: str = Field("x+y", description="the binary operation (data/algorithmic.py: x+y, x-y, x*y, x/y, "
                                              "polynomials, s5:x*y ...)")
    p: int = Field(97, ge=2, description="the modulus (a prime where the operation needs inverses)")
    train_fraction: float = Field(0.35, gt=0.0, lt=1.0, description="fraction of all pairs used for training")
    split_seed: int = Field(0, description="seed of the train/validation split (independent of the init seed)")
    split_style: Literal["torch", "python"] = Field(
        "torch", description="torch: a seeded randperm; python: Nanda et al.'s random.shuffle split")

    @model_validator(mode="after")
    def _check(self) -> Task:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation '{self.operation}'; choose one of: {', '.join(OPERATIONS)}")
        if self.operation in MODULAR_OPERATIONS and MODULAR_OPERATIONS[self.operation][1] and not is_prime(self.p):
            raise ValueError(
                f"operation '{self.operation}' needs inverses mod p, but p={self.p} is not prime; use a prime p"
            )
        return self

    @property
    def n_tokens(self) -> int:
        return 120 if self.operation in S5_OPERATIONS else self.p


class Model(ConfigPart):
    """The network: one of three families (the one-hot MLP, Nanda et al.'s transformer, Power et al.'s
    equation decoder in two builds); each family's own options are refused for the others."""

    kind: Literal["mlp", "transformer", "power_transformer", "grokfast_transformer"] = Field(
        "mlp", description="mlp: one-hot MLP; transformer: Nanda et al.'s ([a, b, =], pre-LN optional); "
                           "power_transformer / grokfast_transformer: Power et al.'s [x, ∘, y, =] decoder as "
                           "danielmamay/grokking / ironjr/grokfast build it (models/transformer.py)",
        json_schema_extra=flat_as("model"))
    width: int = Field(256, ge=1, description="MLP hidden width")
    depth: int = Field(1, ge=1, description="MLP hidden layers")
    activation: Literal["relu", "quadratic", "gelu"] = Field(
        "quadratic", description="model=mlp: the hidden activation (quadratic: x², as Gromov)")
    bias: bool = Field(False, description="model=mlp: layers with bias terms (default: none)")
    init: Literal["unit", "pytorch", "gromov"] = Field(
        "unit", description="MLP init: unit (unit-variance pre-activations), pytorch (nn.Linear's default; "
                            "Prieto et al.), gromov (every weight N(0, 0.5/(2 width)^(1/3)))")
    d_model: int = Field(128, ge=1, description="transformer models: residual stream width (embedding size)")
    n_heads: int = Field(4, ge=1, description="transformer attention heads")
    d_mlp: int = Field(512, ge=1, description="transformer MLP width")
    n_layers: int = Field(1, ge=1, description="transformer models: number of blocks (attention + MLP)")
    layer_norm: bool = Field(False, description="pre-LN in model=transformer (Nanda et al. use none)")
    eq_output: bool = Field(False, description="model=transformer also scores the '=' token (Nanda et al.: p + 1 "
                                               "outputs)")

    @model_validator(mode="after")
    def _check(self) -> Model:
        if self.eq_output and self.kind != "transformer":
            raise ValueError("eq_output (a readout class for the '=' token) needs model=transformer")
        if self.layer_norm and self.kind != "transformer":
            raise ValueError("layer_norm (pre-LN) is an option of model=transformer; power_transformer is always "
                             "post-LN and the MLP has none")
        if self.init != "unit" and self.kind != "mlp":
            raise ValueError(f"init={self.init} is an MLP option; the transformers have their reference's own init")
        if self.kind != "mlp" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


class Loss(ConfigPart):
    """The training loss and the precision it is computed in."""

    kind: Literal["cross_entropy", "stablemax", "mse"] = Field(
        "cross_entropy", description="cross_entropy | stablemax (Prieto et al.) | mse on one-hot targets (Gromov)",
        json_schema_extra=flat_as("loss"))
    dtype: Literal["float32", "float64"] = Field("float32", description="precision the loss is computed in",
                                                 json_schema_extra=flat_as("loss_dtype"))


class Optimizer(ConfigPart):
    """The update: Adam -> (decoupled) weight decay -> lr (AdamW; 'coupled' is Adam + L2), with the optional
    gradient transforms (⊥Grad, Grokfast) and the norm clamp after each step."""

    lr: float = Field(3e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(1.0, ge=0.0, description="weight decay (decoupled, AdamW) or L2 (coupled)")
    weight_decay_style: Literal["decoupled", "coupled"] = Field(
        "decoupled", description="decoupled: AdamW; coupled: Adam with L2 added to the gradient (Grokfast's)")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam's beta1: decay of the running mean of gradients")
    beta2: float = Field(0.98, ge=0.0, lt=1.0,
                         description="Adam's beta2: decay of the running mean of squared gradients")
    eps: float = Field(1e-8, gt=0.0, description="Adam's epsilon, added to the root of the second moment")
    orthograd: bool = Field(False, description="⊥Grad: the gradient projected orthogonal to the weights, "
                                               "rescaled to its norm (Prieto et al.)")
    grokfast: Literal["none", "ema", "ma"] = Field("none", description="Grokfast gradient filter (Lee et al.)")
    grokfast_alpha: float = Field(0.98, ge=0.0, lt=1.0,
                                  description="grokfast=ema: decay of the gradients' exponential moving average")
    grokfast_lamb: float = Field(2.0, ge=0.0, description="Grokfast's amplification lamb")
    grokfast_window: int = Field(100, ge=1, description="grokfast=ma: steps in the gradients' moving-average window")
    norm_clamp: float | Literal["none", "memorization"] = Field(
        "none", description="the causal test of the norm account: hold the squared weight norm ‖θ‖² at this "
                            "number after every step, or at its value when the member memorizes (train accuracy "
                            "99%; 'memorization'); 'none' trains as usual")

    @field_validator("norm_clamp")
    @classmethod
    def _positive_clamp(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not v > 0:
            raise ValueError(f"norm_clamp must be a squared norm > 0, 'memorization' or 'none', got {v}")
        return v


class Schedule(ConfigPart):
    """The step budget, the batches, the learning-rate schedule, evaluations, checkpoints and when to stop."""

    steps: int = Field(3000, ge=1, description="the step budget")
    batch_size: int = Field(0, ge=0, description="training rows per step (0: full batch)")
    order_seed: int = Field(0, description="seed of the minibatch order")
    warmup_steps: int = Field(10, ge=0, description="linear warm-up steps")
    warmup_from_zero: bool = Field(False, description="warm-up factor step/warmup (first step lr 0) instead of "
                                                      "(step+1)/warmup")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="after the warm-up")
    eval_every: int = Field(20, ge=1, description="steps between evaluations")
    log_spaced_evals: int = Field(0, ge=0, description="extra evaluations at log-spaced steps")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    stop_after_generalized: int = Field(300, description="stop this many steps after every member generalized "
                                                         "(-1: run the whole budget)")
    generalized_when: Literal["val_acc_99", "val_loss_001"] = Field(
        "val_acc_99", description="what generalized means: 99% validation accuracy, or validation loss < 0.01 "
                                  "(Nanda et al.'s)")
    explode_factor: float = Field(1e3, ge=0.0, description="stop a member whose training loss exceeds this many "
                                                           "times its first (diverged); 0: only NaN/Inf")
    forecast_early_stop: bool = Field(False, description="stop the run at an evaluation where the forecast says "
                                                         "no live member that has not yet generalized will do "
                                                         "so within the step budget (analysis.forecast_"
                                                         "generalization; its members are then censored)")


class Monitors(ConfigPart):
    """What is measured besides loss and accuracy."""

    progress_measures: bool = Field(True, description="log Nanda et al.'s Fourier progress measures (x+y only)")
    every: int = Field(10, ge=0, description="plasticity monitors (Fisher trace, gradient coherence and noise "
                                             "scale, dormant units, feature rank) every this many evaluations and "
                                             "at the last step; 0: off", json_schema_extra=flat_as("monitor_every"))
    probe: int = Field(256, ge=1, description="training examples the per-sample gradients are taken on",
                       json_schema_extra=flat_as("monitor_probe"))
    # the forecast of the generalization step (analysis.forecast_generalization)
    forecast_ildr: bool = Field(True, description="log the ILDR (inter/intra-class distance ratio of the "
                                                  "representation the readout reads, on the validation pairs; "
                                                  "arXiv 2604.20923) at every evaluation: the forecast's "
                                                  "progress measure")


class GrokConfig(StudyConfig):
    """One grokking setup: an algorithmic task, a model, a loss, an optimizer, a schedule and monitors. The Python
    defaults are the CLI's default run (`transferlab grok` with no preset). Every key also has its flat name
    (``lr``, ``steps``, ``model``, ``monitor_every``, ...): the run id is the hash of that flat view."""

    seed: int = Field(0, description="initialization seed (--seeds K trains seed .. seed+K-1)")
    task: Task = Field(default_factory=Task, description="the algorithmic task and its split")
    model: Model = Field(default_factory=Model, description="the network")
    loss: Loss = Field(default_factory=Loss, description="the training loss")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="the update rule")
    schedule: Schedule = Field(default_factory=Schedule, description="steps, batches, evaluations, stopping")
    monitors: Monitors = Field(default_factory=Monitors, description="measurements besides loss and accuracy")
    # how the members run (the same math)
    ensemble_mode: Literal["auto", "vmap", "loop"] = Field(
        "auto", description="how the members of --seeds run together (train/ensemble.py)")
    chunk_size: int = Field(0, ge=0, description="> 0: each step's gradient accumulated over row chunks (the same "
                                                 "math; faster for big ensembles on CPU)")
    num_threads: int | None = Field(None, ge=1, description="CPU threads (default: 1 for a small step, else all; "
                                                            "not part of the run's identity)")

    HASH_WHEN_CHANGED = frozenset({"explode_factor", "norm_clamp", "forecast_ildr", "forecast_early_stop"})

    @model_validator(mode="after")
    def _check(self) -> GrokConfig:
        self.check_memory(1)
        return self

    def memory_bytes(self, members: int = 1) -> float:
        """Lower bound of the bytes a run of ``members`` needs at once: the task's pairs, each member's
        parameters x 5 (weights, gradient, Adam's two moments, checkpoint copy), and one member's
        full-batch logits and hidden activations x 2 (values and softmax or gradient; members can run
        one by one, so activations are counted once). Absurd sizes are refused; a borderline one may
        still run out of memory."""
        m, n_tok = self.model, self.n_tokens
        n_classes = n_tok + (1 if m.eq_output else 0)
        pairs = float(n_tok) ** 2
        if m.kind == "mlp":
            params = 2 * n_tok * m.width + (m.depth - 1) * m.width ** 2 + m.width * n_classes
            hidden_per_row = m.width * m.depth
        else:
            d = m.d_model
            n_classes += 0 if m.kind == "transformer" else 2  # equation models read out over [0, p) + ∘ and =
            params = (n_tok + 2) * d + 4 * d + m.n_layers * (4 * d * d + 2 * d * m.d_mlp) + d * n_classes
            hidden_per_row = 3 * m.n_layers * (6 * d + m.d_mlp + 3 * m.n_heads)
        value = 8 if self.loss.dtype == "float64" else 4
        acts = 2 * pairs * (n_classes * value + hidden_per_row * 4)
        return 24 * pairs + members * 5 * 4 * float(params) + acts

    def check_memory(self, members: int = 1) -> None:
        what = f"p={self.task.p}" if self.n_tokens == self.task.p else self.task.operation
        check_fits(self.memory_bytes(members),
                   f"this grokking setup ({what}, {self.model.kind}, {members} member{'s' if members > 1 else ''})",
                   "use a smaller p, width, d_model or fewer --seeds")

    @property
    def n_tokens(self) -> int:
        return self.task.n_tokens

    def ensemble_key(self) -> str:
        """Configs equal up to seed, lr and weight decay train together as one ensemble."""
        return self.updated(seed=0, lr=1.0, weight_decay=0.0).config_hash()

PRESETS = PresetRegistry()
PRESETS.add(
    "default",
    "Fast CPU default: MLP on one-hot inputs, x^2 activation, width 256, p=97, 35% train, AdamW lr 3e-3, "
    "wd 1, full batch. Memorizes in ~150 steps and groks (99% val) around 1,000 steps; stops 300 steps later. "
    "The same as GrokConfig() in Python.",
)
PRESETS.add(
    "mini",
    "The first transformer run: Nanda et al.'s 1-layer transformer (d_model 128, 4 heads, ReLU MLP 512, their "
    "init) on x+y mod 59 at 40% train, full batch, AdamW lr 1e-3, wd 1, with their Fourier progress measures; "
    "memorizes, then groks. Between the default MLP (seconds) and nanda2023 (p = 113, ~7-13k steps).",
    operation="x+y", p=59, train_fraction=0.4, model="transformer", n_layers=1, d_model=128, n_heads=4,
    d_mlp=512, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, steps=8000, eval_every=50,
    checkpoint_every=1000, stop_after_generalized=200,
)
PRESETS.add(
    "micro",
    "test-sized: the default MLP on x+y mod 23 at 60% train, lr 1e-2, at most 600 steps evaluated every 10, "
    "no monitors; a second or two (measured: memorizes at step 20, 99% validation at 370)",
    p=23, train_fraction=0.6, lr=1e-2, steps=600, eval_every=10, monitor_every=0, stop_after_generalized=50,
)
PRESETS.add(
    "power2022",
    "Power et al. 2022 (arXiv 2201.02177) as their public reproduction (danielmamay/grokking) sets it up: x/y "
    "mod 97 fed as [x, ∘, y, =], 50% train, 2-layer post-LN decoder d_model 128, 4 heads, ReLU MLP 512, no "
    "biases, PyTorch's default init (embeddings N(0, 1)), readout over p + 2 tokens, cross-entropy in float32, "
    "AdamW lr 1e-3, betas (0.9, 0.98), eps 1e-8, wd 1 on every parameter, 10-step linear warm-up, batch 512, "
    "a budget of 100k steps (stops 500 steps after 99% validation accuracy). Departures: the warm-up factor is "
    "(step+1)/10 (the reference's LinearLR: 0.1 + 0.09 step; measured: no effect), each epoch drops its last "
    "partial batch (48 of 4,656 pairs; measured: the reference memorizes ~1.6x later because of it, see "
    "docs/RESULTS.md), and the split is seeded. Measured over 3 seeds: 99% validation at 2,900-3,100 steps; "
    "the reference's code, run here, at 2,400-3,400 (its README figure's ~25k is not what its code does now).",
    operation="x/y", p=97, train_fraction=0.5, model="power_transformer", n_layers=2, d_model=128, n_heads=4,
    d_mlp=512, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, eps=1e-8, warmup_steps=10,
    batch_size=512, steps=100_000, eval_every=100, checkpoint_every=1000, stop_after_generalized=500,
    progress_measures=False,
)
PRESETS.add(
    "nanda2023",
    "Nanda et al. 2023 (arXiv 2301.05217): x+y mod 113, 30% train, 1-layer transformer d_model 128, 4 heads, "
    "d_mlp 512, ReLU, no LayerNorm, full batch, AdamW lr 1e-3, wd 1, betas (0.9, 0.98), cross-entropy in float64; "
    "as their code: p + 1 readout classes, their random.shuffle split (3,830 pairs), warm-up lr step/10. "
    "Paper: cleanup ends ~13.3k; their saved run: test loss < 0.01 at ~9.9k; ours over 6 seeds: 6.3k-13.3k, "
    "median 7.45k.",
    operation="x+y", p=113, train_fraction=0.3, model="transformer", n_layers=1, d_model=128, n_heads=4,
    d_mlp=512, layer_norm=False, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
    batch_size=0, steps=25000, eval_every=100, checkpoint_every=1000, loss_dtype="float64",
    eq_output=True, split_style="python", warmup_from_zero=True, stop_after_generalized=-1,
)
PRESETS.add(
    "gromov2023",
    "Gromov 2023 (arXiv 2301.02679): x+y mod 97, 50% train, one hidden layer of N = 500 with x^2 activation, "
    "no bias, one-hot inputs, MSE on one-hot targets, full batch, every weight N(0, 0.5/(2N)^(1/3)) = N(0, 0.05), "
    "AdamW lr 1e-2, betas (0.9, 0.98), eps 1e-8 and no weight decay (the paper's claim: it groks without "
    "regularization), no warm-up; as the code of Gromov's group (d-doshi/Grokking; the paper's own notebook "
    "could not be read). Budget 5,000 steps (stops 200 after 99% validation accuracy); the split is ours.",
    operation="x+y", p=97, train_fraction=0.5, model="mlp", width=500, depth=1, activation="quadratic",
    bias=False, init="gromov", loss="mse", lr=1e-2, weight_decay=0.0, beta1=0.9, beta2=0.98, eps=1e-8,
    warmup_steps=0, steps=5000, eval_every=20, stop_after_generalized=200,
)
_GROKFAST = dict(
    operation="x*y", p=97, train_fraction=0.5, model="grokfast_transformer", n_layers=2, d_model=128, n_heads=4,
    d_mlp=512, lr=1e-3, beta1=0.9, beta2=0.98, eps=1e-8, weight_decay_style="coupled", warmup_steps=10,
    warmup_from_zero=True, batch_size=512, eval_every=50, checkpoint_every=1000, progress_measures=False,
)
_GROKFAST_NOTE = (
    "Departures: our x*y keeps y = 0 (97 more equations, 1%), each epoch drops its last partial batch (48 of "
    "4,656 pairs), evaluation every 50 steps instead of every epoch (~9 steps).")
PRESETS.add(
    "grokfast2024",
    "Grokfast-EMA (Lee et al. 2024, arXiv 2405.20233) on the paper's algorithmic task as ironjr/grokfast runs it: "
    "x*y mod 97 fed as [x, ∘, y, =], 50% train, 2-layer decoder d_model 128, 4 heads, GELU MLP 512, its "
    "LayerNorm placement (x = LN(x); x + attn(x); x + mlp(LN(x)); final LN), PyTorch's default init (with its "
    "5-row position table, one row never read), Adam lr 1e-3, betas (0.9, 0.98) with coupled L2 0.005, "
    "warm-up step/10, batch 512, EMA alpha 0.98, lamb 2 (its README command). README: "
    "910 iterations to 95% validation accuracy (baseline 39,890). " + _GROKFAST_NOTE,
    **_GROKFAST, grokfast="ema", grokfast_alpha=0.98, grokfast_lamb=2.0, weight_decay=0.005, steps=20_000,
    stop_after_generalized=500,
)
PRESETS.add(
    "grokfast2024-ma",
    "Grokfast-MA on the same task and model as grokfast2024: window 100, lamb 5, coupled L2 0.01 (the README "
    "command). README: 790 iterations to 95% validation accuracy. " + _GROKFAST_NOTE,
    **_GROKFAST, grokfast="ma", grokfast_window=100, grokfast_lamb=5.0, weight_decay=0.01, steps=20_000,
    stop_after_generalized=500,
)
PRESETS.add(
    "grokfast2024-baseline",
    "The Grokfast paper's baseline: grokfast2024's task, model and optimizer without the filter and, as its "
    "README command (`python main.py`), without weight decay. README: 39,890 iterations to 95% validation "
    "accuracy; budget 60,000 steps here (the reference's: 300k). " + _GROKFAST_NOTE,
    **_GROKFAST, grokfast="none", weight_decay=0.0, steps=60_000, stop_after_generalized=500,
)
PRESETS.add(
    "grokfast-mlp",
    "Grokfast-EMA (alpha 0.98, lamb 2) on the default one-hot MLP (x+y mod 97, 35%, full batch) with Adam + "
    "coupled L2 1e-3; not the paper's task (that is grokfast2024). Compare with grokfast-mlp-baseline.",
    grokfast="ema", grokfast_alpha=0.98, grokfast_lamb=2.0, weight_decay_style="coupled", weight_decay=1e-3,
    lr=1e-3, steps=6000, eval_every=20, stop_after_generalized=-1,
)
PRESETS.add(
    "grokfast-mlp-baseline",
    "The learning-rate-matched baseline for grokfast-mlp: no filter, lr x (1 + lamb) = 3e-3, since the "
    "EMA filter multiplies the effective learning rate by about (1 + lamb).",
    grokfast="none", weight_decay_style="coupled", weight_decay=1e-3, lr=3e-3, steps=6000, eval_every=20,
    stop_after_generalized=-1,
)
_PRIETO = dict(
    operation="x+y", p=113, train_fraction=0.4, model="mlp", width=200, depth=2, activation="relu", bias=False,
    init="pytorch", weight_decay=0.0, lr=1e-2, beta1=0.9, warmup_steps=0, eval_every=20, batch_size=0,
)
PRESETS.add(
    "prieto2025-stablemax",
    "Prieto et al. 2025 (arXiv 2501.04697), Fig. 1's StableMax run as its official code runs it: x+y mod 113, "
    "40% train, MLP 226 -> [200, 200] -> 113 (ReLU, no bias, nn.Linear's default init) on one-hot inputs, full "
    "batch, StableMax cross-entropy in float64 (model in float32), AdamW lr 0.01, betas (0.9, 0.999), eps 1e-25, "
    "no weight decay, no warm-up. Budget 80,000 steps as the paper's run (stops 500 after 99% validation). "
    "Slow by design: the paper's Fig. 1(b) has test accuracy under 1% up to about 20,000 steps, 64% at 50,000 "
    "and 97% at 75,000; this preset, seed 42, run to 80,000 (docs/RESULTS.md): 49% at 50,000, 95% at 75,000, "
    "96.5% at 80,000, about 5,000 steps behind the figure, so it reaches steps_to_95 (75,600) but not the 99% "
    "of steps_to_generalize within the budget; the official code, side by side, runs ahead of both.",
    **_PRIETO, loss="stablemax", loss_dtype="float64", beta2=0.999, eps=1e-25, steps=80_000,
    stop_after_generalized=500,
)
PRESETS.add(
    "prieto2025-orthograd",
    "Prieto et al. 2025, Fig. 1's ⊥AdamW run: the same task and MLP, softmax cross-entropy in float32, ⊥Grad "
    "(the gradient projected orthogonal to the weights, rescaled to its norm) with AdamW lr 0.01, no weight "
    "decay, 300 steps. Its script passes --beta2 0.99, but the official ⊥Grad wrapper builds its inner AdamW "
    "from lr and weight decay only, so the run steps with AdamW's defaults betas (0.9, 0.999) and eps 1e-8; "
    "this preset does what the code does.",
    **_PRIETO, loss="cross_entropy", loss_dtype="float32", orthograd=True, beta2=0.999, eps=1e-8, steps=300,
    stop_after_generalized=-1,
)

@dataclass(frozen=True)
class SweepPlan:
    """A named sweep (``transferlab sweep grok --plan NAME``): a base preset, overrides and a grid."""

    description: str
    preset: str
    grid: dict[str, list[Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1
    # each grid point is trained once under each of these (e.g. one per architecture, with its own lr values):
    # the sweep runner's samples, so every variant must set the same keys
    variants: list[dict[str, Any]] = field(default_factory=list)


SWEEP_PLANS: dict[str, SweepPlan] = {
    "delay-law": SweepPlan(
        "The delay law on the default MLP: weight decay 0.3-4 at lr 2e-3 and 4e-3, so lr x wd spans 6e-4 to "
        "1.6e-2 (27x); every trial runs until all have generalized (+100 steps) or to the cap of 8,000 steps, "
        "where a trial not yet generalized is censored. 2 seeds: the second seed's trials are the held-out set.",
        preset="default",
        grid={"weight_decay": [0.3, 0.5, 1.0, 2.0, 4.0], "lr": [2e-3, 4e-3]},
        overrides={"steps": 8000, "stop_after_generalized": 100, "eval_every": 20, "monitor_every": 0},
        seeds=2,
    ),
    "norm-clamp": SweepPlan(
        "The causal test of the norm account on the default MLP (x+y mod 97, lr 1e-3, wd 1): ‖θ‖² held after "
        "every step at 2,000-14,000 (the unclamped run memorizes near 18,000 and generalizes after its norm has "
        "decayed), and held at its value at memorization; 2 seeds, a budget of 6,000 steps (the unclamped run "
        "generalizes at 1,040), where a trial not yet generalized is censored. The sweep page fits "
        "T_grok - T_mem = A·exp(alpha·rho) and counts the memorization-clamped trials that generalized.",
        preset="default",
        grid={"norm_clamp": [2000.0, 3000.0, 4500.0, 6000.0, 8000.0, 11000.0, 14000.0, "memorization"]},
        overrides={"steps": 6000, "stop_after_generalized": 100, "eval_every": 20, "monitor_every": 0},
        seeds=2,
    ),
    "norm-clamp-layernorm": SweepPlan(
        "The clamp with and without LayerNorm (arXiv 2606.13753: the delay grows as exp(alpha·rho) with the held "
        "norm rho, and a final LayerNorm removes that dependence) on the transformer of delay-law-wide, which "
        "groks: Nanda et al.'s 1-layer transformer made CPU-sized (x+y mod 59, 40% train, d_model 64, 4 heads, "
        "d_mlp 128, AdamW lr 6e-3, wd 1), layer_norm off (no LayerNorm) and on (pre-LN blocks and a final "
        "LayerNorm). As the paper does, ‖θ‖² is held from the first step at multiples of the norm at which the "
        "free model generalizes (Wc: about 850 without LayerNorm, 460 with it, measured on 2 seeds each): 0.6, "
        "0.8, 1, 1.2 and 1.5 x Wc; 2 seeds; a budget of 6,000 steps (free, the models generalize near 1,000-1,800 "
        "and 500). The sweep page fits each arm apart.",
        preset="default",
        grid={"operation": ["x+y"]},
        overrides={"model": "transformer", "p": 59, "train_fraction": 0.4, "d_model": 64, "n_heads": 4,
                   "d_mlp": 128, "n_layers": 1, "lr": 6e-3, "weight_decay": 1.0, "steps": 6000,
                   "stop_after_generalized": 100, "eval_every": 10, "monitor_every": 0, "progress_measures": False},
        seeds=2,
        variants=[{"layer_norm": ln, "norm_clamp": round(m * wc)}
                  for ln, wc in ((False, 850.0), (True, 460.0)) for m in (0.6, 0.8, 1.0, 1.2, 1.5)],
    ),
    "delay-law-wide": SweepPlan(
        "The delay law across models and tasks (issue 25): two architectures, the default MLP (x² MLP, width 256, "
        "p = 97, 35% train; lr 1.5e-3, 5e-3, 1.5e-2; a cap of 4,000 steps) and Nanda et al.'s 1-layer "
        "transformer made CPU-sized (p = 59, 40% train, d_model 64, 4 heads, d_mlp 128, no LayerNorm; lr 2e-3, "
        "6e-3, 2e-2; a cap of 8,000 steps, since its slowest cells take 4,000-8,000), x three operations (x+y, "
        "x-y, x/y) x weight decay 1 and 2, so lr x wd spans 1.5e-3 to 3e-2 (MLP) and 2e-3 to 4e-2 "
        "(transformer), 20x each; 2 seeds: 72 trials, trained as 6 ensembles of 12 (one per architecture and "
        "operation). Evaluated every 10 steps; a trial runs until its ensemble has generalized (+100 steps) or "
        "to its cap, where it is censored. The forms of the law are calibrated on seed 0 (the first-passage "
        "form, as arXiv 2605.18845, on one cell per architecture) and predict the rest.",
        preset="default",
        grid={"operation": ["x+y", "x-y", "x/y"], "weight_decay": [1.0, 2.0]},
        overrides={"stop_after_generalized": 100, "eval_every": 10, "monitor_every": 0,
                   "progress_measures": False, "checkpoint_every": 1000},
        seeds=2,
        variants=[*({"model": "mlp", "p": 97, "train_fraction": 0.35, "d_model": 128, "d_mlp": 512, "lr": lr,
                     "steps": 4000} for lr in (1.5e-3, 5e-3, 1.5e-2)),
                  *({"model": "transformer", "p": 59, "train_fraction": 0.4, "d_model": 64, "d_mlp": 128,
                     "lr": lr, "steps": 8000} for lr in (2e-3, 6e-3, 2e-2))],
    ),
}
