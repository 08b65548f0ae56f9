"""Multiplicative power laws ``y = k * prod_j x_j^p_j``, fitted as linear models in log space.

``log y = log k + sum_j p_j log x_j``. Two estimators:

- ``"ols"``: weighted least squares (``numpy.linalg.lstsq`` on sqrt-weighted rows);
- ``"huber"``: a Huber M-estimator by iteratively reweighted least squares, threshold
  ``c = 1.345 s`` with the scale ``s`` re-estimated each iteration as the weighted median
  absolute deviation of the residuals / 0.6745 (95% efficiency at Gaussian noise, bounded
  influence of outlying rows). It starts from the OLS solution and stops when the coefficients
  move less than 1e-10 or after 100 iterations.

Row weights (bootstrap counts) multiply each row's contribution. Exponents can be held fixed
(``fixed={"beta": 0.38}``), which moves ``p_j log x_j`` to the left-hand side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from transferlab.core.errors import FitError
from transferlab.fit.huber import huber_weights

HUBER_C = 1.345
METHODS = ("ols", "huber")


@dataclass
class PowerLawFit:
    """``y = k * prod x_j^p_j``: ``k`` and the exponents by name, plus fit quality in log space."""

    k: float
    exponents: dict[str, float]
    method: str
    n: int
    r2: float
    resid_std: float
    fixed: dict[str, float] = field(default_factory=dict)

    def predict(self, **x: np.ndarray) -> np.ndarray:
        out = np.full(np.broadcast(*[np.asarray(v) for v in x.values()]).shape, self.k)
        for name, p in self.exponents.items():
            out = out * np.asarray(x[name], dtype=float) ** p
        return out


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(v)
    cw = np.cumsum(w[o])
    return float(v[o][np.searchsorted(cw, 0.5 * cw[-1])])


def solve_log_linear(ly: np.ndarray, X: np.ndarray, w: np.ndarray, method: str = "ols") -> np.ndarray:
    """Coefficients of ``ly ~ X`` (X includes the intercept column) by weighted OLS or Huber IRLS."""
    sw = np.sqrt(w)
    coef = np.linalg.lstsq(X * sw[:, None], ly * sw, rcond=None)[0]
    if method == "ols":
        return coef
    if method != "huber":
        raise FitError(f"unknown power-law fit method '{method}'", fix=f"choose one of {', '.join(METHODS)}")
    for _ in range(100):
        r = ly - X @ coef
        scale = _weighted_median(np.abs(r), w) / 0.6745
        if scale <= 1e-12 * max(1.0, float(np.abs(ly).max())):
            break  # (near-)exact fit: nothing to down-weight
        ww = w * huber_weights(r, HUBER_C * scale)
        s = np.sqrt(ww)
        new = np.linalg.lstsq(X * s[:, None], ly * s, rcond=None)[0]
        if np.abs(new - coef).max() < 1e-10:
            coef = new
            break
        coef = new
    return coef


def fit_power_law(
    y: np.ndarray,
    x: Mapping[str, np.ndarray],
    *,
    method: str = "ols",
    weights: np.ndarray | None = None,
    fixed: Mapping[str, float] | None = None,
) -> PowerLawFit:
    """Fit ``y = k * prod_j x[j]^p_j`` (all values must be > 0)."""
    y = np.asarray(y, dtype=float)
    fixed = dict(fixed or {})
    for name in fixed:
        if name not in x:
            raise FitError(f"cannot fix unknown exponent '{name}'", fix=f"choose from {', '.join(x)}")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    cols = {k: np.asarray(v, dtype=float) for k, v in x.items()}
    for name, v in [("y", y), *cols.items()]:
        if not np.all(np.isfinite(v) & (v > 0)):
            raise FitError(f"power-law fit needs finite positive values of {name}")
    ly = np.log(y) - sum(p * np.log(cols[k]) for k, p in fixed.items())
    free = [k for k in cols if k not in fixed]
    X = np.column_stack([np.ones_like(y)] + [np.log(cols[k]) for k in free])
    n_eff = int((w > 0).sum())
    if n_eff < X.shape[1] + 1:
        raise FitError(
            f"too few rows for the power-law fit: {n_eff} usable, need at least {X.shape[1] + 1}",
            fix="add rows, or fix an exponent",
        )
    if np.linalg.matrix_rank(X[w > 0]) < X.shape[1]:
        raise FitError(
            "the power-law fit is not identifiable: a predictor takes a single value",
            fix="vary every predictor (e.g. several N and several D_F), or fix that exponent",
        )
    coef = solve_log_linear(ly, X, w, method)
    r = ly - X @ coef
    wm = np.average(ly, weights=w)
    ss_tot = float((w * (ly - wm) ** 2).sum())
    ss_res = float((w * r**2).sum())
    dof = max(float(w.sum()) - X.shape[1], 1.0)
    exps = {k: float(fixed[k]) if k in fixed else float(coef[1 + free.index(k)]) for k in cols}
    return PowerLawFit(
        k=float(np.exp(coef[0])),
        exponents=exps,
        method=method,
        n=n_eff,
        r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        resid_std=float(np.sqrt(ss_res / dof)),
        fixed={k: float(v) for k, v in fixed.items()},
    )
