"""Bootstrap confidence intervals for the Chinchilla fit, vectorized over resamples and starts.

A bootstrap resample draws the n points with replacement. It is represented by a count per
point (multinomial(n, 1/n)), and the resample's objective is the count-weighted sum of Huber
terms, which equals the objective of the resampled data set exactly. All resamples and all of
their starts are then one batch for :func:`transferlab.fit.lbfgs.minimize_batched`.

Starts per resample (``K = 1 + n_basins + n_grid``), a documented shortcut for the full grid:

- the fit on the original data (warm start);
- up to ``n_basins`` other distinct local optima that the full grid found on the original data;
- ``n_grid`` starts drawn from Epoch's grid (seeded), for diversity.

The best of the K is the resample's fit. ``bench/chinchilla_fit.py`` checks this shortcut
against the full 4,500-start grid on the original data and on a sample of resamples (both must
reach the same optimum); the figures are in ``docs/RESULTS.md``.

Intervals are percentile intervals (2.5th and 97.5th percentiles for 95%) over the resamples
whose fit converged. Resamples that cannot identify the free parameters (too few distinct
points, sizes or data amounts, which happens with small data sets) are counted as failed and
left out; their number is reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from transferlab.core.errors import FitError
from transferlab.fit.chinchilla import (
    DELTA,
    MAX_LOG_PARAM,
    NAMES,
    ChinchillaFit,
    ChinchillaLaw,
    epoch_grid,
    make_objective,
    prepare_starts,
)
from transferlab.fit.lbfgs import MAX_ITER, default_threads, minimize_batched, threaded


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts: how many times each point is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def percentile_interval(
    samples: np.ndarray, level: float = 0.95, *, keep_inf: bool = False
) -> tuple[float, float]:
    """Percentile interval of the finite samples (NaN, NaN when there are none).

    With ``keep_inf``, ``+inf`` samples (e.g. "no finite model reaches the target" in a resample)
    count as larger than every finite one instead of being dropped: a bound whose percentile falls
    among them is ``inf``. NaN samples are always dropped.
    """
    v = np.asarray(samples, dtype=float)
    q = [50 * (1 - level), 50 * (1 + level)]
    if not keep_inf:
        v = v[np.isfinite(v)]
        if v.size == 0:
            return (float("nan"), float("nan"))
        lo, hi = np.percentile(v, q)
        return (float(lo), float(hi))
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    big = np.isposinf(v)
    finite = v[~big]
    if finite.size == 0:
        return (math.inf, math.inf)
    lo, hi = (float(x) for x in np.percentile(np.where(big, finite.max(), v), q))
    share = float(big.mean())
    if share > 1 - q[1] / 100:
        hi = math.inf
    if share > 1 - q[0] / 100:
        lo = math.inf
    return (lo, hi)


@dataclass
class ChinchillaBootstrap:
    """Per-resample fits: ``thetas`` (B, 5) rows (a, b, e, alpha, beta), NaN where a resample failed."""

    thetas: np.ndarray
    objective: np.ndarray
    counts: np.ndarray = field(repr=False)
    n_starts: int = 0
    n_failed: int = 0
    n_not_converged: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.thetas).all(1)

    def samples(self, name: str) -> np.ndarray:
        """Samples of a natural parameter (E, A, B, alpha, beta) over the successful resamples."""
        th = self.thetas[self.ok]
        i = NAMES.index(name)
        return np.exp(th[:, i]) if name in ("A", "B", "E") else th[:, i]

    def laws(self) -> list[ChinchillaLaw]:
        return [ChinchillaLaw.from_theta(t) for t in self.thetas[self.ok]]

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        return percentile_interval(self.samples(name), level)

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        return {k: self.interval(k, level) for k in NAMES}


def bootstrap_starts(
    fit: ChinchillaFit,
    n_basins: int,
    n_grid: int,
    rng: np.random.Generator,
    fixed: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The K warm starts used for every resample (see the module docstring)."""
    rows = [fit.law.theta]
    basins = fit.basins(1 + n_basins)
    rows.extend(basins[1:])
    grid, _ = prepare_starts(epoch_grid(), fixed)
    if n_grid > 0:
        pick = rng.choice(len(grid), size=min(n_grid, len(grid)), replace=False)
        rows.extend(grid[pick])
    starts = np.array(rows, dtype=float)
    for i, keep in enumerate(fit.free):
        if not keep:
            starts[:, i] = fit.law.theta[i]
    return starts


