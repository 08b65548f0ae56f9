"""The training sub-config every LM study embeds (``train:`` in YAML, ``--set train.lr=...``).

One place for how a zoo model trains (window length, batch, optimizer, evaluation, precision, device),
so the zoo build, the transfer sweep, the EFT demo and correlate-zoo share the same fields instead of
copying them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from transferlab.core.devices import Compile, Device, DType


class TrainSettings(BaseModel):
    """How a zoo model trains; ``lr`` is the peak of a linear warm-up + cosine schedule (AdamW)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seq_len: int = Field(128, ge=2, description="tokens per training window (the model reads seq_len + 1)")
    batch_size: int = Field(32, ge=1, description="windows per step (the largest; see min_steps)")
    min_steps: int = Field(
        100, ge=1, description="a budget too small for this many steps at batch_size trains with smaller batches"
    )
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False, description="peak learning rate")
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="fraction of the steps spent warming up")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="AdamW's decoupled weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW's beta1: decay of the running mean of gradients")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW's beta2: decay of the running mean of squared gradients")
    evals: int = Field(20, ge=1, description="evaluations per run, evenly spaced (plus step 0)")
    eval_tokens: int = Field(16384, ge=1, description="validation tokens scored at each evaluation")
    dtype: DType = Field("auto", description="auto: bf16 autocast where the hardware has it, else float32")
    device: Device = Field("auto", description="auto (CUDA when present) | cpu | cuda")
    compile: Compile = Field("auto", description="train through torch.compile: auto (where it can, for runs "
                             "of 300+ steps) | true | false")
    num_threads: int | None = Field(None, ge=1, description="CPU threads (default: from the work per step)")
    seed: int = Field(0, ge=0, description="initialization seed; also the data order")
    monitor: bool = Field(True, description="flag training losses off the live power-law fit")

    def batch_for(self, tokens: int) -> int:
        """The batch a budget of ``tokens`` trains with: ``batch_size``, halved until the run has at least
        ``min_steps`` steps (never below 1 window)."""
        b = self.batch_size
        while b > 1 and tokens // (b * self.seq_len) < self.min_steps:
            b //= 2
        return b

    def steps_for(self, tokens: int) -> int:
        return max(1, tokens // (self.batch_for(tokens) * self.seq_len))

    def eval_every_for(self, steps: int) -> int:
        return max(1, steps // self.evals)
