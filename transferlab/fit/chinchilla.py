"""Chinchilla Approach 3, fitted the way Epoch AI did in their replication (Besiroglu et al. 2024).

The law is ``L(N, D) = E + A / N^alpha + B / D^beta`` (N parameters, D training tokens). With
``A = e^a``, ``B = e^b``, ``E = e^e`` the prediction of log loss is a log-sum-exp,

    log L_hat = LSE(a - alpha log N, b - beta log D, e),

and the fit minimizes the **sum** over points of ``Huber_delta(log L_hat - log L)`` with
``delta = 1e-3``. The sum matters: Hoffmann et al. used a mean, whose tiny gradients stop L-BFGS
long before convergence (Epoch's finding); with the sum our L-BFGS converges.

Procedure (choices documented here, measured in ``docs/RESULTS.md``):

- Starts: the full Epoch grid, 4,500 points: alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1};
  a, b in {0, 5, ..., 25}. Parameters are unbounded, as in Epoch's code.
- Optimizer: our batched L-BFGS (:mod:`transferlab.fit.lbfgs`) in numpy float64 with the analytic
  gradient; all starts are advanced together as one array program, each with its own history,
  line search and stopping test (relative decrease ``ftol = 1e-10`` or ``max_iter = 1000``).
  The log-sum-exp is evaluated stably (shifted by the largest term).
- The best start (lowest objective) is the fit. It must have stopped by the tolerance or a
  line-search stall at float64 precision, not by the iteration limit; otherwise
  :class:`~transferlab.core.errors.FitError` is raised ("did not converge").
- ``fixed`` holds parameters at given values (useful with few points, e.g. ``{"E": 1.7}``): they
  keep their starting value and their gradient is zeroed, and the grid collapses on that axis.
- ``weights`` (per point, e.g. bootstrap counts) multiply each point's Huber term; integer
  counts give exactly the objective of the resampled data set.

On Epoch's extracted data this reproduces their published point estimate (A 477.8, B 2143.9,
E 1.817, alpha 0.3473, beta 0.3672) when, as in their notebook, the five highest-loss points are
left out (``drop_highest_loss=5`` in the study layer). On all 245 points the same procedure gives a
different optimum (E 1.89, beta 0.45); see ``docs/RESULTS.md``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from transferlab.core.errors import FitError
from transferlab.fit.huber import huber, huber_grad
from transferlab.fit.lbfgs import (
    FTOL,
    GTOL,
    MAX_ITER,
    NONFINITE,
    STALLED,
    default_threads,
    minimize_batched,
    threaded,
)

DELTA = 1e-3
MAX_LOG_PARAM = 700.0  # |log A|, |log B|, |log E| past this: exp() leaves float64 (exp(709) is its largest)
PARAMS = ("a", "b", "e", "alpha", "beta")  # optimizer coordinates (log A, log B, log E, alpha, beta)
NAMES = ("A", "B", "E", "alpha", "beta")  # the same parameters in natural units
STATUS_NAMES = {
    FTOL: "converged (ftol)",
    GTOL: "converged (gtol)",
    STALLED: "converged (line search stalled)",
    MAX_ITER: "iteration limit",
    NONFINITE: "non-finite objective",
}


TINY = float(np.finfo(float).tiny)  # the smallest positive normal float


@dataclass(frozen=True)
class ChinchillaLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    def loss_infinite_data(self, N: np.ndarray | float) -> np.ndarray:
        """``E + A / N^alpha``: the loss a model of size N reaches with unlimited data."""
        return self.E + self.A * np.asarray(N, dtype=float) ** (-self.alpha)

    @property
    def theta(self) -> np.ndarray:
        """(log A, log B, log E, alpha, beta). A fit can drive E (or A, B) to an exp() that underflows to 0.0
        (the data never flatten); its log is then the smallest float's, not a math domain error."""
        def log(v: float) -> float:
            return math.log(max(v, TINY))

        return np.array([log(self.A), log(self.B), log(self.E), self.alpha, self.beta])

    @classmethod
    def from_theta(cls, theta: Sequence[float]) -> ChinchillaLaw:
        a, b, e, alpha, beta = (float(v) for v in theta)
        if not representable(np.array([a, b, e, alpha, beta])):
            raise FitError(
                f"degenerate law: log A = {a:.4g}, log B = {b:.4g}, log E = {e:.4g}, alpha = {alpha:.4g}, "
                f"beta = {beta:.4g} is not a finite law in float64",
                fix="the data do not pin the law down: add runs over a wider range of N and D, or fix a "
                    "parameter (e.g. E)",
            )
        return cls(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)

    def as_dict(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


def representable(theta: np.ndarray) -> np.ndarray | bool:
    """Rows (a, b, e, alpha, beta) that are finite laws: every entry finite and A, B, E below exp()'s
    overflow. An optimizer can wander to log A = 800 with alpha = 60 and still have a finite objective (the
    terms cancel in the log-sum-exp); such an endpoint is degenerate, not a law. (A very negative log, an E
    that underflows to 0, is a law: the data never flatten.)"""
    theta = np.asarray(theta, dtype=float)
    ok = np.isfinite(theta).all(-1) & (theta[..., :3] < MAX_LOG_PARAM).all(-1)
    return bool(ok) if ok.ndim == 0 else ok


def epoch_grid() -> np.ndarray:
    """The 4,500 starts of Epoch's grid, as rows (a, b, e, alpha, beta)."""
    alphas = np.arange(0.0, 2.5, 0.5)
    es = np.arange(-1.0, 1.5, 0.5)
    abs_ = np.arange(0.0, 30.0, 5.0)
    rows = [(a, b, e, al, be) for al, be, e, a, b in itertools.product(alphas, alphas, es, abs_, abs_)]
    return np.array(rows, dtype=float)


def objective_numpy(
    theta: np.ndarray,
    logN: np.ndarray,
    logD: np.ndarray,
    logL: np.ndarray,
    delta: float = DELTA,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Huber objective and its gradient for one parameter vector (numpy; used by the scipy baseline)."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = u.max(0)
    t = np.exp(u - m)
    s = t.sum(0)
    r = m + np.log(s) - logL
    w = np.ones_like(r) if weights is None else weights
    f = float((w * huber(r, delta)).sum())
    q = w * huber_grad(r, delta) / s
    qt = q * t
    g = np.array([qt[0].sum(), qt[1].sum(), qt[2].sum(), -(qt[0] * logN).sum(), -(qt[1] * logD).sum()])
    return f, g


def make_objective(
    logN: np.ndarray,
    logD: np.ndarray,
    logL: np.ndarray,
    delta: float = DELTA,
    weights: np.ndarray | None = None,
    group: np.ndarray | None = None,
    block: int = 128,
):
    """Batched objective ``fun(theta, idx) -> (f, g)`` for :func:`minimize_batched`.

    ``weights`` (G, n) holds per-point weights of G data sets; problem ``p`` uses row ``group[p]``.
    Without weights every point counts once. ``logL`` is one loss per point, or (G, n): G data sets of
    losses at the same (N, D) (a residual bootstrap), problem ``p`` fitting row ``group[p]``.

    The exponents are clamped at 700 before ``exp`` (a predicted loss of e^700 is absurd anyway);
    a point that still overflows gives an infinite objective, which the line search rejects. For
    every parameter vector the optimizer keeps, this is the exact log-sum-exp.

    Problems are processed in blocks of ``block`` rows in work arrays allocated once per thread:
    allocating fresh multi-megabyte arrays on every call costs more (page faults) than the math.
    """
    x = np.ascontiguousarray(logN, dtype=np.float64)
    z = np.ascontiguousarray(logD, dtype=np.float64)
    y = np.ascontiguousarray(logL, dtype=np.float64)
    n = len(x)
    local = threading.local()

    def one_block(theta: np.ndarray, w: np.ndarray | None, yb: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        p = len(theta)
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = np.empty((5, block, n))
        t1, t2, s, h, c = ws[0, :p], ws[1, :p], ws[2, :p], ws[3, :p], ws[4, :p]
        np.multiply(theta[:, 3:4], x, out=t1)
        np.subtract(theta[:, 0:1], t1, out=t1)
        np.minimum(t1, 700.0, out=t1)
        np.exp(t1, out=t1)  # A / N^alpha
        np.multiply(theta[:, 4:5], z, out=t2)
        np.subtract(theta[:, 1:2], t2, out=t2)
        np.minimum(t2, 700.0, out=t2)
        np.exp(t2, out=t2)  # B / D^beta
        E = np.exp(theta[:, 2])
        np.add(t1, t2, out=s)
        s += E[:, None]  # predicted loss L_hat
        np.log(s, out=h)
        h -= yb  # r = log L_hat - log L
        np.clip(h, -delta, delta, out=c)  # huber'(r)
        # huber(r) = c (r - c/2) with c = clip(r): one formula for both branches
        h -= 0.5 * c
        if w is not None:
            c *= w
        f[:] = np.einsum("ij,ij->i", c, h)
        np.divide(c, s, out=s)  # q = w huber'(r) / L_hat = d(sum w huber) / d L_hat-terms
        t1 *= s
        t2 *= s
        g[:, 0] = t1.sum(1)
        g[:, 3] = -np.einsum("ij,j->i", t1, x)
        g[:, 1] = t2.sum(1)
        g[:, 4] = -np.einsum("ij,j->i", t2, z)
        g[:, 2] = E * s.sum(1)

    def fun(theta: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = len(theta)
        f = np.empty(p)
        g = np.empty((p, 5))
        with np.errstate(all="ignore"):
            for a in range(0, p, block):
                b = min(a + block, p)
                w = None if weights is None else weights[group[idx[a:b]]]
                yb = y if y.ndim == 1 else y[group[idx[a:b]]]
                one_block(theta[a:b], w, yb, f[a:b], g[a:b])
        return f, g

    return fun


@dataclass
class ChinchillaFit:
    """A fitted law plus how the fit went (learned attributes, scikit-learn style)."""

    law: ChinchillaLaw
    objective: float
    delta: float
    n_points: int
    n_starts: int
    n_converged: int
    n_at_best: int  # starts whose objective is within 1e-6 (relative) of the best
    status: str
    n_iter: int
    seconds: float
    residuals: np.ndarray  # log L - log L_hat (observed minus fitted), one per point
    free: tuple[bool, ...]
    endpoints: np.ndarray = field(repr=False)  # (S, 5) where every start ended
    endpoint_f: np.ndarray = field(repr=False)  # (S,)
    warnings: list[str] = field(default_factory=list)

    def basins(self, k: int, tol: float = 0.05) -> np.ndarray:
        """Up to ``k`` distinct local optima (rows of theta), best first; ``tol`` in max-abs theta."""
        order = np.argsort(self.endpoint_f)
        reps: list[np.ndarray] = []
        for i in order:
            if not np.isfinite(self.endpoint_f[i]):
                break
            x = self.endpoints[i]
            if all(np.abs(x - r).max() > tol for r in reps):
                reps.append(x)
                if len(reps) >= k:
                    break
        return np.array(reps)


def validate_points(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    *,
    n_free: int = 5,
    free: Sequence[bool] = (True,) * 5,
    what: str = "points",
) -> None:
    """Refuse data that cannot determine the free parameters, with a message saying why."""
    if not (len(N) == len(D) == len(L)):
        raise FitError(f"N, D and loss have different lengths ({len(N)}, {len(D)}, {len(L)})")
    for name, v in (("N", N), ("D", D), ("loss", L)):
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if bad.size:
            raise FitError(
                f"{name} must be finite and > 0; row {bad[0] + 1} has {v[bad[0]]!r}",
                fix="remove or correct that row",
            )
    need = n_free + 1
    if len(N) < need:
        raise FitError(
            f"too few {what} to fit: {len(N)} given, at least {need} needed for {n_free} free parameters",
            fix="add runs, or hold parameters fixed (e.g. E) to need fewer points",
        )
    fa, fb, fe, falpha, fbeta = free
    n_N, n_D = len(np.unique(N)), len(np.unique(D))
    need_N = int(fa) + int(falpha) + int(fe)
    need_D = int(fb) + int(fbeta) + int(fe)
    if n_N < max(need_N, 2 if (fa or falpha) else 1):
        raise FitError(
            f"too few distinct model sizes N among the {what}: {n_N} (need {max(need_N, 2)})",
            fix="add runs at other sizes, or fix A/alpha/E",
        )
    if n_D < max(need_D, 2 if (fb or fbeta) else 1):
        raise FitError(
            f"too few distinct data sizes D among the {what}: {n_D} (need {max(need_D, 2)})",
            fix="add runs with other amounts of data, or fix B/beta/E",
        )


def _fixed_theta(fixed: Mapping[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for k, v in (fixed or {}).items():
        if k not in NAMES:
            raise FitError(f"unknown parameter '{k}' to fix", fix=f"choose from {', '.join(NAMES)}")
        v = float(v)
        if k in ("A", "B", "E"):
            if not v > 0:
                raise FitError(f"fixed {k} must be > 0, got {v}")
            out[NAMES.index(k)] = math.log(v)
        else:
            out[NAMES.index(k)] = v
    return out


def prepare_starts(
    starts: np.ndarray | None, fixed: Mapping[str, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Starts with fixed coordinates set (duplicates removed) and the (5,) free mask."""
    fx = _fixed_theta(fixed)
    x0 = epoch_grid() if starts is None else np.array(starts, dtype=float).reshape(-1, 5)
    free = np.ones(5, dtype=bool)
    for i, v in fx.items():
        x0[:, i] = v
        free[i] = False
    if fx:
        x0 = np.unique(x0, axis=0)
    return x0, free


def fit_chinchilla(
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    *,
    delta: float = DELTA,
    starts: np.ndarray | None = None,
    fixed: Mapping[str, float] | None = None,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    weights: np.ndarray | None = None,
    threads: int | None = None,
) -> ChinchillaFit:
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` from every start in ``starts`` (default: Epoch's grid)."""
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(loss, dtype=float).ravel()
    x0, free = prepare_starts(starts, fixed)
    validate_points(N, D, L, n_free=int(free.sum()), free=tuple(bool(f) for f in free))
    w = None if weights is None else np.asarray(weights, dtype=float).reshape(1, -1)
    fun = make_objective(
        np.log(N), np.log(D), np.log(L), delta, w, None if w is None else np.zeros(len(x0), int)
    )
    fun, close = threaded(fun, default_threads() if threads is None else threads)
    t0 = time.perf_counter()
    try:
        res = minimize_batched(fun, x0, max_iter=max_iter, ftol=ftol, free=free)
    finally:
        close()
    seconds = time.perf_counter() - t0
    f = res.f.copy()
    f[~np.isfinite(f)] = np.inf
    wandered = np.isfinite(f) & ~representable(res.x)
    notes = []
    if wandered.any():
        if f[wandered].min() < f[~wandered].min():
            notes.append(
                f"{int(wandered.sum())} of {len(x0)} starts wandered to a degenerate law (A, B or E past "
                f"float64's range), the best of them with objective {f[wandered].min():.4g}; the fit is the "
                "best representable start"
            )
        f[wandered] = np.inf
    if not np.isfinite(f).any():
        raise FitError(
            f"degenerate fit: none of {len(x0)} starts ended at a finite law "
            f"({int(wandered.sum())} wandered past float64's range)",
            fix="the data do not pin the law down: add runs over a wider range of N and D, or fix a "
                "parameter (e.g. E)",
        )
    best = int(np.argmin(f))
    status = int(res.status[best])
    if not np.isfinite(f[best]) or status in (MAX_ITER, NONFINITE):
        raise FitError(
            f"the fit did not converge: best of {len(x0)} starts ended with "
            f"'{STATUS_NAMES.get(status, status)}' "
            f"after {int(res.n_iter[best])} iterations",
            fix="check the data for outliers or too narrow a range of N and D, or raise max_iter",
        )
    theta = res.x[best]
    law = ChinchillaLaw.from_theta(theta)
    r = np.log(L) - np.log(law.loss(N, D))
    fit = ChinchillaFit(
        law=law,
        objective=float(f[best]),
        delta=delta,
        n_points=len(N),
        n_starts=len(x0),
        n_converged=int(res.converged.sum()),
        n_at_best=int((f <= f[best] + 1e-6 * abs(f[best])).sum()),
        status=STATUS_NAMES[status],
        n_iter=int(res.n_iter[best]),
        seconds=seconds,
        residuals=r,
        free=tuple(bool(v) for v in free),
        endpoints=res.x,
        endpoint_f=f,
    )
    fit.warnings.extend(notes + law_warnings(law))
    return fit


def law_warnings(law: ChinchillaLaw) -> list[str]:
    """Physically odd fits that are still optima of the objective."""
    out = []
    if law.alpha <= 0:
        out.append(f"alpha = {law.alpha:.3g} <= 0: the fitted loss does not fall with model size")
    if law.beta <= 0:
        out.append(f"beta = {law.beta:.3g} <= 0: the fitted loss does not fall with data")
    if law.E < 1e-3:
        out.append(f"E = {law.E:.3g} is near 0: the irreducible loss is not determined by these points")
    return out