def identifiable(counts: np.ndarray, N: np.ndarray, D: np.ndarray, free: tuple[bool, ...]) -> np.ndarray:
    """Per resample: enough distinct points, sizes and data amounts for the free parameters."""
    fa, fb, fe, falpha, fbeta = free
    n_free = sum(free)
    need_N = max(int(fa) + int(falpha) + int(fe), 2 if (fa or falpha) else 1)
    need_D = max(int(fb) + int(fbeta) + int(fe), 2 if (fb or fbeta) else 1)
    present = counts > 0
    out = present.sum(1) >= n_free + 1
    for vals, need in ((N, need_N), (D, need_D)):
        _, inv = np.unique(vals, return_inverse=True)
        k = inv.max() + 1
        per = np.zeros((len(counts), k), dtype=bool)
        for j in range(k):
            per[:, j] = present[:, inv == j].any(1)
        out &= per.sum(1) >= need
    return out


def bootstrap_chinchilla(
    fit: ChinchillaFit,
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_basins: int = 3,
    n_grid: int = 4,
    fixed: Mapping[str, float] | None = None,
    delta: float = DELTA,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    threads: int | None = None,
    counts: np.ndarray | None = None,
) -> ChinchillaBootstrap:
    """Refit the law on ``n_boot`` resamples (or on the given ``counts``), all in one batch."""
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(loss, dtype=float).ravel()
    if n_boot < 1 and counts is None:
        raise FitError(f"the number of bootstrap resamples must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if counts is None:
        counts = resample_counts(len(N), n_boot, rng)
    counts = np.asarray(counts)
    B = len(counts)
    starts = bootstrap_starts(fit, n_basins, n_grid, rng, fixed)
    usable = identifiable(counts, N, D, fit.free)
    t0 = time.perf_counter()
    thetas, obj, n_not_conv = _refit(fit, N, D, np.log(L), counts.astype(float), np.flatnonzero(usable), starts,
                                     delta=delta, max_iter=max_iter, ftol=ftol, threads=threads)
    seconds = time.perf_counter() - t0
    return ChinchillaBootstrap(
        thetas=thetas,
        objective=obj,
        counts=counts,
        n_starts=len(starts),
        n_failed=int(B - usable.sum()) + n_not_conv,
        n_not_converged=n_not_conv,
        seconds=seconds,
    )


def _refit(fit: ChinchillaFit, N: np.ndarray, D: np.ndarray, logL: np.ndarray, weights: np.ndarray | None,
           rows: np.ndarray, starts: np.ndarray, *, delta: float, max_iter: int, ftol: float,
           threads: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Refit the law on the data sets ``rows`` (of ``weights`` (B, n) and/or ``logL`` (B, n)), every start of
    every data set in one batch: (B, 5) thetas and objectives, NaN where a set was not refitted or did not
    converge, and how many of ``rows`` did not converge."""
    B = len(weights) if weights is not None else len(logL)
    K = len(starts)
    thetas = np.full((B, 5), np.nan)
    obj = np.full(B, np.nan)
    if not rows.size:
        return thetas, obj, 0
    x0 = np.tile(starts, (rows.size, 1))
    group = np.repeat(np.arange(rows.size), K)
    w = None if weights is None else weights[rows]
    y = logL if logL.ndim == 1 else logL[rows]
    fun = make_objective(np.log(N), np.log(D), y, delta, w, group)
    fun, close = threaded(fun, default_threads() if threads is None else threads)
    try:
        res = minimize_batched(fun, x0, max_iter=max_iter, ftol=ftol, free=np.array(fit.free))
    finally:
        close()
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(rows.size, K)
    best = f.argmin(1)
    flat = np.arange(rows.size) * K + best
    good = np.isfinite(f[np.arange(rows.size), best]) & (res.status[flat] != MAX_ITER)
    # a resample that ran off to an unrepresentable A, B or E (exp(log) overflows) did not converge
    good &= (np.abs(res.x[flat][:, :3]) < MAX_LOG_PARAM).all(1)
    thetas[rows[good]] = res.x[flat[good]]
    obj[rows[good]] = f[np.arange(rows.size), best][good]
    return thetas, obj, int((~good).sum())


def inflated_residuals(r: np.ndarray, n_free: int) -> np.ndarray:
    """Residuals centred and scaled by sqrt(n / (n - p)), p the fitted parameters: a fit's residuals are smaller
    than its errors (by about that factor: sqrt(7/12) for 5 parameters on 12 runs), and a residual bootstrap
    that draws them as they are gives intervals too narrow (82% coverage of a nominal 95% for beta in
    ``bench/transfer_interval_coverage.py`` before this correction)."""
    r = np.asarray(r, dtype=float)
    n = len(r)
    return (r - r.mean()) * math.sqrt(n / max(n - n_free, 1))


def residual_losses(law: ChinchillaLaw, N: np.ndarray, D: np.ndarray, loss: np.ndarray, n_boot: int,
                    rng: np.random.Generator, n_free: int = 5) -> np.ndarray:
    """(n_boot, n) losses simulated from the fitted law: its prediction at every (N, D) times the exp of a log
    residual of the fit (:func:`inflated_residuals`) drawn with replacement (a residual bootstrap: the design
    stays the one that was fitted, so every resample can identify what the data could)."""
    pred = np.asarray(law.loss(N, D), dtype=float)
    return simulated_losses(pred, loss, rng.integers(0, len(pred), size=(n_boot, len(pred))), n_free)


def simulated_losses(pred: np.ndarray, loss: np.ndarray, idx: np.ndarray, n_free: int) -> np.ndarray:
    """(B, n) losses of a residual bootstrap: the prediction ``pred`` times the exp of the fit's log residuals
    (:func:`inflated_residuals` of ``loss`` against ``pred``) taken at the drawn indices ``idx`` (B, n)."""
    pred = np.asarray(pred, dtype=float)
    r = inflated_residuals(np.log(np.asarray(loss, dtype=float)) - np.log(pred), n_free)
    return pred[None, :] * np.exp(r[idx])


def bootstrap_chinchilla_residual(
    fit: ChinchillaFit,
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_basins: int = 3,
    n_grid: int = 4,
    fixed: Mapping[str, float] | None = None,
    delta: float = DELTA,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    threads: int | None = None,
    losses: np.ndarray | None = None,
) -> ChinchillaBootstrap:
    """Refit the law on ``n_boot`` residual-bootstrap data sets (:func:`residual_losses`, or the given
    ``losses`` (B, n)), all in one batch. Unlike resampling points, no data set loses a size or a data amount,
    so only a refit that does not converge fails (counted in ``n_failed``)."""
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    rng = np.random.default_rng(seed)
    if losses is None:
        if n_boot < 1:
            raise FitError(f"the number of bootstrap resamples must be >= 1, got {n_boot}")
        losses = residual_losses(fit.law, N, D, loss, n_boot, rng, n_free=int(sum(fit.free)))
    losses = np.asarray(losses, dtype=float)
    B = len(losses)
    starts = bootstrap_starts(fit, n_basins, n_grid, rng, fixed)
    t0 = time.perf_counter()
    thetas, obj, n_not_conv = _refit(fit, N, D, np.log(losses), None, np.arange(B), starts, delta=delta,
                                     max_iter=max_iter, ftol=ftol, threads=threads)
    return ChinchillaBootstrap(
        thetas=thetas,
        objective=obj,
        counts=np.ones((B, len(N)), dtype=int),
        n_starts=len(starts),
        n_failed=n_not_conv,
        n_not_converged=n_not_conv,
        seconds=time.perf_counter() - t0,
    )
