"""Weak-to-strong training losses, each a ``torch.nn.Module``.

Every loss is called as ``loss(logits, weak_probs, progress)``:

- ``logits``: (N, K) student logits;
- ``weak_probs``: (N, K) the weak supervisor's soft labels (rows sum to 1);
- ``progress``: the fraction of training done, in [0, 1] (drives the warm-up ramps).

Targets that come from the student itself (hardened predictions, product targets) are labels:
they are detached. Terms that are part of the objective (the entropy of the confidence
objective) are not.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferlab.core.errors import ConfigError


def _check(logits: Tensor, weak_probs: Tensor) -> None:
    if logits.ndim != 2 or logits.shape != weak_probs.shape:
        raise ConfigError(
            f"loss inputs must both be (N, K); got logits {tuple(logits.shape)}, "
            f"weak {tuple(weak_probs.shape)}",
            where="w2s loss",
            fix="pass one row of K logits and one row of K weak probabilities per example",
        )


def soft_xent(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def linear_ramp(progress: float, warmup_frac: float, a_max: float) -> float:
    """a(t) = a_max * min(1, t / warmup_frac): linear from 0, no jump (unlike the reference code)."""
    if warmup_frac <= 0:
        return a_max
    return a_max * min(1.0, max(0.0, progress) / warmup_frac)


def balanced_hard_labels(probs: Tensor, class_mass: Tensor, iters: int = 50) -> Tensor:
    """Harden ``probs`` (N, K) so the class counts follow ``class_mass`` (K,), the weak labels' balance.

    Binary: threshold P(class 1) at its (1 - m_1) quantile, so a fraction m_1 is labelled 1.
    K > 2: add per-class log-offsets b and take argmax(log p + b), adjusting b multiplicatively
    towards the target counts (a prior-matching fixed point; exact balance is not always reachable
    with ties, the counts are then as close as the offsets get).
    """
    n, k = probs.shape
    mass = class_mass / class_mass.sum()
    if k == 2:
        m1 = float(mass[1])
        thresh = torch.quantile(probs[:, 1].float(), min(max(1.0 - m1, 0.0), 1.0))
        hard = (probs[:, 1] > thresh).long()
        return F.one_hot(hard, 2).to(probs.dtype)
    logp = torch.log(probs.clamp_min(1e-12))
    b = torch.zeros(k, dtype=logp.dtype, device=logp.device)
    target = mass * n
    for _ in range(iters):
        counts = torch.bincount((logp + b).argmax(-1), minlength=k).to(logp.dtype)
        if torch.all((counts - target).abs() <= 1.0):
            break
        b = b + 0.5 * (torch.log(target + 0.5) - torch.log(counts + 0.5))
    return F.one_hot((logp + b).argmax(-1), k).to(probs.dtype)


# Methods that change the labels instead of the loss (trained with xent on the new labels).
LABEL_METHODS = {
    "knn-refine": "Somerstep et al.-style label refinement: k-NN over weak labels in the "
    "strong representation, then xent",
    "icl-refine": "Somerstep et al.'s refinement: the strong causal LM relabels each example from k weakly "
    "labelled demonstrations in its prompt (next-token probabilities over the label words), then xent",
    "bootstrap": "bootstrapping through intermediate model sizes (weak -> mid -> strong), xent",
}

LOSSES: dict[str, type[W2SLoss]] = {}  # every loss class, by name, in the order they are defined


class W2SLoss(nn.Module):
    """Base: ``forward(logits, weak_probs, progress=1.0) -> scalar``.

    A subclass that sets its own ``name`` is a loss of the study: defining it registers it, so its name is
    accepted by ``losses=`` and ``--losses``, listed in their help and in ``--explain``, and its constructor's
    keyword arguments are its ``loss_params``. Adding a loss is this one class."""

    name = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return  # an intermediate base without a name of its own
        if name in LOSSES or name in LABEL_METHODS:
            raise ConfigError(f"a w2s loss named '{name}' already exists ({LOSSES.get(name, 'a label method')})",
                              fix="give the new loss class another name")
        LOSSES[name] = cls


def unregister_loss(name: str) -> None:
    """Remove a loss added at run time (tests, notebooks)."""
    LOSSES.pop(name, None)

    def forward(
        self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class XentLoss(W2SLoss):
    """Cross-entropy on the weak soft labels (naive fine-tuning)."""

    name = "xent"

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        return soft_xent(logits, weak_probs)


class ConfidenceLoss(W2SLoss):
    """The textbook's confidence objective, exactly: KL(weak || student) (batchmean) + c * mean H(student):
    xent plus entropy minimisation. Not Burns et al.'s auxiliary confidence loss, which is ``logconf``.

    Minimizing it pulls the student towards the weak labels and towards confident predictions.
    The entropy term is part of the objective and is NOT detached (EleutherAI's "entropy" loss
    detaches it, which makes it a rescaled xent).
    """

    name = "confidence"

    def __init__(self, c: float = 0.2):
        super().__init__()
        self.c = float(c)

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        logp = F.log_softmax(logits, dim=-1)
        kl = F.kl_div(logp, weak_probs, reduction="batchmean")
        entropy = -(logp.exp() * logp).sum(-1).mean()
        return kl + self.c * entropy


class LogConfLoss(W2SLoss):
    """Burns et al.'s auxiliary confidence loss: CE(student, (1 - a) weak + a hard(student)).

    ``hard(student)`` is the student's prediction hardened so its class balance matches the weak
    labels' (per batch, or over a buffer of the last ``buffer_size`` examples when > 0). ``a`` ramps
    linearly from 0 to ``a_max`` over the first ``warmup_frac`` of training.
    """

    name = "logconf"

    def __init__(self, a_max: float = 0.5, warmup_frac: float = 0.2, buffer_size: int = 0):
        super().__init__()
        self.a_max, self.warmup_frac, self.buffer_size = float(a_max), float(warmup_frac), int(buffer_size)
        self._buf_student: list[Tensor] = []
        self._buf_weak: list[Tensor] = []

    def alpha(self, progress: float) -> float:
        return linear_ramp(progress, self.warmup_frac, self.a_max)

    def hardened(self, probs: Tensor, weak_probs: Tensor) -> Tensor:
        probs, weak_probs = probs.detach(), weak_probs.detach()
        if self.buffer_size <= 0:
            return balanced_hard_labels(probs, weak_probs.mean(0))
        self._buf_student.append(probs)
        self._buf_weak.append(weak_probs)
        sp, wp = torch.cat(self._buf_student), torch.cat(self._buf_weak)
        while sp.shape[0] - self._buf_student[0].shape[0] >= self.buffer_size and len(self._buf_student) > 1:
            self._buf_student.pop(0)
            self._buf_weak.pop(0)
            sp, wp = torch.cat(self._buf_student), torch.cat(self._buf_weak)
        hard_all = balanced_hard_labels(sp, wp.mean(0))
        return hard_all[-probs.shape[0] :]

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        a = self.alpha(progress)
        hard = self.hardened(torch.softmax(logits, -1), weak_probs)
        target = (1.0 - a) * weak_probs + a * hard
        return soft_xent(logits, target.detach())


class ProductLoss(W2SLoss):
    """openai/weak-to-strong's product loss, exactly: CE(student, normalize(student^beta * weak^alpha)),
    the target detached, alpha = beta = 1, no ramp (the reference takes a warm-up fraction and never uses it).

    The product of the two distributions: the student keeps the weak label where they agree and overrides
    it where it is confident enough to outweigh it.
    """

    name = "product"

    def __init__(self, alpha: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def target(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        t = torch.softmax(logits.detach(), -1) ** self.beta * weak_probs ** self.alpha
        return t / t.sum(-1, keepdim=True)

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        return soft_xent(logits, self.target(logits, weak_probs, progress))


class RampedProductLoss(W2SLoss):
    """A ramped geometric mixture (our variant of the product loss, not openai's):
    CE(student, normalize(weak^(1-a) * student^a)), target detached, ``a`` ramping linearly like logconf
    (0 -> a_max over ``warmup_frac``). At a = 1/2 its target log-odds are half of openai's product's.
    """

    name = "product-ramped"

    def __init__(self, a_max: float = 0.5, warmup_frac: float = 0.2):
        super().__init__()
        self.a_max, self.warmup_frac = float(a_max), float(warmup_frac)

    def target(self, logits: Tensor, weak_probs: Tensor, progress: float) -> Tensor:
        a = linear_ramp(progress, self.warmup_frac, self.a_max)
        logt = (1.0 - a) * torch.log(weak_probs.clamp_min(1e-12)) + a * F.log_softmax(logits.detach(), -1)
        return torch.softmax(logt, -1)

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        return soft_xent(logits, self.target(logits, weak_probs, progress))


class WindowLoss(W2SLoss):
    """Train only where the student is unsure: xent on the weak labels, masked to the examples whose
    top-two student probability margin is below ``width``; the batch mean counts masked rows as 0.

    Early on the student is unsure everywhere (plain xent); once it is confident on an example it
    stops being pulled towards that example's weak label.
    """

    name = "window"

    def __init__(self, width: float = 0.5):
        super().__init__()
        self.width = float(width)

    def mask(self, logits: Tensor) -> Tensor:
        p = torch.softmax(logits.detach(), -1)
        top2 = p.topk(2, dim=-1).values
        return (top2[:, 0] - top2[:, 1]) < self.width

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        m = self.mask(logits).to(logits.dtype)
        per = -(weak_probs * F.log_softmax(logits, -1)).sum(-1)
        return (per * m).sum() / logits.shape[0]


class AdaptConfLoss(W2SLoss):
    """AdaptConf (Guo et al. 2024, "Vision Superalignment", arXiv 2402.03749).

    L = mean_i [ (1 - b_i) KL(weak_i || student_i) + b_i CE(student_i, argmax student_i) ]
    b_i = exp(CE(s_i, argmax s_i) / tau) / (exp(CE(s_i, argmax s_i) / tau) + exp(CE(s_i, argmax w_i) / tau)),
    b detached. b <= 1/2, with b = 1/2 where the student's and the weak model's top classes agree.
    Definition checked against the authors' public code; the paper's equation itself was not
    read here (unverified), nor their default tau. Their code also scales b by a 0 -> 1 ramp over
    the first 25% of training: ``warmup_frac`` does this (0 disables it).
    """

    name = "adaptconf"

    def __init__(self, tau: float = 1.0, warmup_frac: float = 0.0):
        super().__init__()
        if tau <= 0:
            raise ConfigError(f"adaptconf tau must be > 0, got {tau}", fix="use e.g. tau=1.0")
        self.tau, self.warmup_frac = float(tau), float(warmup_frac)

    def beta(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        logp = F.log_softmax(logits.detach(), -1)
        ce_self = -logp.max(-1).values
        ce_weak = -logp.gather(-1, weak_probs.argmax(-1, keepdim=True)).squeeze(-1)
        b = torch.sigmoid((ce_self - ce_weak) / self.tau)  # = e^{x/t} / (e^{x/t} + e^{y/t})
        return b * linear_ramp(progress, self.warmup_frac, 1.0)

    def forward(self, logits: Tensor, weak_probs: Tensor, progress: float = 1.0) -> Tensor:
        _check(logits, weak_probs)
        b = self.beta(logits, weak_probs, progress)
        logp = F.log_softmax(logits, -1)
        kl = (weak_probs * (torch.log(weak_probs.clamp_min(1e-12)) - logp)).sum(-1)
        self_ce = -logp.gather(-1, logp.detach().argmax(-1, keepdim=True)).squeeze(-1)
        return ((1.0 - b) * kl + b * self_ce).mean()





def known_methods() -> list[str]:
    return [*LOSSES, *LABEL_METHODS]


def make_loss(name: str, **kwargs) -> W2SLoss:
    """Build a loss by name (``kwargs`` go to its constructor). A label method is not a loss: its students train
    with ``make_loss("xent")`` on the labels the method makes."""
    if name in LABEL_METHODS:
        raise ConfigError(f"'{name}' is a label method, not a loss", where="losses",
                          fix=f"give it as label_methods=[{name}]; its students train with xent")
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss '{name}'", where="losses", fix=f"choose from: {', '.join(known_methods())}"
        )
    return LOSSES[name](**kwargs)


def entropy(logits: Tensor) -> Tensor:
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


__all__ = [
    "AdaptConfLoss",
    "ConfidenceLoss",
    "LABEL_METHODS",
    "LOSSES",
    "LogConfLoss",
    "ProductLoss",
    "RampedProductLoss",
    "W2SLoss",
    "WindowLoss",
    "XentLoss",
    "balanced_hard_labels",
    "entropy",
    "known_methods",
    "linear_ramp",
    "make_loss",
    "soft_xent",
]
