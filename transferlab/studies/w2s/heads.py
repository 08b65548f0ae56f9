"""Many linear heads trained at once on cached features (the linear-probe setting, Burns et al. App. D.2).

All heads in one call share a feature matrix and their split sizes; each has its own training
indices, soft targets, selection labels, loss and init seed. Weights are stacked (H, d, K) and the
forward pass is one batched matmul; each head's loss is its own module (losses like logconf
harden per batch, so they are applied head by head), and one backward step updates them all.
Adam is elementwise, so stacking does not couple the heads.

Model selection sees only ``val_targets``: for students those are the weak labels. Gold labels
appear only as ``monitor_labels``, which are logged (gold accuracy over training) and never read
when choosing the step to keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from transferlab.core.devices import torch_threads
from transferlab.core.errors import ConfigError
from transferlab.studies.w2s.losses import W2SLoss


@dataclass
class HeadJob:
    train_idx: Tensor  # (n_train,) rows of X
    train_targets: Tensor  # (n_train, K) soft labels
    val_idx: Tensor  # (n_val,)
    val_targets: Tensor  # (n_val, K) labels used for selection only
    loss: W2SLoss
    seed: int
    select: str = "val"  # 'val' (best agreement with val_targets) or 'last'


@dataclass
class HeadResult:
    weight: Tensor  # (d, K)
    bias: Tensor  # (K,)
    best_step: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, gold accuracy on the monitor set)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, agreement with val_targets)

    def probs(self, x: Tensor) -> Tensor:
        return torch.softmax(x @ self.weight + self.bias, -1)


@contextmanager
def single_thread() -> Iterator[None]:
    """The per-step ops here are tiny; with several threads the time goes to synchronising them (10x slower
    measured on 2 shared cores), so heads train on one thread and the caller's setting is restored after."""
    with torch_threads(1):
        yield


def train_heads(x: Tensor, jobs: list[HeadJob], **kwargs) -> list[HeadResult]:
    """Train every job's head together (see the module doc); returns one result per job, in order."""
    with single_thread():
        return _train_heads(x, jobs, **kwargs)


def _train_heads(
    x: Tensor,
    jobs: list[HeadJob],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    eval_every: int,
    monitor_idx: Tensor | None = None,
    monitor_labels: Tensor | None = None,
) -> list[HeadResult]:
    if not jobs:
        return []
    n_tr, n_va = jobs[0].train_idx.numel(), jobs[0].val_idx.numel()
    k = jobs[0].train_targets.shape[1]
    for j in jobs:
        if j.train_idx.numel() != n_tr or j.val_idx.numel() != n_va or j.train_targets.shape[1] != k:
            raise ConfigError(
                "heads trained together need equal split sizes and class counts",
                where="train_heads",
                fix="group jobs by split sizes",
            )
    x = x.float()
    h, d = len(jobs), x.shape[1]
    tr_idx = torch.stack([j.train_idx for j in jobs])
    tr_t = torch.stack([j.train_targets.float() for j in jobs])
    va_idx = torch.stack([j.val_idx for j in jobs])
    va_lab = torch.stack([j.val_targets.argmax(-1) for j in jobs])
    select_last = torch.tensor([j.select == "last" for j in jobs])
    w0 = []
    for j in jobs:
        g = torch.Generator().manual_seed(int(j.seed))
        w0.append(torch.randn(d, k, generator=g) * (0.01 / max(1.0, d**0.5)))
    weight = torch.stack(w0).requires_grad_(True)
    bias = torch.zeros(h, 1, k, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    gens = [torch.Generator().manual_seed(int(j.seed) * 2 + 1) for j in jobs]  # each head its own data order

    def shuffle() -> Tensor:
        return torch.stack([torch.randperm(n_tr, generator=g) for g in gens])

    bs = min(batch_size, n_tr)
    perm, ptr = shuffle(), 0
    best_w, best_b = weight.detach().clone(), bias.detach().clone()
    best_score = torch.full((h,), -1.0)
    best_step = torch.zeros(h, dtype=torch.long)
    curves: list[list[tuple[int, float]]] = [[] for _ in jobs]
    vcurves: list[list[tuple[int, float]]] = [[] for _ in jobs]
    xv = x[va_idx]  # (H, n_va, d)
    xm = None
    if monitor_idx is not None:  # (n_mon,) shared by all heads, or (H, n_mon) one set per head
        assert monitor_labels is not None and monitor_labels.shape == monitor_idx.shape
        xm = x[monitor_idx] if monitor_idx.ndim == 2 else x[monitor_idx].expand(h, -1, -1)
    for step in range(1, steps + 1):
        if ptr + bs > n_tr:
            perm, ptr = shuffle(), 0
        sel = perm[:, ptr : ptr + bs]
        ptr += bs
        rows = torch.gather(tr_idx, 1, sel)
        logits = torch.baddbmm(bias, x[rows], weight)  # (H, B, K)
        targets = torch.gather(tr_t, 1, sel.unsqueeze(-1).expand(-1, -1, k))
        progress = (step - 1) / max(1, steps - 1)
        total = sum(j.loss(logits[i], targets[i], progress) for i, j in enumerate(jobs))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                agree = (torch.baddbmm(bias, xv, weight).argmax(-1) == va_lab).float().mean(1)
                better = (agree > best_score) | select_last
                best_score = torch.where(better, agree, best_score)
                best_step = torch.where(better, torch.full_like(best_step, step), best_step)
                m = better.view(h, 1, 1)
                best_w = torch.where(m, weight.detach(), best_w)
                best_b = torch.where(m, bias.detach(), best_b)
                for i in range(h):
                    vcurves[i].append((step, float(agree[i])))
                if xm is not None:
                    gold = torch.baddbmm(bias, xm, weight).argmax(-1) == monitor_labels
                    accs = gold.float().mean(1)
                    for i in range(h):
                        curves[i].append((step, float(accs[i])))
    return [HeadResult(best_w[i], best_b[i, 0], int(best_step[i]), curves[i], vcurves[i]) for i in range(h)]
