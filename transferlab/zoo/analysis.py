"""Pure functions on a built family: held-out loss against model size."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def loss_vs_n(entries: list[dict[str, Any]], train_corpus: str) -> dict[str, Any]:
    """Per held-out corpus, the power law L(N) = k N^-a fitted by least squares in log-log space over the
    family, with a 95% t-interval on the exponent ``a`` and R^2; and whether the loss falls with N at every
    step of the family (``monotone``). A family whose loss does not fall with N is ``flagged`` with the
    sizes where it rises. Fewer than 3 sizes: no fit, and the reason."""
    out: dict[str, Any] = {"train_corpus": train_corpus, "corpora": {}}
    rows = sorted(entries, key=lambda e: e["non_embedding_params"])
    corpora = sorted({c for e in rows for c in (e.get("heldout_loss") or {})})
    for c in corpora:
        pts = [(e["non_embedding_params"], e["heldout_loss"][c], e["size"]) for e in rows
               if c in (e.get("heldout_loss") or {}) and math.isfinite(e["heldout_loss"][c])]
        res: dict[str, Any] = {"N": [p[0] for p in pts], "loss": [p[1] for p in pts], "sizes": [p[2] for p in pts]}
        rises = [f"{a[2]} -> {b[2]}" for a, b in zip(pts, pts[1:]) if b[1] >= a[1]]
        res["monotone"] = not rises
        res["flagged"] = bool(rises)
        res["rises"] = rises
        if len(pts) < 3:
            res["fit"] = None
            res["why_no_fit"] = f"{len(pts)} sizes; a power law with an interval needs at least 3"
        else:
            x = np.log([p[0] for p in pts])
            y = np.log([p[1] for p in pts])
            lr = stats.linregress(x, y)
            t = stats.t.ppf(0.975, len(pts) - 2)
            a = -lr.slope
            res["fit"] = {
                "form": "L = k * N^-a (log-log least squares)",
                "k": float(math.exp(lr.intercept)),
                "a": float(a),
                "a_ci": [float(a - t * lr.stderr), float(a + t * lr.stderr)],
                "r2": float(lr.rvalue**2),
                "n": len(pts),
            }
            if res["fit"]["a_ci"][0] <= 0:
                res["flagged"] = True
                res.setdefault("rises", []).append("the exponent's interval includes 0")
        out["corpora"][c] = res
    out["flagged"] = any(r["flagged"] for r in out["corpora"].values())
    return out
