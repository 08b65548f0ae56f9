"""Training monitors: pure functions of a model and a batch (or of logged numbers).

Plasticity
    :func:`per_sample_gradient_stats` (empirical Fisher trace and gradient coherence from per-sample
    gradients, ``torch.func`` ``vmap(grad)``, chunked), :func:`fisher_trace`, :func:`gradient_norm`,
    :func:`gradient_noise_scale` (McCandlish et al. 2018), :func:`weight_norm`,
    :func:`dormant_units` (Sokar et al. 2023), :func:`effective_rank` (Roy & Vetterli 2007).
Loss against a power law
    :func:`fit_power_law`, :class:`PowerLawFit`, :class:`LossPowerLawMonitor` (online).
Memorization vs generalization without a test set
    gradient coherence (Chatterjee & Zielinski, "On the generalization mystery in deep learning"),
    and for mixture-of-experts models :func:`pathway_distance` / :func:`pathway_consistency`
    (arXiv 2506.21551) from router outputs given as tensors, one per layer.
The table
    :data:`MONITORS`: one :class:`Monitor` row per logged monitor (key, how to compute it from a
    :class:`Probe`, label, axis scale). The engine (:mod:`transferlab.train.plasticity`), the Hugging Face
    callbacks (:mod:`transferlab.monitor`) and the grokking report all iterate it, so a new monitor is one
    function and one row here (or :func:`register_monitor` at run time).

``loss_fn(output, target)`` must return the *mean* loss over the batch it is given (like
``torch.nn.functional.cross_entropy``). ``inputs`` is a tensor batched on dim 0, or a dict of such
tensors (passed as keyword arguments, e.g. Hugging Face ``input_ids``/``labels``); ``targets`` may be
``None`` when the loss comes from the output alone (``loss_fn=lambda out, _: out.loss``).
Per-sample gradients are taken in whatever mode the model is in: use ``model.eval()`` (no dropout)
for a deterministic monitor; vmap refuses random ops, and then the loop fallback is used.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from transferlab.core.errors import TransferlabError

Batch = torch.Tensor | Mapping[str, torch.Tensor]
LossFn = Callable[[Any, Any], torch.Tensor]


class MonitorError(TransferlabError):
    """A monitor was given inputs it cannot work on."""


# ---- batches --------------------------------------------------------------------------------
def _size(x: Batch) -> int:
    if isinstance(x, Mapping):
        return int(next(iter(x.values())).shape[0])
    return int(x.shape[0])


def _slice(x: Batch | None, s: slice) -> Batch | None:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: v[s] for k, v in x.items()}
    return x[s]


def _unsqueeze(x: Batch | None) -> Batch | None:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: v.unsqueeze(0) for k, v in x.items()}
    return x.unsqueeze(0)


def _forward(model: nn.Module, x: Batch, params_and_buffers: dict[str, torch.Tensor] | None = None) -> Any:
    if params_and_buffers is None:
        return model(**x) if isinstance(x, Mapping) else model(x)
    if isinstance(x, Mapping):
        return functional_call(model, params_and_buffers, args=(), kwargs=dict(x))
    return functional_call(model, params_and_buffers, (x,))


def _trainable(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainable params, everything else the forward needs: frozen params and buffers)."""
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    rest = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    rest.update({k: b for k, b in model.named_buffers()})
    if not params:
        raise MonitorError("the model has no trainable parameters", where=type(model).__name__,
                           fix="set requires_grad=True on the parameters to monitor")
    return params, rest


# ---- per-sample gradients -------------------------------------------------------------------
@dataclass
class GradientStats:
    """From per-sample gradients g_1..g_n (flattened over all trainable parameters)."""

    n: int
    fisher_trace: float  # (1/n) sum_i |g_i|^2  (empirical Fisher trace)
    mean_grad_sq_norm: float  # |(1/n) sum_i g_i|^2
    coherence: float  # alpha = |E g|^2 / E |g|^2, in [1/n, 1] (Chatterjee & Zielinski)
    m_coherence: float  # alpha / alpha_perp_m = n * alpha: 1 if orthogonal, n if identical

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items()}


