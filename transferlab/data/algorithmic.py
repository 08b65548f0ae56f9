"""Algorithmic datasets of Power et al. 2022 (arXiv 2201.02177): binary operations mod p and S5.

Every example is a pair (a, b) of token ids with a label c = a ∘ b. The split into train and
validation is drawn with ``split_seed`` only, so it is independent of the init seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from transferlab.core.errors import ConfigError


def _mod_inverse(y: torch.Tensor, p: int) -> torch.Tensor:
    return torch.tensor([pow(int(v), p - 2, p) for v in y.tolist()], dtype=torch.long)


def _div(x: torch.Tensor, y: torch.Tensor, p: int) -> torch.Tensor:
    return (x * _mod_inverse(y, p)) % p


def _odd_div_else_sub(x: torch.Tensor, y: torch.Tensor, p: int) -> torch.Tensor:
    return torch.where(y % 2 == 1, _div(x, y, p), (x - y) % p)


# name -> (function of (x, y, p), needs a prime modulus, excludes y = 0)
MODULAR_OPERATIONS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], bool, bool]] = {
    "x+y": (lambda x, y, p: (x + y) % p, False, False),
    "x-y": (lambda x, y, p: (x - y) % p, False, False),
    "x*y": (lambda x, y, p: (x * y) % p, False, False),
    "x/y": (_div, True, True),
    "x/y if y odd else x-y": (_odd_div_else_sub, True, True),
    "x^2+y^2": (lambda x, y, p: (x * x + y * y) % p, False, False),
    "x^2+xy+y^2": (lambda x, y, p: (x * x + x * y + y * y) % p, False, False),
    "x^2+xy+y^2+x": (lambda x, y, p: (x * x + x * y + y * y + x) % p, False, False),
    "x^3+xy": (lambda x, y, p: (x**3 + x * y) % p, False, False),
    "x^3+xy^2+y": (lambda x, y, p: (x**3 + x * y * y + y) % p, False, False),
}

S5_OPERATIONS = ("s5:x*y", "s5:x*y*x^-1", "s5:x*y*x")
OPERATIONS = tuple(MODULAR_OPERATIONS) + S5_OPERATIONS


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class AlgorithmicData:
    """All pairs of one operation, with a fixed train/validation split."""

    operation: str
    inputs: torch.Tensor  # [n, 2] token ids
    labels: torch.Tensor  # [n]
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    n_tokens: int  # size of the input vocabulary (p, or 120 for S5)
    n_classes: int

    @property
    def x_train(self) -> torch.Tensor:
        return self.inputs[self.train_idx]

    @property
    def y_train(self) -> torch.Tensor:
        return self.labels[self.train_idx]

    @property
    def x_val(self) -> torch.Tensor:
        return self.inputs[self.val_idx]

    @property
    def y_val(self) -> torch.Tensor:
        return self.labels[self.val_idx]


def _s5_table(operation: str) -> tuple[torch.Tensor, torch.Tensor]:
    perms = list(itertools.permutations(range(5)))
    index = {p: i for i, p in enumerate(perms)}

    def compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:  # (a∘b)(i) = a(b(i))
        return tuple(a[b[i]] for i in range(5))

    def inverse(a: tuple[int, ...]) -> tuple[int, ...]:
        inv = [0] * 5
        for i, v in enumerate(a):
            inv[v] = i
        return tuple(inv)

    pairs, out = [], []
    for i, a in enumerate(perms):
        for j, b in enumerate(perms):
            if operation == "s5:x*y":
                c = compose(a, b)
            elif operation == "s5:x*y*x^-1":
                c = compose(compose(a, b), inverse(a))
            else:
                c = compose(compose(a, b), a)
            pairs.append((i, j))
            out.append(index[c])
    return torch.tensor(pairs, dtype=torch.long), torch.tensor(out, dtype=torch.long)


def make_dataset(operation: str, p: int, train_fraction: float, split_seed: int,
                 split_style: str = "torch") -> AlgorithmicData:
    """All pairs of the task, split into train and validation by ``split_seed``.

    ``split_style="torch"``: a seeded ``torch.randperm``, ``round(fraction * n)`` training examples.
    ``"python"``: Nanda et al.'s reference procedure, ``random.seed(split_seed)``, ``random.shuffle`` of
    the row-major pair indices, the first ``int(fraction * n)`` for training (reproduces their split).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(
            f"train_fraction must be strictly between 0 and 1, got {train_fraction}",
            where="train_fraction", fix="e.g. --set train_fraction=0.3",
        )
    if operation in S5_OPERATIONS:
        inputs, labels = _s5_table(operation)
        n_tokens = n_classes = 120
    elif operation in MODULAR_OPERATIONS:
        fn, needs_prime, nonzero_y = MODULAR_OPERATIONS[operation]
        if p < 2:
            raise ConfigError(f"modulus p must be >= 2, got {p}", where="p", fix="e.g. --set p=97")
        if needs_prime and not is_prime(p):
            raise ConfigError(
                f"operation '{operation}' needs inverses mod p, but p={p} is not prime",
                where="p", fix="choose a prime modulus, e.g. --set p=97",
            )
        x = torch.arange(p).repeat_interleave(p)
        y = torch.arange(p).repeat(p)
        if nonzero_y:
            keep = y != 0
            x, y = x[keep], y[keep]
        labels = fn(x, y, p)
        inputs = torch.stack([x, y], dim=1)
        n_tokens = n_classes = p
    else:
        raise ConfigError(
            f"unknown operation '{operation}'", where="operation",
            fix=f"choose one of: {', '.join(OPERATIONS)}",
        )
    n = len(labels)
    n_train = int(train_fraction * n) if split_style == "python" else int(round(train_fraction * n))
    if n_train < 1 or n_train >= n:
        raise ConfigError(
            f"train_fraction {train_fraction} leaves an empty train or validation set for {n} examples",
            where="train_fraction", fix="choose a fraction further from 0 and 1",
        )
    if split_style == "python":
        order = list(range(n))
        random.Random(int(split_seed)).shuffle(order)
        perm = torch.tensor(order)
    elif split_style == "torch":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(split_seed)))
    else:
        raise ConfigError(f"unknown split_style '{split_style}'", where="split_style", fix="use torch or python")
    return AlgorithmicData(
        operation=operation, inputs=inputs, labels=labels,
        train_idx=perm[:n_train].sort().values, val_idx=perm[n_train:].sort().values,
        n_tokens=n_tokens, n_classes=n_classes,
    )
