"""The zoo demo of emulated fine-tuning (issue 5): the paper's 2x2 of pretraining x fine-tuning scale.

Mitchell et al. 2023 (arXiv 2310.12962) separate what pretraining and fine-tuning each contribute
by mixing scales at decoding time. Here, on the local model zoo:

1. pretrain a small and a large zoo model on the source corpus, exactly as ``transferlab zoo build``
   does (:func:`transferlab.zoo.build.build_zoo`; a built zoo is reused). By default that is ``prose``, the
   docstrings and comments: the bases know English and the libraries' documentation, and have never seen
   Python code (its knowledge);
2. fine-tune both on the target corpus (``code``) with the zoo's :func:`transferlab.zoo.train.finetune`,
   stopping early on the target's held-out loss: writing code is the behaviour fine-tuning adds, and the
   large fine-tune is the upper bound. Session 7 measured three other source/target pairs (docs/RESULTS.md):
   when the bases have already seen code (``prose+code[^sympy]`` -> ``code[sympy]``, or ``source[sympy]``,
   the files as they are), the large base alone closes 0.9-1.0 of the gap and fine-tuning adds nothing the
   small model's delta could carry;
3. score four models on held-out windows of the target's and the source's validation split,
   with the EFT scoring mode on token windows (:mod:`transferlab.studies.eft.heldout`):

   ============================  ========================  ========================
   fine-tuning scale \\ knowledge  small pretrained           large pretrained
   ============================  ========================  ========================
   small                         small-ft                  up-scaled EFT:
                                                           large + (small-ft - small)
   large                         down-scaled EFT:          large-ft (upper bound)
                                 small + (large-ft - large)
   ============================  ========================  ========================

The headline is the fraction of the small-ft -> large-ft gap on the target loss that up-scaling
closes, ``(L[small-ft] - L[up]) / (L[small-ft] - L[large-ft])``, with a bootstrap interval over the
held-out windows; the issue's target is at least 0.5. Every number comes back whatever it is.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.core.devices import torch_threads
from transferlab.core.progress import say
from transferlab.store import Store
from transferlab.train.lm import spread_windows
from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import FAMILY, size_spec

TARGET_FRACTION = 0.5  # the target: up-scaling closes at least half of the gap
# issue 12: the small fine-tune's delta adds at least this much of the gap beyond the large base alone
TARGET_DELTA = 0.25
MODEL_KEYS = ("small", "large", "small-ft", "large-ft", "eft-up", "eft-down")
LABELS = {
    "small": "small (pretrained)",
    "large": "large (pretrained)",
    "small-ft": "small-ft",
    "large-ft": "large-ft (upper bound)",
    "eft-up": "up-scaled EFT",
    "eft-down": "down-scaled EFT",
}


class EFTDemoConfig(StudyConfig):
    """Pretrain small and large on the source, fine-tune both on the target, score the 2x2."""

    preset: str = "custom"
    small: str = Field("xs", description="zoo size of the small model")
    large: str = Field("l", description="zoo size of the large model")
    source_corpus: str = Field("prose", description="pretraining corpus (knowledge): docstrings and comments")
    target_corpus: str = Field("code", description="fine-tuning corpus (behaviour): the code the bases never saw")
    pretrain_tokens_per_param: float | None = Field(20.0, gt=0, description="pretraining tokens per parameter")
    pretrain_tokens: int | None = Field(None, ge=1, description="a fixed pretraining budget instead")
    finetune_tokens: int = Field(200_000, ge=1, description="D_F: size of the fine-tuning pool in tokens")
    vocab_size: int = Field(4096, ge=300, le=1_000_000, description="BPE vocabulary size")
    val_percent: float = Field(10.0, gt=0, lt=100, description="percent of files held out for validation")
    max_files: int | None = Field(None, ge=1, description="use only the first stdlib files and no "
                                     "installed distribution (tests; the mini presets: 1000, all of the stdlib)")
    pretrain: TrainSettings = Field(
        default_factory=TrainSettings,
        description="how the small and large models pretrain (the zoo build's settings: a zoo built by `transferlab "
                    "zoo build` on the same corpus is reused)")
    finetune: TrainSettings = Field(
        default_factory=lambda: TrainSettings(lr=1e-3, evals=20, monitor=False),
        description="how both fine-tune on the target")
    max_epochs: float = Field(4.0, gt=0, description="fine-tuning passes over D_F (clamped by min/max_steps)")
    min_steps: int = Field(40, ge=1, description="fewest fine-tuning steps")
    max_steps: int = Field(400, ge=1, description="most fine-tuning steps")
    patience: int = Field(3, ge=0, description="early stopping of the fine-tunes on the target's held-out loss "
                                               "(evaluations without a better one; 0: fixed steps)")
    score_tokens: int = Field(
        262_144, ge=0, description="held-out tokens scored per corpus, spread over the split (0: all of it; the "
                                   "zoo v2 validation splits hold millions of tokens, hours of scoring on a CPU)"
    )
    score_batch: int = Field(16, ge=1, description="windows per forward pass when scoring")
    beta: float = Field(1.0, ge=0, description="EFT beta of the 2x2 (the paper's beta = 1)")
    betas: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
        description="betas of the sweep curves (reported beside the 2x2, never used to pick it)",
    )
    bootstrap: int = Field(1000, ge=0, description="resamples of held-out windows for intervals")
    seed: int = Field(0, ge=0, description="seed of the bootstrap")

    @property
    def seq_len(self) -> int:
        return self.pretrain.seq_len

    @field_validator("small", "large")
    @classmethod
    def _size(cls, v: str) -> str:
        size_spec(v)
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: list[float]) -> list[float]:
        if any((not math.isfinite(b)) or b < 0 for b in v):
            raise ValueError("betas must be finite and >= 0")
        return sorted(set(float(b) for b in v))

    @model_validator(mode="after")
    def _check(self) -> EFTDemoConfig:
        if FAMILY[self.small].non_embedding_params() >= FAMILY[self.large].non_embedding_params():
            raise ValueError(
                f"small ({self.small}) must have fewer parameters than large ({self.large}); "
                f"sizes by parameters: {', '.join(FAMILY)}"
            )
        if self.source_corpus == self.target_corpus:
            raise ValueError("source_corpus and target_corpus must differ")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} > max_steps {self.max_steps}")
        if self.pretrain.seq_len != self.finetune.seq_len:
            raise ValueError("pretrain.seq_len and finetune.seq_len must be equal")
        if self.finetune_tokens < self.seq_len + 1:
            raise ValueError(f"finetune_tokens must hold one window of seq_len + 1 = {self.seq_len + 1} tokens")
        if 0 < self.score_tokens < self.seq_len + 1:
            raise ValueError(f"score_tokens must hold one window of seq_len + 1 = {self.seq_len + 1} tokens")
        return self

    def zoo_config(self) -> Any:
        from transferlab.zoo.build import ZooConfig

        return ZooConfig(sizes=[self.small, self.large], tokens_per_param=self.pretrain_tokens_per_param,
                         tokens=self.pretrain_tokens, corpus=self.source_corpus, vocab_size=self.vocab_size,
                         tokenizer_corpora=["prose", "code"], heldout=["prose", "code"],
                         val_percent=self.val_percent, max_files=self.max_files, train=self.pretrain)

    def finetune_steps(self) -> int:
        raw = -int(-self.max_epochs * self.finetune_tokens // (self.finetune.batch_size * self.finetune.seq_len))
        return min(self.max_steps, max(self.min_steps, raw))


PRESETS = PresetRegistry()
PRESETS.add(
    "default",
    "xs (56k non-embedding params) vs l (804k, 14.5x), each pretrained to 20 tokens/param on prose (the zoo build's "
    "models: reused from a built zoo), fine-tuned on 200k code tokens (early stopping), scored on 262k held-out "
    "tokens per corpus spread over each validation split",
)
PRESETS.add(
    "mini",
    "xxs (13k) vs s (151k, 11x) pretrained to 10 tokens/param on the standard library's prose only (its own small "
    "corpus and 2,048-token BPE: seconds to build), fine-tuned on 100k tokens of its code, scoring 64k held-out "
    "tokens per corpus (meant for 1-3 min)",
    small="xxs", large="s", max_files=1000, vocab_size=2048, pretrain_tokens_per_param=10.0,
    finetune_tokens=100_000, score_tokens=65_536, max_steps=200, bootstrap=300,
)
PRESETS.add(
    "micro",
    "test-sized: xxs vs xs, vocab 400, 30 stdlib files, a few thousand tokens; seconds",
    patience=0,
    small="xxs",
    large="xs",
    pretrain_tokens_per_param=None,
    pretrain_tokens=3_200,
    finetune_tokens=1_530,
    vocab_size=400,
    max_files=30,
    pretrain={"seq_len": 16, "batch_size": 8, "min_steps": 4, "evals": 4, "eval_tokens": 340},
    finetune={"seq_len": 16, "batch_size": 8, "lr": 1e-3, "evals": 3, "eval_tokens": 340, "monitor": False},
    max_steps=24,
    min_steps=24,
    score_tokens=1_020,
    score_batch=16,
    betas=[0.0, 1.0, 2.0],
    bootstrap=50,
)


# ---- models ------------------------------------------------------------------------------------
# the held-out windows the 2x2 is scored on: evenly spread over the split (see spread_windows)
heldout_windows = spread_windows


# ---- statistics --------------------------------------------------------------------------------
def gap_fraction(small_ft: float, large_ft: float, eft: float, start: float | None = None) -> float | None:
    """(L[start] - L[eft]) / (L[small-ft] - L[large-ft]), ``start`` defaulting to small-ft: the part of the gap
    that going from ``start`` to ``eft`` closes; None when large-ft is not better."""
    gap = small_ft - large_ft
    if not gap > 0:
        return None
    return ((small_ft if start is None else start) - eft) / gap


def bootstrap_fraction(per_window: dict[str, np.ndarray], eft: str, n_boot: int, seed: int,
                       start: str = "small-ft") -> list[float] | None:
    """95% percentile interval of :func:`gap_fraction` over resampled held-out windows: the part of the
    small-ft -> large-ft gap that going from ``start`` to ``eft`` closes (``start="large"``: what the
    fine-tuned delta adds beyond the large base alone)."""
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    n = len(per_window["small-ft"])
    idx = rng.integers(0, n, size=(n_boot, n))
    s, lg, e, a = (per_window[k][idx].mean(1) for k in ("small-ft", "large-ft", eft, start))
    gap = s - lg
    ok = gap > 0
    if ok.mean() < 0.95:  # the gap itself is not clearly positive: no interval for a ratio of it
        return None
    frac = (a[ok] - e[ok]) / gap[ok]
    return [float(np.percentile(frac, 2.5)), float(np.percentile(frac, 97.5))]


def scale_effects(L: dict[str, float]) -> dict[str, float]:
    """Main effects in the 2x2 (nats; negative = the larger scale lowers the loss).

    ``knowledge_scale``: large minus small pretrained model, averaged over both fine-tuning scales;
    ``finetune_scale``: large minus small fine-tuning delta, averaged over both pretrained models.
    The paper's reading: knowledge follows the pretraining scale, behaviour the fine-tuning scale.
    """
    return {
        "knowledge_scale": ((L["eft-up"] + L["large-ft"]) - (L["small-ft"] + L["eft-down"])) / 2,
        "finetune_scale": ((L["eft-down"] + L["large-ft"]) - (L["small-ft"] + L["eft-up"])) / 2,
    }


# ---- the demo ----------------------------------------------------------------------------------
def run_zoo_demo(
    cfg: EFTDemoConfig, store: Store, zoo_root: str | Path | None = None, *, report: bool = True
) -> dict[str, Any]:
    """Build (or reuse) the four trained models, score the 2x2 on held-out windows, write the report.

    Returns the JSON summary (also the run's ``summary.json``). Every training run is a store run
    keyed by its config, so a second call reuses all of them.
    """
    from transferlab.eft.api import EFT
    from transferlab.studies.eft.heldout import heldout_loss, window_logprobs
    from transferlab.zoo.build import build_zoo, check_corpora
    from transferlab.zoo.store import Zoo
    from transferlab.zoo.train import finetune

    t0 = time.perf_counter()
    from transferlab.studies.eft.study import EFTDemoStudy  # it imports this module

    # both corpora are checked before the demo's run folder opens and the zoo trains on the source
    check_corpora(cfg.zoo_config(), Zoo(zoo_root if zoo_root is not None else store.root / "zoo"),
                  (cfg.target_corpus,))
    demo = store.open_run(EFTDemoStudy.name, cfg)
    done = demo.summary() if demo.status == "done" else None
    if done is not None and (not report or (done.get("report") and Path(done["report"]).is_file())):
        return {**done, "reused": True}
    zb = build_zoo(cfg.zoo_config(), store, zoo_root, report=False)
    demo.start()
    tok = zb.tokenizer
    source = zb.data
    target = zb.zoo.ensure_tokens(cfg.target_corpus, zb.tokenizer_dir, cfg.val_percent, cfg.max_files)
    pre = {role: zb.entries[i] for i, role in enumerate(("small", "large"))}
    models: dict[str, Any] = {role: zb.zoo.load(e["name"]).eval() for role, e in pre.items()}
    ft_rows: dict[str, dict[str, Any]] = {}
    steps = cfg.finetune_steps()
    for role in ("small", "large"):
        e = pre[role]
        say(f"eft demo: fine-tune {role} ({e['size']}) on {cfg.target_corpus}, {steps} steps")
        tokens = steps * cfg.finetune.batch_size * cfg.finetune.seq_len
        row = finetune(zb.zoo, store, e["name"], target, tok, cfg.finetune, tokens, tag="ft",
                       train_tokens=cfg.finetune_tokens, patience=cfg.patience, steps=steps)
        w = cfg.seq_len + 1
        ft_rows[role] = {**row, "D": (cfg.finetune_tokens // w) * w, "loss": row.get("best_val_loss"),
                         "final_loss": row.get("val_loss"), "lr": cfg.finetune.lr, "steps_planned": steps,
                         "path": str(zb.zoo.root / row["path"])}
        models[f"{role}-ft"] = zb.zoo.load(row["name"]).eval()

    mixes: dict[str, Any] = {k: models[k] for k in ("small", "large", "small-ft", "large-ft")}
    mixes["eft-up"] = EFT(models["large"], ft=models["small-ft"], ref=models["small"], tokenizer=tok, beta=cfg.beta)
    mixes["eft-down"] = EFT(models["small"], ft=models["large-ft"], ref=models["large"], tokenizer=tok, beta=cfg.beta)
    betas = {"eft-up": cfg.betas, "eft-down": cfg.betas}
    scored: dict[str, dict[str, torch.Tensor]] = {}
    n_windows: dict[str, int] = {}
    t_score = time.perf_counter()
    with torch_threads(cfg.pretrain.num_threads):
        for split, data in (("target", target), ("source", source)):
            w = heldout_windows(data.val, cfg.seq_len, cfg.score_tokens)
            n_windows[split] = len(w)
            say(f"eft demo: scoring {len(w)} held-out {data.corpus} windows x {cfg.seq_len} tokens")
            scored[split] = window_logprobs(mixes, w, batch_size=cfg.score_batch, betas=betas)
    score_seconds = time.perf_counter() - t_score

    loss = {split: {k: heldout_loss(v) for k, v in tab.items()} for split, tab in scored.items()}
    per_window = {split: {k: (-tab[k].double().mean(1)).numpy() for k in MODEL_KEYS} for split, tab in scored.items()}
    rows = _table(cfg, loss, pre)
    grid = {
        f"{split}_loss": {
            "ft_small": {"pretrain_small": loss[split]["small-ft"], "pretrain_large": loss[split]["eft-up"]},
            "ft_large": {"pretrain_small": loss[split]["eft-down"], "pretrain_large": loss[split]["large-ft"]},
        }
        for split in ("target", "source")
    }
    gaps = {}
    for split in ("target", "source"):
        L = loss[split]
        gaps[split] = {
            "small_ft": L["small-ft"],
            "large_ft": L["large-ft"],
            "gap": L["small-ft"] - L["large-ft"],
            "eft_up": L["eft-up"],
            "eft_down": L["eft-down"],
            "up_fraction_closed": gap_fraction(L["small-ft"], L["large-ft"], L["eft-up"]),
            "up_fraction_ci95": bootstrap_fraction(per_window[split], "eft-up", cfg.bootstrap, cfg.seed),
            # beta = 0: the large base alone, and what the small fine-tune's delta adds beyond it
            "base_fraction_closed": gap_fraction(L["small-ft"], L["large-ft"], L["large"]),
            "base_fraction_ci95": bootstrap_fraction(per_window[split], "large", cfg.bootstrap, cfg.seed + 2),
            "delta_fraction_added": gap_fraction(L["small-ft"], L["large-ft"], L["eft-up"], start=L["large"]),
            "delta_fraction_ci95": bootstrap_fraction(per_window[split], "eft-up", cfg.bootstrap, cfg.seed + 3,
                                                      start="large"),
            "down_fraction_closed": gap_fraction(L["small-ft"], L["large-ft"], L["eft-down"]),
            "down_fraction_ci95": bootstrap_fraction(per_window[split], "eft-down", cfg.bootstrap, cfg.seed + 1),
        }
    effects = {split: scale_effects(loss[split]) for split in ("target", "source")}
    frac = gaps["target"]["up_fraction_closed"]
    sweep = {
        k: [
            {"beta": b, "target_loss": loss["target"][f"{k}@{b:g}"], "source_loss": loss["source"][f"{k}@{b:g}"]}
            for b in cfg.betas
        ]
        for k in ("eft-up", "eft-down")
    }
    checks = _checks(loss, cfg)
    summary: dict[str, Any] = {
        "preset": cfg.preset,
        "beta": cfg.beta,
        "source_corpus": cfg.source_corpus,
        "target_corpus": cfg.target_corpus,
        "table": rows,
        "grid": grid,
        "gap": gaps,
        "scale_effects": effects,
        "up_fraction_closed": frac,
        "target_fraction": TARGET_FRACTION,
        "target_met": bool(frac is not None and frac >= TARGET_FRACTION),
        "delta_fraction_added": gaps["target"]["delta_fraction_added"],
        "target_delta": TARGET_DELTA,
        "delta_target_met": bool(gaps["target"]["delta_fraction_added"] is not None
                                 and gaps["target"]["delta_fraction_added"] >= TARGET_DELTA),
        "beta_sweep": sweep,
        "checks": checks,
        "scored": {
            "windows": n_windows,
            "tokens_per_window": cfg.seq_len,
            "target_tokens": n_windows["target"] * cfg.seq_len,
            "source_tokens": n_windows["source"] * cfg.seq_len,
            "seconds": score_seconds,
        },
        "models": _models_info(cfg, pre, ft_rows, zb),
        "zoo": str(zb.zoo.root),
        "run_id": demo.id,
        "try": _commands(zb, pre, ft_rows),
    }
    summary["wall_seconds"] = time.perf_counter() - t0
    if report:
        from transferlab.studies.eft.demo_report import write_demo_report

        summary["report"] = str(write_demo_report(cfg, summary, demo.report_path))
    else:
        summary["report"] = None
    demo.finish(summary)
    return {**summary, "reused": False}


def _table(cfg: EFTDemoConfig, loss: dict[str, dict[str, float]], pre: dict[str, Any]) -> list[dict[str, Any]]:
    spec = {
        "small": ("small", "none", "", "", ""),
        "large": ("large", "none", "", "", ""),
        "small-ft": ("small", "small", "", "", ""),
        "large-ft": ("large", "large", "", "", ""),
        "eft-up": ("large", "small", "large", "small-ft", "small"),
        "eft-down": ("small", "large", "small", "large-ft", "large"),
    }
    rows = []
    for k in MODEL_KEYS:
        pretrain, finetune, base, ft, ref = spec[k]
        rows.append(
            {
                "model": k,
                "label": LABELS[k],
                "knowledge_scale": pretrain,
                "finetune_scale": finetune,
                "base": base,
                "ft": ft,
                "ref": ref,
                "beta": cfg.beta if base else None,
                "target_loss": loss["target"][k],
                "source_loss": loss["source"][k],
            }
        )
    return rows


def _checks(loss: dict[str, dict[str, float]], cfg: EFTDemoConfig) -> dict[str, Any]:
    """Sanity facts of the table: EFT at beta 0 is its base; every loss is finite; fine-tuning helps."""
    out: dict[str, Any] = {}
    if 0.0 in cfg.betas:
        out["beta0_up_minus_large"] = max(abs(loss[s]["eft-up@0"] - loss[s]["large"]) for s in ("target", "source"))
        out["beta0_down_minus_small"] = max(abs(loss[s]["eft-down@0"] - loss[s]["small"]) for s in ("target", "source"))
    out["all_finite"] = all(math.isfinite(v) for tab in loss.values() for v in tab.values())
    out["small_ft_beats_small_on_target"] = loss["target"]["small-ft"] < loss["target"]["small"]
    out["large_ft_beats_large_on_target"] = loss["target"]["large-ft"] < loss["target"]["large"]
    out["large_beats_small_on_source"] = loss["source"]["large"] < loss["source"]["small"]
    out["large_ft_beats_small_ft_on_target"] = loss["target"]["large-ft"] < loss["target"]["small-ft"]
    return out


def _models_info(cfg: EFTDemoConfig, pre: dict[str, Any], ft_rows: dict[str, Any], zb: Any) -> dict[str, Any]:
    out = {}
    for role in ("small", "large"):
        e, r = pre[role], ft_rows[role]
        out[role] = {
            "name": e["name"],
            "size": e["size"],
            "non_embedding_params": e["non_embedding_params"],
            "params": e.get("params"),
            "path": str(zb.zoo.root / e["path"]),
            "pretrain_tokens": e.get("tokens_seen"),
            "pretrain_val_loss": e.get("val_loss"),
            "run_id": e["run_id"],
            "reused": bool(e.get("reused")),
        }
        out[f"{role}-ft"] = {
            "size": e["size"],
            "path": r["path"],
            "run_id": r["run_id"],
            "finetune_tokens": r["D"],
            "steps": r["steps"],
            "lr": r["lr"],
            "tokens_seen": r["tokens_seen"],
            "final_val_loss": r["final_loss"],
            "best_val_loss": r["loss"],
            "wall_seconds": r["wall_seconds"],
        }
    return out


def _commands(zb: Any, pre: dict[str, Any], ft_rows: dict[str, Any]) -> dict[str, str]:
    small, large = (str(zb.zoo.root / pre[r]["path"]) for r in ("small", "large"))
    sft, lft = ft_rows["small"]["path"], ft_rows["large"]["path"]
    return {
        "up": f"transferlab eft generate --base {large} --ft {sft} --ref {small} --prompt 'def ' --greedy",
        "down": f"transferlab eft generate --base {small} --ft {lft} --ref {large} --prompt 'def ' --greedy",
    }