def per_sample_gradient_stats(model: nn.Module, loss_fn: LossFn, inputs: Batch, targets: Batch | None = None,
                              *, chunk_size: int = 64, method: str = "vmap") -> GradientStats:
    """Fisher trace and gradient coherence in one pass over per-sample gradients.

    ``method="vmap"`` uses ``torch.func.vmap(grad(...))`` over chunks of ``chunk_size`` samples (memory
    is bounded by one chunk's gradients); ``"loop"`` does one backward per sample (the reference, and
    the fallback when a model cannot be vmapped).
    """
    n = _size(inputs)
    if n < 1:
        raise MonitorError("empty batch", fix="pass at least one sample")
    if chunk_size < 1:
        raise MonitorError(f"chunk_size must be >= 1, got {chunk_size}", fix="use e.g. 64")
    if method not in {"vmap", "loop"}:
        raise MonitorError(f"unknown method {method!r}", fix="use 'vmap' or 'loop'")
    params, rest = _trainable(model)
    sum_g = {k: torch.zeros_like(p) for k, p in params.items()}
    sum_sq = torch.zeros((), dtype=torch.float64)
    if method == "vmap":
        try:
            sum_sq = _vmap_pass(model, loss_fn, inputs, targets, params, rest, chunk_size, sum_g)
        except RuntimeError as err:  # e.g. data-dependent control flow or random ops in forward
            warnings.warn(f"per-sample gradients fall back to a loop: vmap failed ({err})", stacklevel=2)
            sum_g = {k: torch.zeros_like(p) for k, p in params.items()}
            method = "loop"
    if method == "loop":
        sum_sq = _loop_pass(model, loss_fn, inputs, targets, params, sum_g)
    fisher = float(sum_sq) / n
    mean_sq = float(sum(((g.double() / n) ** 2).sum() for g in sum_g.values()))
    alpha = mean_sq / fisher if fisher > 0 else float("nan")
    return GradientStats(n=n, fisher_trace=fisher, mean_grad_sq_norm=mean_sq, coherence=alpha,
                         m_coherence=n * alpha)


def _vmap_pass(model, loss_fn, inputs, targets, params, rest, chunk_size, sum_g) -> torch.Tensor:
    def sample_loss(p, x, y):
        out = _forward(model, _unsqueeze(x), {**rest, **p})
        return loss_fn(out, _unsqueeze(y))

    in_dims = (None, 0, 0 if targets is not None else None)
    per_sample = vmap(grad(sample_loss), in_dims=in_dims)
    n = _size(inputs)
    sum_sq = torch.zeros((), dtype=torch.float64)
    for s in range(0, n, chunk_size):
        sl = slice(s, min(n, s + chunk_size))
        g = per_sample(params, _slice(inputs, sl), _slice(targets, sl))
        sq = None
        for k, v in g.items():
            part = v.reshape(v.shape[0], -1).pow(2).sum(1)
            sq = part if sq is None else sq + part
            sum_g[k] += v.sum(0)
        sum_sq += sq.double().sum()
    return sum_sq


def _loop_pass(model, loss_fn, inputs, targets, params, sum_g) -> torch.Tensor:
    names = list(params)
    live = dict(model.named_parameters())
    tensors = [live[k] for k in names]
    sum_sq = torch.zeros((), dtype=torch.float64)
    for i in range(_size(inputs)):
        sl = slice(i, i + 1)
        loss = loss_fn(_forward(model, _slice(inputs, sl)), _slice(targets, sl))
        gs = torch.autograd.grad(loss, tensors, allow_unused=True)
        for k, g in zip(names, gs):
            if g is not None:
                sum_g[k] += g
                sum_sq += g.double().pow(2).sum()
    return sum_sq


def fisher_trace(model: nn.Module, loss_fn: LossFn, inputs: Batch, targets: Batch | None = None, *,
                 chunk_size: int = 64, method: str = "vmap") -> float:
    """Empirical Fisher trace: mean over samples of the squared per-sample gradient norm."""
    return per_sample_gradient_stats(model, loss_fn, inputs, targets, chunk_size=chunk_size,
                                     method=method).fisher_trace


