"""Batched L-BFGS: many independent small minimizations advanced together as one array program.

Every problem ``p`` (one row of ``x0``) is minimized on its own: it has its own history of
``(s, y)`` pairs, its own step length and its own stopping test, exactly as if it were run alone.
Batching only shares the arithmetic: each objective call evaluates all still-active problems
at once, so 4,500 starts of a 5-parameter fit pay the Python overhead of about one. Problems
that have stopped leave the working set (compaction), so late iterations only pay for the few
problems still moving.

The algorithm per problem (Nocedal & Wright, Algorithms 7.4 and 7.5):

- direction ``d = -H g`` from the two-loop recursion over the last ``m`` stored pairs, with the
  initial inverse Hessian ``gamma I``, ``gamma = s'y / y'y`` of the newest pair; on the first
  iteration ``d = -g`` and the first trial step is ``1 / ||g||`` (a unit move, as in L-BFGS-B);
- a backtracking line search on the Armijo condition ``f(x + t d) <= f(x) + c1 t g'd``
  (``c1 = 1e-4``); a rejected ``t`` is replaced by the minimizer of the quadratic through
  ``f(x)``, ``g'd`` and ``f(x + t d)``, kept within ``[0.1 t, 0.5 t]``; at most ``max_ls`` trials;
- a pair is stored only when ``s'y > 1e-12 ||s|| ||y||`` (positive curvature), else skipped;
- a problem stops when its relative decrease ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|)`` is at most
  ``ftol``, when ``max |g| <= gtol``, when the line search finds no decrease at float64 precision
  (it has stalled at a minimum up to rounding), or at ``max_iter``.

Status codes: 0 ``ftol``, 1 ``gtol``, 2 line search stalled, 3 iteration limit, 4 non-finite start.
Everything is numpy float64; the objective may spread its work over threads (numpy releases the
GIL in its array loops), see :func:`threaded`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

FTOL = 0
GTOL = 1
STALLED = 2
MAX_ITER = 3
NONFINITE = 4


@dataclass
class BatchResult:
    """Per-problem results of :func:`minimize_batched`."""

    x: np.ndarray  # (P, d) final points
    f: np.ndarray  # (P,) final objective values
    g: np.ndarray  # (P, d) final gradients
    n_iter: np.ndarray  # (P,) iterations taken
    status: np.ndarray  # (P,) status codes (see module docstring)
    n_evals: int  # objective evaluations, counted per problem

    @property
    def converged(self) -> np.ndarray:
        return self.status <= STALLED


def minimize_batched(
    fun: Objective,
    x0: np.ndarray,
    *,
    m: int = 10,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    gtol: float = 0.0,
    max_ls: int = 30,
    c1: float = 1e-4,
    free: np.ndarray | None = None,
) -> BatchResult:
    """Minimize ``P`` independent problems with L-BFGS, all advanced together.

    ``fun(x, idx)`` gets the points ``x`` (p, d) of the problems ``idx`` (p,) (indices into the full
    batch, so that per-problem data such as bootstrap weights can be looked up) and returns
    ``(f, g)`` of shapes (p,) and (p, d). ``free`` is an optional (d,) boolean mask: coordinates
    that are False stay at their starting value (their gradient is zeroed).

    The fit handles its own numerics: an overflow or 0/0 along the way gives a non-finite value that the
    line search rejects or the status records (``NONFINITE``), never a warning on the user's terminal.
    """
    with np.errstate(all="ignore"):
        return _minimize(fun, x0, m=m, max_iter=max_iter, ftol=ftol, gtol=gtol, max_ls=max_ls, c1=c1, free=free)


def _minimize(
    fun: Objective, x0: np.ndarray, *, m: int, max_iter: int, ftol: float, gtol: float, max_ls: int, c1: float,
    free: np.ndarray | None,
) -> BatchResult:
    x = np.array(x0, dtype=np.float64)
    P, dim = x.shape
    mask = None if free is None else np.asarray(free, dtype=np.float64).reshape(1, dim)
    f, g = fun(x, np.arange(P))
    if mask is not None:
        g = g * mask
    n_evals = P
    status = np.full(P, -1, dtype=np.int64)
    n_iter = np.zeros(P, dtype=np.int64)
    status[~np.isfinite(f) | ~np.isfinite(g).all(1)] = NONFINITE

    S = np.zeros((P, m, dim))
    Y = np.zeros((P, m, dim))
    rho = np.zeros((P, m))
    gamma = np.zeros(P)  # 0 = no pair stored yet
    slot = 0  # circular slot shared by all problems (they iterate in lockstep)

    for it in range(max_iter):
        act = np.flatnonzero(status < 0)
        if act.size == 0:
            break
        xa, fa, ga = x[act], f[act], g[act]
        gam = gamma[act]
        d = _two_loop(ga, S[act], Y[act], rho[act], gam, slot, m)
        gd = np.einsum("ij,ij->i", ga, d)
        bad = ~(gd < 0)
        if bad.any():  # not a descent direction (rounding): restart from scaled steepest descent
            h0 = np.where(gam[bad] > 0, gam[bad], 1.0)
            d[bad] = -h0[:, None] * ga[bad]
            gd[bad] = np.einsum("ij,ij->i", ga[bad], d[bad])
        t = np.ones(act.size)
        first = gam == 0
        t[first] = 1.0 / np.maximum(np.linalg.norm(ga[first], axis=1), 1e-300)

        # Backtracking Armijo line search, vectorized over the problems still searching.
        x_new, f_new, g_new = xa.copy(), fa.copy(), ga.copy()
        ok = np.zeros(act.size, dtype=bool)
        pending = np.arange(act.size)
        for _ in range(max_ls):
            if pending.size == 0:
                break
            tp = t[pending]
            xt = xa[pending] + tp[:, None] * d[pending]
            with np.errstate(all="ignore"):
                ft, gt = fun(xt, act[pending])
            if mask is not None:
                gt = gt * mask
            n_evals += pending.size
            armijo = np.isfinite(ft) & (ft <= fa[pending] + c1 * tp * gd[pending])
            acc = pending[armijo]
            x_new[acc], f_new[acc], g_new[acc] = xt[armijo], ft[armijo], gt[armijo]
            ok[acc] = True
            rej = ~armijo
            f0, gd0, fr, tr = fa[pending][rej], gd[pending][rej], ft[rej], tp[rej]
            with np.errstate(all="ignore"):
                denom = 2.0 * (fr - f0 - gd0 * tr)
                tq = np.where(np.isfinite(fr) & (denom > 0), -gd0 * tr * tr / denom, 0.5 * tr)
            t[pending[rej]] = np.minimum(np.maximum(tq, 0.1 * tr), 0.5 * tr)
            pending = pending[rej]

        failed = act[~ok]  # no decrease found: stalled at float64 precision
        status[failed] = STALLED
        n_iter[failed] = it
        okk = np.flatnonzero(ok)
        if okk.size == 0:
            continue
        ai = act[okk]
        s = x_new[okk] - xa[okk]
        y = g_new[okk] - ga[okk]
        sy = np.einsum("ij,ij->i", s, y)
        yy = np.einsum("ij,ij->i", y, y)
        good = sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)
        S[ai, slot] = np.where(good[:, None], s, 0.0)
        Y[ai, slot] = np.where(good[:, None], y, 0.0)
        rho[ai, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[ai] = np.where(good, sy / np.where(good, yy, 1.0), gamma[ai])
        f_old = f[ai]
        x[ai], f[ai], g[ai] = x_new[okk], f_new[okk], g_new[okk]
        n_iter[ai] = it + 1
        scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f[ai])), 1e-300)
        done_f = (f_old - f[ai]) <= ftol * scale
        done_g = np.abs(g[ai]).max(1) <= gtol
        status[ai[done_g]] = GTOL
        status[ai[done_f & ~done_g]] = FTOL
        slot = (slot + 1) % m

    status[status < 0] = MAX_ITER
    return BatchResult(x=x, f=f, g=g, n_iter=n_iter, status=status, n_evals=n_evals)


def _two_loop(
    g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, gamma: np.ndarray, slot: int, m: int
) -> np.ndarray:
    """``-H g`` per problem; empty pairs (``rho == 0``) contribute nothing."""
    q = g.copy()
    order = [(slot - 1 - j) % m for j in range(m)]  # newest first
    alphas = []
    for j in order:
        a = rho[:, j] * np.einsum("ij,ij->i", S[:, j], q)
        q -= a[:, None] * Y[:, j]
        alphas.append(a)
    r = np.where(gamma > 0, gamma, 1.0)[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[:, j] * np.einsum("ij,ij->i", Y[:, j], r)
        r += (a - b)[:, None] * S[:, j]
    return -r


def default_threads() -> int:
    """Threads for objective evaluation: ``TRANSFERLAB_FIT_THREADS``, else the CPU count (at most 8)."""
    env = os.environ.get("TRANSFERLAB_FIT_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, os.cpu_count() or 1))


def threaded(fun: Objective, threads: int, min_rows: int = 256) -> tuple[Objective, Callable[[], None]]:
    """Split each call of ``fun`` over ``threads`` row chunks; returns ``(wrapped, close)``.

    numpy releases the GIL inside its array loops, so chunks of a few hundred problems run in
    parallel. Calls with fewer than ``min_rows`` rows per thread run inline.
    """
    if threads <= 1:
        return fun, lambda: None
    pool = ThreadPoolExecutor(max_workers=threads)

    def wrapped(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(x)
        k = min(threads, n // min_rows)
        if k <= 1:
            return fun(x, idx)
        cuts = np.linspace(0, n, k + 1).astype(int)
        futs = [pool.submit(fun, x[a:b], idx[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
        parts = [fu.result() for fu in futs]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return wrapped, lambda: pool.shutdown(wait=True)
