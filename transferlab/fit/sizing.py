"""Sizing with a fitted ``L(N, D) = E + A/N^alpha + B/D^beta``: compute-optimal and over-trained models.

All functions are pure and vectorize over numpy arrays. Compute is counted as
``C = flops_per_token * N * D`` with ``flops_per_token = 6`` for training (forward + backward)
and ``2 N`` FLOPs per token of inference (forward only), the usual approximations.

Compute-optimal (Hoffmann et al. 2022; closed form as in Epoch's replication). Minimizing
``L`` subject to ``6 N D = C`` gives ``alpha A N^-alpha = beta B D^-beta`` and

    N_opt = G (C/6)^(beta/(alpha+beta)),   D_opt = (C/6) / N_opt,   G = (alpha A / (beta B))^(1/(alpha+beta)).

At the optimum ``L_opt(C) = E + (1 + alpha/beta) A N_opt^-alpha``, which inverts in closed form to
the least compute that reaches a target loss.

Over-training (e.g. Sardana & Frankle 2023, "Beyond Chinchilla-optimal"): to serve
``D_inf`` inference tokens, minimize ``6 N D + 2 N D_inf`` subject to ``L(N, D) = L_target``. On
the constraint ``D(N) = (B / (L_target - E - A N^-alpha))^(1/beta)``, defined for ``N > N_min =
(A / (L_target - E))^(1/alpha)``. The derivative of the total divided by ``6 D`` is

    h(N) = 1 - alpha A N^-alpha / (beta R(N)) + D_inf / (3 D(N)),   R(N) = L_target - E - A N^-alpha,

which tends to -inf as N -> N_min and equals ``D_inf / (3 D) >= 0`` at the compute-optimal size
for ``L_target``; the optimum is its root in between (a smaller model trained on more tokens),
found with Brent's method in log N. With ``D_inf = 0`` it is the compute-optimal model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

from transferlab.core.errors import FitError
from transferlab.fit.chinchilla import MAX_LOG_PARAM, ChinchillaLaw

TRAIN_FLOPS_PER_TOKEN = 6.0
INFER_FLOPS_PER_TOKEN = 2.0


def optimal_exponents(law: ChinchillaLaw) -> tuple[float, float]:
    """``(a, b)`` with ``N_opt ∝ C^a`` and ``D_opt ∝ C^b`` (``a + b = 1``)."""
    s = law.alpha + law.beta
    return law.beta / s, law.alpha / s


def _G(law: ChinchillaLaw) -> float:
    if law.alpha <= 0 or law.beta <= 0:
        raise FitError(
            f"compute-optimal sizing needs alpha > 0 and beta > 0 (fit has alpha={law.alpha:.3g}, "
            f"beta={law.beta:.3g})",
            fix="check the fit; with such exponents loss does not fall with N or D",
        )
    return (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / (law.alpha + law.beta))


def compute_optimal(
    law: ChinchillaLaw, C: np.ndarray | float, flops_per_token: float = TRAIN_FLOPS_PER_TOKEN
) -> tuple[np.ndarray, np.ndarray]:
    """``(N_opt, D_opt)`` for training compute ``C`` (closed form)."""
    c = np.asarray(C, dtype=float) / flops_per_token
    a, _ = optimal_exponents(law)
    N = _G(law) * c**a
    return N, c / N


def loss_at_compute(
    law: ChinchillaLaw,
    C: np.ndarray | float,
    N: np.ndarray | float,
    flops_per_token: float = TRAIN_FLOPS_PER_TOKEN,
) -> np.ndarray:
    """Loss of a size-``N`` model trained with compute ``C`` (so on ``C / (6 N)`` tokens)."""
    N = np.asarray(N, dtype=float)
    return law.loss(N, np.asarray(C, dtype=float) / (flops_per_token * N))


def optimal_loss(
    law: ChinchillaLaw, C: np.ndarray | float, flops_per_token: float = TRAIN_FLOPS_PER_TOKEN
) -> np.ndarray:
    N, D = compute_optimal(law, C, flops_per_token)
    return law.loss(N, D)


def compute_for_loss(
    law: ChinchillaLaw, target: np.ndarray | float, flops_per_token: float = TRAIN_FLOPS_PER_TOKEN
) -> np.ndarray:
    """Least training compute that reaches ``target`` loss (inf where ``target <= E``)."""
    t = np.asarray(target, dtype=float)
    a, _ = optimal_exponents(law)
    G = _G(law)
    excess = t - law.E
    k = (1.0 + law.alpha / law.beta) * law.A * G ** (-law.alpha)  # L_opt - E = k (C/6)^(-alpha a)
    with np.errstate(all="ignore"):
        c6 = np.where(excess > 0, (np.maximum(excess, 1e-300) / k) ** (-1.0 / (law.alpha * a)), np.inf)
    return flops_per_token * c6


def tokens_for_loss(law: ChinchillaLaw, N: np.ndarray | float, target: np.ndarray | float) -> np.ndarray:
    """Tokens ``D`` with ``L(N, D) = target`` (inf where size ``N`` cannot reach ``target``)."""
    R = np.asarray(target, dtype=float) - law.loss_infinite_data(N)
    with np.errstate(all="ignore"):
        return np.where(R > 0, (law.B / np.maximum(R, 1e-300)) ** (1.0 / law.beta), np.inf)


def min_params_for_loss(law: ChinchillaLaw, target: float) -> float:
    """Smallest N that reaches ``target`` with unlimited data (inf when ``target <= E``)."""
    excess = target - law.E
    return math.inf if excess <= 0 else (law.A / excess) ** (1.0 / law.alpha)


def size_penalty(
    law: ChinchillaLaw,
    C: np.ndarray | float,
    N: np.ndarray | float,
    flops_per_token: float = TRAIN_FLOPS_PER_TOKEN,
) -> np.ndarray:
    """Extra loss from training size ``N`` instead of ``N_opt`` with the same compute ``C`` (>= 0)."""
    return loss_at_compute(law, C, N, flops_per_token) - optimal_loss(law, C, flops_per_token)


def compute_multiplier(
    law: ChinchillaLaw,
    C: np.ndarray | float,
    N: np.ndarray | float,
    flops_per_token: float = TRAIN_FLOPS_PER_TOKEN,
) -> np.ndarray:
    """Compute a size-``N`` model needs to match the compute-optimal loss at ``C``, divided by ``C``.

    1 at ``N = N_opt``, above 1 elsewhere, inf when ``N`` is too small to ever reach that loss.
    """
    N = np.asarray(N, dtype=float)
    D = tokens_for_loss(law, N, optimal_loss(law, C, flops_per_token))
    return flops_per_token * N * D / np.asarray(C, dtype=float)


@dataclass(frozen=True)
class OvertrainPlan:
    """The cheapest model (training + inference compute) that reaches ``target_loss``."""

    target_loss: float
    inference_tokens: float
    N: float
    D: float
    tokens_per_param: float
    train_flops: float
    inference_flops: float
    total_flops: float
    # the compute-optimal (Chinchilla) model for the same loss, serving the same tokens
    chinchilla_N: float
    chinchilla_D: float
    chinchilla_total_flops: float
    saving: float  # 1 - total_flops / chinchilla_total_flops

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def overtrain(
    law: ChinchillaLaw,
    target_loss: float,
    inference_tokens: float,
    *,
    train_flops_per_token: float = TRAIN_FLOPS_PER_TOKEN,
    infer_flops_per_token: float = INFER_FLOPS_PER_TOKEN,
) -> OvertrainPlan:
    """N and D minimizing training plus inference compute at a target loss (see module docstring)."""
    if target_loss <= law.E:
        raise FitError(
            f"target loss {target_loss:.4g} is at or below the irreducible loss E = {law.E:.4g}",
            fix="choose a target loss above E",
        )
    if inference_tokens < 0:
        raise FitError(f"inference tokens must be >= 0, got {inference_tokens}")
    C_chin = float(compute_for_loss(law, target_loss, train_flops_per_token))
    Nc, Dc = (float(v) for v in compute_optimal(law, C_chin, train_flops_per_token))
    ratio = infer_flops_per_token / train_flops_per_token  # D_inf enters as ratio * D_inf / D

    def total(N: float, D: float) -> float:
        return train_flops_per_token * N * D + infer_flops_per_token * N * inference_tokens

    if inference_tokens == 0:
        N, D = Nc, Dc
    else:
        n_min = min_params_for_loss(law, target_loss)

        def h(u: float) -> float:  # in logs: A / N^alpha and D = (B / R)^(1/beta) can leave float range
            log_aN = math.log(law.A) - law.alpha * u
            if log_aN > MAX_LOG_PARAM:
                return -math.inf
            aN = math.exp(log_aN)
            R = target_loss - law.E - aN
            if R <= 0:
                return -math.inf
            neg_log_D = (math.log(R) - math.log(law.B)) / law.beta
            inv_D = math.exp(neg_log_D) if neg_log_D < MAX_LOG_PARAM else math.inf
            return 1.0 - law.alpha * aN / (law.beta * R) + ratio * inference_tokens * inv_D

        hi = math.log(Nc)
        lo = math.log(n_min) + 1e-12
        step = 1e-9
        while h(lo) >= 0 or not math.isfinite(h(lo)):  # move just inside the feasible region
            lo = math.log(n_min) + step
            step *= 10
            if lo >= hi:
                lo = hi
                break
        u = hi if h(hi) <= 0 or lo >= hi else brentq(h, lo, hi, xtol=1e-13, rtol=1e-14, maxiter=500)
        N = math.exp(u)
        D = float(tokens_for_loss(law, N, target_loss))
    t = total(N, D)
    tc = total(Nc, Dc)
    return OvertrainPlan(
        target_loss=target_loss,
        inference_tokens=float(inference_tokens),
        N=N,
        D=D,
        tokens_per_param=D / N,
        train_flops=train_flops_per_token * N * D,
        inference_flops=infer_flops_per_token * N * inference_tokens,
        total_flops=t,
        chinchilla_N=Nc,
        chinchilla_D=Dc,
        chinchilla_total_flops=tc,
        saving=1.0 - t / tc,
    )


def overtrain_samples(
    laws: list[ChinchillaLaw],
    target_loss: float,
    inference_tokens: float,
    *,
    train_flops_per_token: float = TRAIN_FLOPS_PER_TOKEN,
    infer_flops_per_token: float = INFER_FLOPS_PER_TOKEN,
) -> dict[str, np.ndarray]:
    """The over-training plan under each law (e.g. bootstrap refits), one array per plan field.

    A law under which ``target_loss`` is out of reach (at or below its E, or exponents <= 0)
    gives ``inf`` for the sizes, tokens and FLOPs (no finite model reaches the target) and NaN
    for ``tokens_per_param`` and ``saving``; ``reachable`` marks the others.
    """
    keys = ("N", "D", "tokens_per_param", "train_flops", "inference_flops", "total_flops", "saving")
    out = {k: np.full(len(laws), np.nan) for k in keys}
    reach = np.zeros(len(laws), dtype=bool)
    for i, law in enumerate(laws):
        if law.alpha <= 0 or law.beta <= 0 or target_loss <= law.E:
            for k in ("N", "D", "train_flops", "inference_flops", "total_flops"):
                out[k][i] = math.inf
            continue
        try:
            p = overtrain(
                law,
                target_loss,
                inference_tokens,
                train_flops_per_token=train_flops_per_token,
                infer_flops_per_token=infer_flops_per_token,
            )
        except (FitError, ValueError, OverflowError, ZeroDivisionError):
            continue
        reach[i] = True
        for k in keys:
            out[k][i] = getattr(p, k)
    out["reachable"] = reach
    return out
