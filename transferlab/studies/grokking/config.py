"""The grokking study's config and the papers' presets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.core.memory import check_fits
from transferlab.data.algorithmic import MODULAR_OPERATIONS, OPERATIONS, S5_OPERATIONS, is_prime


class GrokConfig(StudyConfig):
    # task
    operation: str = "x+y"
    p: int = Field(97, ge=2)
    train_fraction: float = Field(0.35, gt=0.0, lt=1.0)
    split_seed: int = 0
    split_style: Literal["torch", "python"] = "torch"  # python: Nanda et al.'s random.shuffle split
    seed: int = 0
    order_seed: int = 0
    # model
    model: Literal["mlp", "transformer"] = "mlp"
    width: int = Field(256, ge=1)
    depth: int = Field(1, ge=1)
    activation: Literal["relu", "quadratic", "gelu"] = "quadratic"
    bias: bool = False
    d_model: int = Field(128, ge=1)
    n_heads: int = Field(4, ge=1)
    d_mlp: int = Field(512, ge=1)
    n_layers: int = Field(1, ge=1)
    layer_norm: bool = False
    eq_output: bool = False  # transformer readout also scores the '=' token (Nanda et al.: p + 1 outputs)
    # loss
    loss: Literal["cross_entropy", "stablemax", "mse"] = "cross_entropy"
    loss_dtype: Literal["float32", "float64"] = "float32"
    # optimizer: AdamW = adam -> decoupled weight decay -> lr; 'coupled' is Adam + L2
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1.0, ge=0.0)
    weight_decay_style: Literal["decoupled", "coupled"] = "decoupled"
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.98, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    warmup_steps: int = Field(10, ge=0)
    warmup_from_zero: bool = False  # lr factor step/warmup (first step lr 0) instead of (step+1)/warmup
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    orthograd: bool = False
    grokfast: Literal["none", "ema", "ma"] = "none"
    grokfast_alpha: float = Field(0.98, ge=0.0, lt=1.0)
    grokfast_lamb: float = Field(2.0, ge=0.0)
    grokfast_window: int = Field(100, ge=1)
    # schedule
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(0, ge=0)  # 0 = full batch
    ensemble_mode: Literal["auto", "vmap", "loop"] = "auto"  # how members run together (train/ensemble.py)
    chunk_size: int = Field(0, ge=0)  # >0: gradient accumulated over row chunks (faster for big ensembles on CPU)
    eval_every: int = Field(20, ge=1)
    log_spaced_evals: int = Field(0, ge=0)
    checkpoint_every: int = Field(500, ge=1)
    stop_after_generalized: int = -1  # stop this many steps after every member generalized (-1: never)
    generalized_when: Literal["val_acc_99", "val_loss_001"] = "val_acc_99"  # what "generalized" means for it
    progress_measures: bool = True  # Fourier measures of Nanda et al. (modular addition only)
    # stop a member whose training loss exceeds this many times its first one (diverged); 0 = only NaN/Inf
    explode_factor: float = Field(1e3, ge=0.0)

    HASH_WHEN_CHANGED = frozenset({"explode_factor"})
    # plasticity monitors (Fisher trace, gradient coherence and noise scale, dormant units, feature
    # effective rank) every this many evaluations and at the last step; 0 = off
    monitor_every: int = Field(10, ge=0)
    monitor_probe: int = Field(256, ge=1)  # training examples the per-sample gradients are taken on

    @model_validator(mode="after")
    def _check(self) -> GrokConfig:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation '{self.operation}'; choose one of: {', '.join(OPERATIONS)}")
        if self.operation in MODULAR_OPERATIONS and MODULAR_OPERATIONS[self.operation][1] and not is_prime(self.p):
            raise ValueError(
                f"operation '{self.operation}' needs inverses mod p, but p={self.p} is not prime; use a prime p"
            )
        if self.eq_output and self.model != "transformer":
            raise ValueError("eq_output (a readout class for the '=' token) needs model=transformer")
        if self.model == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        self.check_memory(1)
        return self

    def memory_bytes(self, members: int = 1) -> float:
        """Lower bound of the bytes a run of ``members`` needs at once: the task's pairs, each member's
        parameters x 5 (weights, gradient, Adam's two moments, checkpoint copy), and one member's
        full-batch logits and hidden activations x 2 (values and softmax or gradient; members can run
        one by one, so activations are counted once). Absurd sizes are refused; a borderline one may
        still run out of memory."""
        n_tok = self.n_tokens
        n_classes = n_tok + (1 if self.eq_output else 0)
        pairs = float(n_tok) ** 2
        if self.model == "mlp":
            params = 2 * n_tok * self.width + (self.depth - 1) * self.width ** 2 + self.width * n_classes
            hidden_per_row = self.width * self.depth
        else:
            d = self.d_model
            params = n_tok * d + 3 * d + self.n_layers * (4 * d * d + 2 * d * self.d_mlp) + d * n_classes
            hidden_per_row = 3 * self.n_layers * (6 * d + self.d_mlp + 3 * self.n_heads)
        value = 8 if self.loss_dtype == "float64" else 4
        acts = 2 * pairs * (n_classes * value + hidden_per_row * 4)
        return 24 * pairs + members * 5 * 4 * float(params) + acts

    def check_memory(self, members: int = 1) -> None:
        what = f"p={self.p}" if self.n_tokens == self.p else self.operation
        check_fits(self.memory_bytes(members),
                   f"this grokking setup ({what}, {self.model}, {members} member{'s' if members > 1 else ''})",
                   "use a smaller p, width, d_model or fewer --seeds")

    @property
    def n_tokens(self) -> int:
        return 120 if self.operation in S5_OPERATIONS else self.p

    def ensemble_key(self) -> str:
        """Configs equal up to seed, lr and weight decay train together as one ensemble."""
        d = self.to_dict()
        for k in ("seed", "lr", "weight_decay"):
            d.pop(k)
        return type(self)(**{**d, "seed": 0, "lr": 1.0, "weight_decay": 0.0}).config_hash()


PRESETS = PresetRegistry()
PRESETS.add(
    "default",
    "Fast CPU default: MLP on one-hot inputs, x^2 activation, width 256, p=97, 35% train, AdamW lr 3e-3, "
    "wd 1, full batch. Memorizes in ~150 steps and groks (99% val) around 1,000 steps.",
    stop_after_generalized=300,
)
PRESETS.add(
    "power2022",
    "Power et al. 2022 (arXiv 2201.02177): x/y mod 97, 50% train, 2-layer transformer d_model 128, 4 heads, "
    "AdamW lr 1e-3, betas (0.9, 0.98), wd 1, 10-step warm-up, batch min(512, |train|/2).",
    operation="x/y", p=97, train_fraction=0.5, model="transformer", n_layers=2, d_model=128, n_heads=4,
    d_mlp=512, layer_norm=True, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
    batch_size=512, steps=20000, eval_every=100, checkpoint_every=1000,
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
    eq_output=True, split_style="python", warmup_from_zero=True,
)
PRESETS.add(
    "gromov2023",
    "Gromov 2023: 2-layer MLP (one hidden layer of 500), x^2 activation, no bias, p=97, one-hot inputs, "
    "MSE on one-hot targets, full batch, AdamW lr 1e-2, 50% train.",
    operation="x+y", p=97, train_fraction=0.5, model="mlp", width=500, depth=1, activation="quadratic",
    loss="mse", lr=1e-2, weight_decay=1.0, steps=5000, eval_every=20,
)
PRESETS.add(
    "grokfast2024",
    "Grokfast-EMA (Lee et al. 2024, arXiv 2405.20233; alpha 0.98, lamb 2) on the default MLP with Adam + "
    "coupled L2, as in the paper's baseline optimizer. Compare with grokfast2024-baseline.",
    grokfast="ema", grokfast_alpha=0.98, grokfast_lamb=2.0, weight_decay_style="coupled", weight_decay=1e-3,
    lr=1e-3, steps=6000, eval_every=20,
)
PRESETS.add(
    "grokfast2024-baseline",
    "The learning-rate-matched baseline for grokfast2024: no filter, lr x (1 + lamb) = 3e-3, since the "
    "EMA filter multiplies the effective learning rate by about (1 + lamb).",
    grokfast="none", weight_decay_style="coupled", weight_decay=1e-3, lr=3e-3, steps=6000, eval_every=20,
)
PRESETS.add(
    "prieto2025",
    "Prieto et al. 2025 (arXiv 2501.04697): MLP [200, 200], ReLU, no bias, one-hot inputs, p=113, 40% train, "
    "full batch, StableMax cross-entropy in float64, ⊥Grad (OrthoGrad) with AdamW and no weight decay.",
    operation="x+y", p=113, train_fraction=0.4, model="mlp", width=200, depth=2, activation="relu", bias=False,
    loss="stablemax", loss_dtype="float64", orthograd=True, weight_decay=0.0, lr=1e-3, steps=6000,
    eval_every=20,
)
