"""How far an answer of a fitted law lies outside the data it was fitted on.

A scaling law answers questions at compute budgets, model sizes and token counts that may be far
beyond the runs behind it; the fit's intervals say nothing about whether the law still holds
there. :func:`beyond` compares one answer with the range of the data and says how far outside it
lies, as a factor for the positive scale quantities (compute, N, D: ``value / max`` above the
range, ``min / value`` below it) and as a difference for loss::

    beyond("C", 1e25, 6 * N * D).note()
    # '1e25 FLOPs is 772x past the largest budget in the data (1.3e22)'

A value within the range (to a relative 1e-9, so the data's own largest budget is inside) has
``factor == 1`` and no note.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# quantity -> (unit after the value, what the largest and the smallest data value are called)
QUANTITIES = {
    "C": ("FLOPs", "the largest budget in the data", "the smallest budget in the data"),
    "N": ("parameters", "the largest model in the data", "the smallest model in the data"),
    "D": ("tokens", "the most tokens in the data", "the fewest tokens in the data"),
    "loss": ("", "the highest loss in the data", "the lowest loss in the data"),
}
REL_TOL = 1e-9


def fmt(v: float) -> str:
    """3 significant digits, exponents written as in papers: 1.3e22, 4.4e-05 -> 4.4e-5."""
    t = f"{v:.3g}"
    if "e" in t:
        m, e = t.split("e")
        t = f"{m}e{int(e)}"
    return t


def fmt_factor(f: float) -> str:
    return f"{f:,.0f}x" if f >= 100 else f"{f:.3g}x"


@dataclass(frozen=True)
class Beyond:
    """One answer against the data's range: ``factor`` 1 inside, else how many times outside."""

    quantity: str  # "C", "N", "D" or "loss"
    value: float
    data_min: float
    data_max: float
    side: str | None  # "above", "below" or None (inside)
    factor: float  # >= 1: value / max above the range, min / value below (loss notes give the difference)
    label: str = ""  # what the value is, e.g. "N_opt at 1e25 FLOPs"

    @property
    def outside(self) -> bool:
        return self.side is not None

    def note(self) -> str:
        """One sentence saying how far outside (empty when inside)."""
        if self.side is None:
            return ""
        unit, above, below = QUANTITIES[self.quantity]
        what = f"{self.label} " if self.label else ""
        val = f"{fmt(self.value)} {unit}".strip()
        ref = self.data_max if self.side == "above" else self.data_min
        if self.quantity == "loss":
            gap = abs(self.value - ref)
            word = "above" if self.side == "above" else "below"
            return f"{what}{val} is {fmt(gap)} {word} {above if self.side == 'above' else below} ({fmt(ref)})"
        if self.side == "above":
            return f"{what}{val} is {fmt_factor(self.factor)} past {above} ({fmt(ref)})"
        return f"{what}{val} is {fmt_factor(self.factor)} below {below} ({fmt(ref)})"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["note"] = self.note()
        return d


def beyond(quantity: str, value: float, data: np.ndarray, label: str = "") -> Beyond:
    """Where ``value`` lies against the finite, positive values of ``data`` (see the module docstring)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; choose from {', '.join(QUANTITIES)}")
    v = np.asarray(data, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = float(v.min()), float(v.max())
    value = float(value)
    side = None
    factor = 1.0
    if value > hi * (1 + REL_TOL):
        side, factor = "above", value / hi
    elif value < lo * (1 - REL_TOL):
        side, factor = "below", lo / value if value > 0 else float("inf")
    return Beyond(quantity, value, lo, hi, side, float(factor), label)
