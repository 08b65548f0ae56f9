"""How much a Chinchilla fit, and the sizing it gives, rests on a few points.

Dropping Epoch's 5 highest-loss points (2% of their data) moves tokens per parameter at 1e23
FLOPs from 8.5 to 18.8: a handful of runs can decide a plan. This module finds the points a fit
leans on most and refits without them.

**Choosing the points** (``by``), never by rank of loss:

- ``"influence"`` (default): every point ``i`` is left out in turn and the law refitted (exact
  leave-one-out: the same summed Huber objective with weight 0 on ``i``, minimized by the same
  batched L-BFGS as :func:`~transferlab.fit.chinchilla.fit_chinchilla`). Its influence is a Cook's
  distance with exact refits in place of Cook's one-step linear approximation (Cook 1977)::

      D_i = sum_j (f_j(theta) - f_j(theta_(-i)))^2 / (p s^2),    f_j = log L_hat(N_j, D_j),

  with ``p`` free parameters and ``s^2 = sum_j r_j^2 / (n - p)`` from the fit's residuals ``r``.
  It counts how far the whole fitted surface moves, so a point far out in N or D (leverage) can
  matter more than one with a larger residual.
- ``"residual"``: the largest ``|r_i|`` of the fit (the Huber term grows with ``|r|``, so these are
  the largest Huber losses).

**Refits.** For ``j = 1..k`` the ``j`` top points are left out together and the law refitted
(``j = 1`` is also the leave-one-out refit of the top point).

**Starts** (a documented shortcut, as in :mod:`transferlab.fit.bootstrap`): each refit starts
from the bootstrap's start set, i.e. the fit on all points (warm start), its next 3 distinct
basins and 4 starts of Epoch's grid (seeded), instead of all 4,500 grid starts. Leaving a few
points out moves the optimum a little, so the warm start sits next to it; where it moves to
another basin, the basins found by the full grid on all points are among the starts. The test
suite checks this against full 4,500-start refits on Epoch's data (all 245 points, leaving out
the 5 most influential and the 5 highest-loss ones: the same objective to a relative 1e-8 and
exponents to 1e-4; figures in ``docs/RESULTS.md``).

A point whose removal leaves too few distinct points, sizes or data amounts for the free
parameters cannot be left out: its influence is NaN and it is never chosen. With more than
``max_candidates`` points, leave-one-out runs only on that many points with the largest
``|residual|`` (the others get NaN influence and are noted).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from transferlab.core.errors import FitError
from transferlab.fit.bootstrap import bootstrap_chinchilla, identifiable
from transferlab.fit.chinchilla import DELTA, ChinchillaFit, ChinchillaLaw

METHODS = ("influence", "residual")
SCORE_NAMES = {
    "influence": "Cook's distance from exact leave-one-out refits",
    "residual": "|log L - log L_fit| of the fit on all points",
}


def default_k(n_points: int) -> int:
    """2% of the points, at least 1 and at most 5."""
    return int(min(5, max(1, round(0.02 * n_points))))


@dataclass
class Sensitivity:
    """The ``k`` chosen points (indices into the fitted arrays, most influential first) and the refits."""

    by: str
    score: np.ndarray  # (n,) influence or |residual| per point; NaN where not computed / not removable
    order: np.ndarray  # (k,) indices of the chosen points, most influential first
    thetas: np.ndarray  # (k, 5): refit with order[:j+1] left out (NaN row where it failed)
    objective: np.ndarray  # (k,)
    n_starts: int
    seconds: float
    loo_thetas: np.ndarray | None = field(default=None, repr=False)  # (n, 5) leave-one-out refits
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.order)

    def law(self, j: int) -> ChinchillaLaw | None:
        """The law with the ``j`` (1-based) most influential points left out; None if that refit failed."""
        t = self.thetas[j - 1]
        return ChinchillaLaw.from_theta(t) if np.isfinite(t).all() else None


def cooks_distance(
    fit: ChinchillaFit, N: np.ndarray, D: np.ndarray, loo_thetas: np.ndarray
) -> np.ndarray:
    """Cook's distance of every point from its leave-one-out refit (NaN where the refit failed)."""
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    n = len(N)
    p = int(sum(fit.free))
    r = np.asarray(fit.residuals, dtype=float)
    s2 = float((r**2).sum()) / max(n - p, 1)
    s2 = max(s2, 1e-300)
    full = np.log(fit.law.loss(N, D))
    out = np.full(len(loo_thetas), np.nan)
    for i, th in enumerate(loo_thetas):
        if not np.isfinite(th).all():
            continue
        pred = np.log(ChinchillaLaw.from_theta(th).loss(N, D))
        out[i] = float(((full - pred) ** 2).sum()) / (p * s2)
    return out