def gradient_coherence(model: nn.Module, loss_fn: LossFn, inputs: Batch, targets: Batch | None = None, *,
                       chunk_size: int = 64) -> dict[str, float]:
    """alpha = |E g|^2 / E|g|^2 and alpha / alpha_perp_m = m * alpha (alpha_perp_m = 1/m is the value
    for m pairwise-orthogonal gradients of equal norm). High: gradients agree (generalizing
    signal); near 1/m: each sample pulls its own way (memorization)."""
    s = per_sample_gradient_stats(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    return {"coherence": s.coherence, "m_coherence": s.m_coherence}


# ---- batch gradients, noise scale -----------------------------------------------------------
def gradient_norm(model: nn.Module) -> float:
    """L2 norm of the gradients currently in ``.grad`` (after ``backward()``); 0 if there are none."""
    sq = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    return math.sqrt(sq)


def batch_gradient_sq_norm(model: nn.Module, loss_fn: LossFn, inputs: Batch, targets: Batch | None = None
                           ) -> float:
    """|grad of the mean loss over the batch|^2, without touching ``.grad``."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(_forward(model, inputs), targets)
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return float(sum(g.double().pow(2).sum() for g in gs if g is not None))


def noise_scale_from_norms(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float
                           ) -> dict[str, float]:
    """McCandlish et al. (2018), appendix A: unbiased |G|^2 and tr(Sigma) from two batch sizes.

    |G|^2 ~ (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr S  ~ (|g_small|^2 - |g_big|^2) / (1/B_small - 1/B_big)
    B_noise = tr S / |G|^2   (the "simple" noise scale; NaN when |G|^2 <= 0)
    """
    if not b_big > b_small > 0:
        raise MonitorError(f"need 0 < B_small < B_big, got {b_small} and {b_big}",
                           fix="use a small batch strictly smaller than the big one")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    tr = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return {"grad_sq_true": g2, "trace_sigma": tr, "noise_scale": tr / g2 if g2 > 0 else float("nan")}


def gradient_noise_scale(model: nn.Module, loss_fn: LossFn, inputs: Batch, targets: Batch | None = None, *,
                         small_batch: int = 1) -> dict[str, float]:
    """B_noise from one batch: |g_small|^2 is averaged over the disjoint small batches that tile it
    (less variance than one small batch), |g_big|^2 is the whole batch's."""
    n = _size(inputs)
    k = n // small_batch
    if k < 2:
        raise MonitorError(f"batch of {n} holds fewer than two small batches of {small_batch}",
                           fix="pass a bigger batch or a smaller small_batch")
    big = k * small_batch
    parts = [slice(i * small_batch, (i + 1) * small_batch) for i in range(k)]
    small_sq = np.mean([batch_gradient_sq_norm(model, loss_fn, _slice(inputs, s), _slice(targets, s))
                        for s in parts])
    whole = slice(0, big)
    big_sq = batch_gradient_sq_norm(model, loss_fn, _slice(inputs, whole), _slice(targets, whole))
    out = noise_scale_from_norms(float(small_sq), big_sq, small_batch, big)
    out.update({"grad_sq_small": float(small_sq), "grad_sq_big": big_sq, "batch_small": small_batch,
                "batch_big": big})
    return out


def weight_norm(model: nn.Module, *, per_layer: bool = False) -> float | dict[str, float]:
    """L2 norm of all parameters (or per named parameter)."""
    if per_layer:
        return {k: float(p.detach().double().norm()) for k, p in model.named_parameters()}
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))


# ---- dormant units, effective rank ----------------------------------------------------------
_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Softplus,
                nn.ReLU6, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardtanh)


def activation_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose output is a layer's units: torch activations and HF ``*Activation`` classes."""
    return {name: m for name, m in model.named_modules()
            if name and (isinstance(m, _ACTIVATIONS) or type(m).__name__.endswith("Activation"))}


@torch.no_grad()
def dormant_units(model: nn.Module, inputs: Batch, *, tau: float = 0.025,
                  modules: Mapping[str, nn.Module] | Iterable[str] | None = None,
                  inputs_of: bool = False) -> dict[str, Any]:
    """tau-dormant units (Sokar et al. 2023): unit i of a layer is dormant when
    E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|) <= tau. Units are the last dimension of each hooked
    module's output (``inputs_of``: of its first input, e.g. a gated MLP's hidden units entering its
    down projection, where the activation is a function, not a module); the expectation runs over every
    other dimension (batch, positions). ``tau=0`` counts only units that are exactly zero on the batch."""
    named = dict(model.named_modules())
    if modules is None:
        mods = activation_modules(model)
    elif isinstance(modules, Mapping):
        mods = dict(modules)
    else:
        mods = {n: named[n] for n in modules}
    if not mods:
        raise MonitorError("no activation modules to hook", where=type(model).__name__,
                           fix="pass modules=[names] whose outputs are the units (e.g. the MLP activation)")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def fn(_m, inp, out=None):
            h = inp[0] if inputs_of else out[0] if isinstance(out, tuple) else out
            flat = h.detach().abs().reshape(-1, h.shape[-1]).double()
            sums[name] = sums.get(name, 0) + flat.sum(0)
            counts[name] = counts.get(name, 0) + flat.shape[0]
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) if inputs_of else m.register_forward_hook(hook(n))
               for n, m in mods.items()]
    try:
        _forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    per_layer, dormant, total = {}, 0, 0
    for n in mods:
        if n not in sums:
            continue
        mean = sums[n] / counts[n]
        score = mean / mean.mean() if float(mean.mean()) > 0 else torch.zeros_like(mean)
        d = int((score <= tau).sum())
        per_layer[n] = d / mean.numel()
        dormant += d
        total += mean.numel()
    return {"dormant_fraction": dormant / total if total else float("nan"), "dormant_units": dormant,
            "units": total, "per_layer": per_layer}


