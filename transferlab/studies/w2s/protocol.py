"""What every weak-to-strong trainer shares: the four splits, the weak model's own hold-out, the selection
rule, the typed baseline (floor and ceiling) and the per-seed student metrics.

The one pipeline (:mod:`transferlab.studies.w2s.run`) drives a :class:`Trainer` strategy: ``heads`` (linear
heads on frozen features, :mod:`~transferlab.studies.w2s.heads_trainer`) or ``finetune`` (whole Hugging Face
models, :mod:`~transferlab.studies.w2s.finetune`). A trainer makes the baseline and the students; everything
else (splits, the gap check, PGR, tests between losses, the store, the report) is the pipeline's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferlab.core.errors import DataError
from transferlab.data.classification import ClassificationData
from transferlab.metrics import accuracy, agreement, auroc, ece, misfit
from transferlab.studies.w2s.config import W2SConfig

FRACTIONS = {"weak_train": 0.2, "transfer": 0.4, "val": 0.1, "test": 0.3}
SPLIT_CODE = {"weak_train": 0, "transfer": 1, "val": 2, "test": 3}
WEAK_SEED_OFFSET = 10_000  # the weak model's init seed: seed + s + 10,000 (the student's is seed + s)


@dataclass
class Splits:
    weak_train: torch.Tensor
    transfer: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def codes(self, n: int) -> torch.Tensor:
        c = torch.full((n,), -1, dtype=torch.long)
        for name, code in SPLIT_CODE.items():
            c[getattr(self, name)] = code
        return c

    @classmethod
    def from_codes(cls, codes: torch.Tensor) -> Splits:
        return cls(**{name: (codes == code).nonzero().flatten() for name, code in SPLIT_CODE.items()})

    def weak_holdout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, hold): the weak model's own early stopping uses a gold slice (a fifth) of weak-train."""
        n_hold = max(2, len(self.weak_train) // 5)
        return self.weak_train[n_hold:], self.weak_train[:n_hold]


def split_sizes(cfg: W2SConfig, n: int, n_classes: int) -> dict[str, int]:
    t = cfg.task
    given = {"weak_train": t.n_weak_train, "transfer": t.n_transfer, "val": t.n_val, "test": t.n_test}
    sizes = {k: (v if v is not None else int(FRACTIONS[k] * n)) for k, v in given.items()}
    total = sum(sizes.values())
    if total > n:
        raise DataError(
            f"split too small: the task has {n} examples but the splits ask for {total} "
            f"({', '.join(f'{k}={v}' for k, v in sizes.items())})",
            where=cfg.task.name,
            fix="lower n_weak_train/n_transfer/n_val/n_test (or leave them unset for fractions of the task)",
        )
    minimum = {"weak_train": max(10, 2 * n_classes), "transfer": max(10, 2 * n_classes), "val": 5, "test": 10}
    for k, m in minimum.items():
        if sizes[k] < m:
            raise DataError(f"split too small: {k} has {sizes[k]} examples, at least {m} are needed",
                            where=cfg.task.name, fix=f"set n_{k} >= {m} or use a larger task")
    return sizes


def make_splits(n: int, sizes: dict[str, int], seed: int) -> Splits:
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    out, start = {}, 0
    for name in SPLIT_CODE:
        out[name] = perm[start : start + sizes[name]].sort().values
        start += sizes[name]
    return Splits(**out)


def onehot(y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, k).float()


def select_rule(cfg: W2SConfig) -> str:
    """How a student is selected: on the weak-labelled validation split, or its last step (never gold)."""
    return "val" if cfg.students.early_stop == "weak_val" else "last"


@dataclass
class Baseline:
    """The floor and ceiling of every seed. ``weak_probs`` maps each weak rung (always ``"weak"``, the
    supervisor, plus any ladder rungs) to its (seeds, n, classes) probabilities on every example."""

    weak_probs: dict[str, torch.Tensor]
    ceiling_probs: torch.Tensor
    ceiling_curves: list[list[tuple[int, float]]]
    ceiling_best_step: list[int]

    @property
    def weak(self) -> torch.Tensor:
        return self.weak_probs["weak"]

    def accuracies(self, y: torch.Tensor, splits: list[Splits]) -> tuple[list[float], list[float]]:
        """(weak, ceiling) gold accuracy on each seed's test split."""
        w = [accuracy(y[sp.test].numpy(), self.weak[s][sp.test].numpy()) for s, sp in enumerate(splits)]
        c = [accuracy(y[sp.test].numpy(), self.ceiling_probs[s][sp.test].numpy()) for s, sp in enumerate(splits)]
        return w, c


def student_metrics(seed: int, p_test: np.ndarray, w_test: np.ndarray, y_test: np.ndarray, best_step: int,
                    curve: list[tuple[int, float]]) -> dict[str, Any]:
    """One student of one seed, on its test split: gold accuracy, agreement with and misfit to the weak labels,
    calibration, AUROC, the step selected and its gold curve (monitored, never used to select)."""
    return {"seed": seed, "student_acc": accuracy(y_test, p_test), "agreement": agreement(p_test, w_test),
            "misfit": misfit(p_test, w_test), "ece": ece(y_test, p_test), "auroc": auroc(y_test, p_test),
            "best_step": best_step, "curve": curve}


class Trainer:
    """A w2s training strategy. The pipeline calls ``prepare`` once (features, tokenization), then
    ``baseline`` (unless it is cached in the store), ``students`` and ``ladder``."""

    data: ClassificationData

    def prepare(self) -> None:
        """Everything the trainings need that is not in the config: features, encodings."""

    def baseline(self, splits: list[Splits]) -> Baseline:
        raise NotImplementedError

    def students(self, splits: list[Splits], base: Baseline, methods: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Per method (loss or label method), one :func:`student_metrics` row per seed."""
        raise NotImplementedError

    def ladder(self, splits: list[Splits], base: Baseline, ceil_acc: list[float]) -> list[dict[str, Any]]:
        """PGR of a naive student over (weak, strong) pairs of the size ladder; [] when there is none."""
        return []

    def summary_extra(self) -> dict[str, Any]:
        return {}