def sensitivity(
    fit: ChinchillaFit,
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    k: int,
    *,
    by: str = "influence",
    delta: float = DELTA,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    threads: int | None = None,
    fixed: Mapping[str, float] | None = None,
    seed: int = 0,
    max_candidates: int = 500,
) -> Sensitivity:
    """Choose the ``k`` most influential points (``by``) and refit with the top 1..k left out."""
    if by not in METHODS:
        raise FitError(f"unknown sensitivity method '{by}'", fix=f"choose from {', '.join(METHODS)}")
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(loss, dtype=float).ravel()
    n = len(N)
    if k < 1:
        raise FitError(f"the number of points to leave out must be >= 1, got {k}")
    if k >= n:
        raise FitError(f"cannot leave out {k} of {n} points", fix="choose a smaller k")
    opts = dict(
        delta=delta, max_iter=max_iter, ftol=ftol, threads=threads, fixed=fixed, seed=seed
    )
    t0 = time.perf_counter()
    notes: list[str] = []
    absr = np.abs(np.asarray(fit.residuals, dtype=float))
    # a point is removable when the data without it still identify the free parameters
    loo_counts = np.ones((n, n)) - np.eye(n)
    removable = identifiable(loo_counts, N, D, fit.free)
    if not removable.all():
        notes.append(
            f"{int((~removable).sum())} point(s) cannot be left out (without them the data do not "
            "identify the free parameters)"
        )
    loo_thetas = None
    if by == "influence":
        cand = np.flatnonzero(removable)
        if len(cand) > max_candidates:
            cand = np.sort(cand[np.argsort(-absr[cand], kind="stable")[:max_candidates]])
            notes.append(
                f"leave-one-out influence computed for the {max_candidates} of {n} points with the "
                "largest residuals"
            )
        loo_thetas = np.full((n, 5), np.nan)
        if len(cand):
            loo = bootstrap_chinchilla(fit, N, D, L, counts=loo_counts[cand], **opts)
            loo_thetas[cand] = loo.thetas
        score = cooks_distance(fit, N, D, loo_thetas)
    else:
        score = np.where(removable, absr, np.nan)
    ranked = np.argsort(np.where(np.isfinite(score), -score, np.inf), kind="stable")
    ranked = ranked[np.isfinite(score[ranked])]
    order = ranked[: min(k, len(ranked))]
    counts = np.ones((len(order), n))
    for j in range(len(order)):
        counts[j, order[: j + 1]] = 0.0
    refit = bootstrap_chinchilla(fit, N, D, L, counts=counts, **opts) if len(order) else None
    thetas = refit.thetas if refit is not None else np.empty((0, 5))
    obj = refit.objective if refit is not None else np.empty(0)
    if refit is not None and refit.n_failed:
        notes.append(f"{refit.n_failed} of the {len(order)} refits failed (too few points left, or no convergence)")
    return Sensitivity(
        by=by,
        score=score,
        order=order,
        thetas=thetas,
        objective=obj,
        n_starts=refit.n_starts if refit is not None else 0,
        seconds=time.perf_counter() - t0,
        loo_thetas=loo_thetas,
        notes=notes,
    )
