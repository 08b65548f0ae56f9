"""The Huber loss and its derivative, for numpy arrays and torch tensors alike.

``huber(r, delta) = r^2 / 2`` for ``|r| <= delta`` and ``delta (|r| - delta / 2)`` beyond: the same
definition as ``scipy.special.huber`` and as Hoffmann et al. / Epoch AI use for scaling-law fits
(with ``delta = 1e-3`` on residuals of log loss, so almost every point sits in the linear part and
the fit behaves like a least-absolute-deviations fit that is smooth at zero).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T", np.ndarray, torch.Tensor)


def huber(r: T, delta: float) -> T:
    """Elementwise Huber loss of residuals ``r``."""
    if isinstance(r, torch.Tensor):
        a = r.abs()
        return torch.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: T, delta: float) -> T:
    """Elementwise derivative ``d huber / d r``: ``r`` clipped to ``[-delta, delta]``."""
    if isinstance(r, torch.Tensor):
        return r.clamp(-delta, delta)
    return np.clip(r, -delta, delta)


def huber_weights(r: np.ndarray, c: float) -> np.ndarray:
    """IRLS weights ``psi(r) / r`` of the Huber M-estimator with threshold ``c`` (1 inside, c/|r| out)."""
    a = np.abs(r)
    return np.where(a <= c, 1.0, c / np.maximum(a, 1e-300))