def effective_rank(features: torch.Tensor | np.ndarray) -> float:
    """Roy & Vetterli (2007): exp(entropy of the singular values normalized to sum 1) of a (n, d)
    feature matrix (leading dims are flattened). Between 1 and min(n, d)."""
    f = torch.as_tensor(features).detach().double()
    f = f.reshape(-1, f.shape[-1])
    s = torch.linalg.svdvals(f)
    if float(s.sum()) == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def feature_effective_rank(model: nn.Module, inputs: Batch, module: str | nn.Module) -> float:
    """Effective rank of the output of ``module`` (a name or the module) on ``inputs``."""
    m = dict(model.named_modules())[module] if isinstance(module, str) else module
    store: list[torch.Tensor] = []
    h = m.register_forward_hook(lambda _m, _i, out: store.append(out[0] if isinstance(out, tuple) else out))
    try:
        _forward(model, inputs)
    finally:
        h.remove()
    return effective_rank(store[0])


# ---- loss against a predicted power law -----------------------------------------------------
@dataclass
class PowerLawFit:
    """L(t) = E + A t^-alpha, fitted in log space with a robust (soft-L1) loss."""

    E: float
    A: float
    alpha: float
    sigma: float  # robust scale of log residuals (1.4826 MAD, floored)
    cov: np.ndarray = field(repr=False)  # covariance of (log A, alpha, log E)
    n: int = 0

    def predict(self, t: float | np.ndarray) -> np.ndarray:
        t = np.asarray(t, float)
        return self.E + self.A * t ** (-self.alpha)

    def interval(self, t: float | np.ndarray, z: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, low, high): z standard deviations in log space, parameter uncertainty included."""
        t = np.atleast_1d(np.asarray(t, float))
        pred = self.predict(t)
        pw = self.A * t ** (-self.alpha)
        jac = np.stack([pw, -np.log(t) * pw, np.full_like(t, self.E)], axis=1) / pred[:, None]
        var = self.sigma ** 2 + np.einsum("ij,jk,ik->i", jac, self.cov, jac)
        half = z * np.sqrt(np.maximum(var, 0))
        return pred, pred * np.exp(-half), pred * np.exp(half)


def fit_power_law(steps: Sequence[float], losses: Sequence[float], *, min_sigma: float = 0.005,
                  start: PowerLawFit | None = None) -> PowerLawFit:
    """Fit E + A t^-alpha (E >= 0, 0 <= alpha <= 5) to positive (t, L) by robust least squares on
    log L, from a small grid of starts (the best robust cost wins), or from ``start`` alone (a
    previous fit: the online monitor's warm start)."""
    from scipy.optimize import least_squares

    t = np.asarray(steps, float)
    y = np.asarray(losses, float)
    ok = (t > 0) & np.isfinite(y) & (y > 0)
    t, y = t[ok], y[ok]
    if len(t) < 4:
        raise MonitorError(f"a power-law fit needs at least 4 points with step > 0 and loss > 0, "
                           f"got {len(t)}",
                           fix="log more steps before fitting")
    ly = np.log(y)
    lmin = float(y.min())

    def resid(th):
        la, a, le = th
        return np.logaddexp(la - a * np.log(t), le) - ly

    starts = []
    if start is not None:
        starts.append(np.array([math.log(start.A), start.alpha, math.log(max(start.E, 1e-300))]))
    else:
        for a0 in (0.1, 0.3, 0.7, 1.5):
            for e_frac in (1e-3, 0.5, 0.9):
                amp = max(float(y[0]) - e_frac * lmin, 1e-3 * lmin)
                starts.append(np.array([math.log(amp) + a0 * math.log(t[0]), a0, math.log(e_frac * lmin)]))
    best = None
    for x0 in starts:
        x0 = np.clip(x0, [-49.9, 1e-6, -49.9], [49.9, 4.999, 49.9])
        try:
            r = least_squares(resid, x0, loss="soft_l1", f_scale=0.05,
                              bounds=([-50, 0, -50], [50, 5, 50]), max_nfev=400)
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise MonitorError("the power-law fit failed from every start", fix="check the losses are finite")
    res = best.fun
    sigma = max(1.4826 * float(np.median(np.abs(res - np.median(res)))), min_sigma)
    jac = best.jac
    cov = sigma ** 2 * np.linalg.pinv(jac.T @ jac)
    la, a, le = best.x
    return PowerLawFit(E=math.exp(le), A=math.exp(la), alpha=float(a), sigma=sigma, cov=cov, n=len(t))


class LossPowerLawMonitor:
    """Fed (step, loss) online: predicts each new point from a fit on the earlier ones and flags a
    point outside the interval (+1 above: a spike or plateau; -1 below: faster than predicted).

    The fit is refreshed every ``refit_every`` points once ``min_points`` are in; points with
    step <= 0 (t^-alpha is undefined there) are ignored."""

    def __init__(self, *, min_points: int = 10, refit_every: int = 1, z: float = 3.0,
                 window: int | None = None):
        if min_points < 4:
            raise MonitorError(f"min_points must be >= 4, got {min_points}", fix="use e.g. 10")
        self.min_points = min_points
        self.refit_every = max(1, refit_every)
        self.z = z
        self.window = window
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.fit: PowerLawFit | None = None
        self.deviations: list[tuple[float, float, int]] = []
        self._since_fit = 0

    def update(self, step: float, loss: float) -> dict[str, float]:
        if step <= 0 or not math.isfinite(loss) or loss <= 0:
            return {}
        out: dict[str, float] = {}
        if self.fit is not None:
            pred, lo, hi = (float(v[0]) for v in self.fit.interval(step, self.z))
            flag = 1 if loss > hi else (-1 if loss < lo else 0)
            out = {"loss_pred": pred, "loss_pred_lo": lo, "loss_pred_hi": hi, "loss_deviation": float(flag)}
            if flag:
                self.deviations.append((float(step), float(loss), flag))
        self.steps.append(float(step))
        self.losses.append(float(loss))
        self._since_fit += 1
        if len(self.steps) >= self.min_points and (self.fit is None or self._since_fit >= self.refit_every):
            s = slice(-self.window, None) if self.window else slice(None)
            try:
                self.fit = fit_power_law(self.steps[s], self.losses[s], start=self.fit)
            except MonitorError:
                self.fit = None
            self._since_fit = 0
        return out


# ---- mixture-of-experts pathways ------------------------------------------------------------
def _router_probs(layer: torch.Tensor, batch_size: int | None, already_probs: bool) -> torch.Tensor:
    x = layer.detach().double()
    if x.dim() == 2 and batch_size is not None and x.shape[0] != batch_size:
        if x.shape[0] % batch_size:
            raise MonitorError(f"router output of {x.shape[0]} rows does not split into {batch_size} samples",
                               fix="pass batch_size = number of sequences")
        x = x.reshape(batch_size, x.shape[0] // batch_size, x.shape[-1])
    if x.dim() == 2:
        x = x.unsqueeze(1)  # (N, 1, E): one routing decision per sample
    if x.dim() != 3:
        raise MonitorError(f"router output must be (N, E), (N, T, E) or (N*T, E), got {tuple(x.shape)}",
                           fix="pass one tensor per layer")
    return x if already_probs else torch.softmax(x, dim=-1)


def routing_paths(router: Sequence[torch.Tensor], top_k: int = 1, *, batch_size: int | None = None,
                  attention_mask: torch.Tensor | None = None, per_token: bool = False, probs: bool = False
                  ) -> tuple[list[list[int]], torch.Tensor]:
    """Samples' pathways: per layer, the top-k experts (by weight, ids in weight order), concatenated
    over layers. Sample-level (default): the router probabilities are averaged over the sample's
    (unmasked) tokens first, so a pathway has n_layers * top_k entries. ``per_token=True``
    concatenates every token's top-k instead (layer-major). Returns (paths, weights) with weights
    (N, n_layers, E): each layer's top-k weights renormalized to sum 1, zero elsewhere."""
    if not router:
        raise MonitorError("no router outputs", fix="pass one tensor of router logits per MoE layer")
    layers = [_router_probs(r, batch_size, probs) for r in router]
    n = layers[0].shape[0]
    mask = None if attention_mask is None else attention_mask.detach().double().reshape(n, -1)
    paths: list[list[int]] = [[] for _ in range(n)]
    weights = []
    for p in layers:
        if mask is not None and p.shape[1] == mask.shape[1]:
            agg = (p * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        else:
            agg = p.mean(1)
        w, ix = torch.topk(agg, top_k, dim=-1)
        dense = torch.zeros_like(agg).scatter_(1, ix, w / w.sum(-1, keepdim=True))
        weights.append(dense)
        if per_token:
            tix = torch.topk(p, top_k, dim=-1).indices  # (N, T, k)
            for i in range(n):
                keep = range(p.shape[1]) if mask is None or mask.shape[1] != p.shape[1] else \
                    [t for t in range(p.shape[1]) if mask[i, t] > 0]
                for t in keep:
                    paths[i].extend(int(v) for v in tix[i, t])
        else:
            for i in range(n):
                paths[i].extend(int(v) for v in ix[i])
    return paths, torch.stack(weights, dim=1)


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (unit insert, delete, substitute), one numpy row at a time."""
    a_ = np.asarray(a)
    b_ = np.asarray(b)
    row = np.arange(len(b_) + 1)
    ar = np.arange(len(b_) + 1)
    for i in range(1, len(a_) + 1):
        cand = np.empty_like(row)
        cand[0] = i
        cand[1:] = np.minimum(row[1:] + 1, row[:-1] + (a_[i - 1] != b_))
        row = np.minimum.accumulate(cand - ar) + ar  # the insertion chain along the row
    return int(row[-1])


def pathway_distance(paths: Sequence[Sequence[int]], *, normalize: bool = True, max_pairs: int | None = None,
                     seed: int = 0) -> float:
    """Mean pairwise edit distance between samples' pathways (normalized by the longer length when
    ``normalize``). Falls as pathways become shared across samples (generalization)."""
    n = len(paths)
    if n < 2:
        raise MonitorError("pathway distance needs at least 2 samples", fix="pass a batch of >= 2")
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
    d = []
    for i, j in pairs:
        e = edit_distance(paths[i], paths[j])
        d.append(e / max(len(paths[i]), len(paths[j]), 1) if normalize else e)
    return float(np.mean(d))


def pathway_consistency(weights: torch.Tensor, expert_embeddings: Sequence[torch.Tensor] | None = None
                        ) -> dict[str, Any]:
    """Cosine similarity of consecutive layers' router-weighted expert embeddings, averaged over
    layer pairs, per sample and overall. ``weights`` is (N, n_layers, E) from :func:`routing_paths`;
    ``expert_embeddings`` is one (E, d) tensor per layer (e.g. each layer's router weight matrix,
    which lives in the residual stream, so consecutive layers are comparable). Without embeddings
    experts are one-hot, i.e. the cosine of the routing weight vectors themselves."""
    w = weights.double()
    if w.dim() != 3 or w.shape[1] < 2:
        raise MonitorError(f"weights must be (N, n_layers >= 2, E), got {tuple(w.shape)}",
                           fix="route through at least two MoE layers")
    if expert_embeddings is None:
        v = w
    else:
        if len(expert_embeddings) != w.shape[1]:
            raise MonitorError(f"{len(expert_embeddings)} embedding matrices for {w.shape[1]} layers",
                               fix="pass one (n_experts, d) matrix per layer")
        v = torch.stack([w[:, l] @ expert_embeddings[l].detach().double() for l in range(w.shape[1])], dim=1)
    cos = torch.nn.functional.cosine_similarity(v[:, :-1], v[:, 1:], dim=-1)  # (N, L-1)
    per_sample = cos.mean(1)
    return {"pathway_consistency": float(per_sample.mean()), "per_sample": per_sample.tolist()}


def moe_pathway_metrics(router: Sequence[torch.Tensor], top_k: int = 1, *, batch_size: int | None = None,
                        attention_mask: torch.Tensor | None = None,
                        expert_embeddings: Sequence[torch.Tensor] | None = None, per_token: bool = False,
                        probs: bool = False, max_pairs: int | None = 2000) -> dict[str, float]:
    """Both pathway metrics of arXiv 2506.21551 from router outputs (one tensor per layer)."""
    paths, w = routing_paths(router, top_k, batch_size=batch_size, attention_mask=attention_mask,
                             per_token=per_token, probs=probs)
    return {"pathway_distance": pathway_distance(paths, max_pairs=max_pairs),
            "pathway_consistency": pathway_consistency(w, expert_embeddings)["pathway_consistency"]}


# ---- the table of monitors -------------------------------------------------------------------------
@dataclass
class Probe:
    """What every caller of the table has, and so what a row computes from: a real module (its parameters
    loaded, in eval mode), its mean loss, a fixed probe batch, and the inputs the activation monitors run on.

    The engine builds one per ensemble member (each member's parameters copied into one module), the
    Hugging Face callbacks one per log step from the Trainer's model. Results several rows share (the
    per-sample gradient pass, the two-batch noise-scale pass, the activation pass) are computed once per
    probe through :meth:`shared`. ``small_batch``: 0 takes the noise scale exactly from the per-sample
    gradients (tr Σ = E|g|² - |E g|²); k > 0 takes McCandlish et al.'s two-batch estimate with small
    batches of k rows. ``feature_module``: the module whose output's effective rank is logged (None: not
    logged). ``dormant``: whether dormant units are counted (when the model has activation modules).
    ``skip``: keys not computed here (the engine skips ``weight_norm``: its evaluator logs ``weight_norm_sq``).
    """

    model: nn.Module
    loss_fn: LossFn
    inputs: Batch
    targets: Batch | None = None
    activation_inputs: Batch | None = None  # default: the probe's inputs
    chunk_size: int = 64
    small_batch: int = 0
    tau: float = 0.025
    dormant: bool = True
    feature_module: str | None = None
    skip: frozenset[str] = frozenset()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def shared(self, name: str, fn: Callable[[Probe], Any]) -> Any:
        """``fn(self)``, computed once per probe (for results several monitors read)."""
        if name not in self._cache:
            self._cache[name] = fn(self)
        return self._cache[name]


def probe_gradient_stats(p: Probe) -> GradientStats:
    """The probe's per-sample gradient pass (Fisher trace, coherence, mean gradient), once per probe."""
    def run(p: Probe) -> GradientStats:
        with torch.enable_grad():  # the engine evaluates under no_grad
            return per_sample_gradient_stats(p.model, p.loss_fn, p.inputs, p.targets, chunk_size=p.chunk_size)
    return p.shared("gradient_stats", run)


def _two_batch_noise(p: Probe) -> dict[str, float] | None:
    if not p.small_batch:
        return None

    def run(p: Probe) -> dict[str, float]:
        with torch.enable_grad():
            return gradient_noise_scale(p.model, p.loss_fn, p.inputs, p.targets, small_batch=p.small_batch)
    return p.shared("two_batch_noise", run)


def _activations(p: Probe) -> dict[str, Any]:
    """Dormant units over every activation module and the feature module's output, from one forward pass."""
    def run(p: Probe) -> dict[str, Any]:
        x = p.inputs if p.activation_inputs is None else p.activation_inputs
        acts = activation_modules(p.model)
        features: list[torch.Tensor] = []
        hook = None
        if p.feature_module is not None:
            mod = dict(p.model.named_modules())[p.feature_module]
            hook = mod.register_forward_hook(
                lambda _m, _i, out: features.append(out[0] if isinstance(out, tuple) else out))
        dormant = None
        try:
            if p.dormant and acts:
                dormant = dormant_units(p.model, x, tau=p.tau, modules=acts)["dormant_fraction"]
            elif hook is not None:
                with torch.no_grad():
                    _forward(p.model, x)
        finally:
            if hook is not None:
                hook.remove()
        return {"dormant_fraction": dormant, "features": features[0] if features else None}
    return p.shared("activations", run)


def _noise_scale(p: Probe) -> float:
    two = _two_batch_noise(p)
    if two is not None:
        return two["noise_scale"]
    s = probe_gradient_stats(p)
    trace_sigma = max(s.fisher_trace - s.mean_grad_sq_norm, 0.0)
    return trace_sigma / s.mean_grad_sq_norm if s.mean_grad_sq_norm > 0 else float("nan")


def _grad_norm_probe(p: Probe) -> float | None:
    two = _two_batch_noise(p)
    return None if two is None else two["grad_sq_big"] ** 0.5


def _feature_rank(p: Probe) -> float | None:
    f = _activations(p)["features"]
    return None if f is None else effective_rank(f)


@dataclass(frozen=True)
class Monitor:
    """One row of the table: its key in every metrics log (the engine and the Hugging Face callbacks both
    write it), how to compute it from a :class:`Probe` (``None``: not measurable on this probe, not
    logged), how a report labels it and scales its axis, whether the grokking report plots it, and the
    older keys it had."""

    key: str
    label: str
    scale: str  # "log" | "linear"
    description: str
    compute: Callable[[Probe], float | None]
    aliases: tuple[str, ...] = ()
    plot: bool = True


MONITORS: list[Monitor] = [
    Monitor("fisher_trace", "Fisher trace", "log", "empirical Fisher trace: mean squared per-sample gradient norm",
            lambda p: probe_gradient_stats(p).fisher_trace),
    Monitor("coherence", "gradient coherence α", "log", "|E g|² / E|g|² over the probe (Chatterjee & Zielinski): "
            "near 1/n while examples pull apart (memorization)", lambda p: probe_gradient_stats(p).coherence,
            ("grad_coherence",)),
    Monitor("m_coherence", "m-coherence n·α", "log", "n α: 1 if the per-sample gradients are orthogonal, n if equal",
            lambda p: probe_gradient_stats(p).m_coherence, ("grad_m_coherence",), plot=False),
    Monitor("mean_grad_sq_norm", "|E g|²", "log", "squared norm of the probe's mean gradient",
            lambda p: probe_gradient_stats(p).mean_grad_sq_norm, plot=False),
    Monitor("noise_scale", "gradient noise scale", "log", "McCandlish et al.'s simple noise scale tr Σ / |G|²",
            _noise_scale, ("grad_noise_scale",)),
    Monitor("grad_norm_probe", "probe gradient norm", "log", "|G| of the whole probe (with the two-batch noise scale)",
            _grad_norm_probe, plot=False),
    Monitor("weight_norm", "weight norm", "log", "L2 norm of all parameters", lambda p: weight_norm(p.model),
            plot=False),
    Monitor("dormant_fraction", "dormant units", "linear", "τ-dormant units (Sokar et al., τ = 0.025)",
            lambda p: _activations(p)["dormant_fraction"], ("dormant_frac",)),
    Monitor("effective_rank", "feature effective rank", "linear", "effective rank of the last activation's output "
            "(Roy & Vetterli)", _feature_rank, ("feature_erank",)),
]
MONITOR: dict[str, Monitor] = {m.key: m for m in MONITORS}


def register_monitor(monitor: Monitor, *, replace: bool = False) -> Monitor:
    """Add a row to the table (at run time; in the source, add it to ``MONITORS``): the engine, the Hugging
    Face callbacks and the grokking report then log and plot it."""
    if monitor.key in MONITOR and not replace:
        raise MonitorError(f"a monitor {monitor.key!r} is already in the table",
                           fix="pick another key, or pass replace=True")
    if monitor.key in MONITOR:
        MONITORS[[m.key for m in MONITORS].index(monitor.key)] = monitor
    else:
        MONITORS.append(monitor)
    MONITOR[monitor.key] = monitor
    return monitor


def unregister_monitor(key: str) -> None:
    """Take a row out of the table (the inverse of :func:`register_monitor`)."""
    if key not in MONITOR:
        raise MonitorError(f"no monitor {key!r} in the table", fix=f"one of {', '.join(MONITOR)}")
    MONITORS.remove(MONITOR.pop(key))


def measure(probe: Probe) -> dict[str, float]:
    """Every row of the table on one probe, in table order: {key: value} (rows that give None, or that the
    probe skips, are left out)."""
    out: dict[str, float] = {}
    for m in MONITORS:
        if m.key in probe.skip:
            continue
        v = m.compute(probe)
        if v is not None:
            out[m.key] = v
    return out


def monitor_value(record: Mapping[str, Any], key: str) -> Any:
    """A monitor's value in a metrics record, under its key or one of its older names (runs logged before the
    names were unified still plot)."""
    m = MONITOR[key]
    for k in (m.key, *m.aliases):
        if record.get(k) is not None:
            return record[k]
    return None
