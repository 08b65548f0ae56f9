"""The two computations of the tour that are not a study's preset.

- ``chinchilla``: Epoch's Chinchilla points (shipped in the package) through `transferlab fit chinchilla`'s own
  function, recorded as a run in the store like the command's, and reused when that run is done.
- ``monitors``: one zoo pretraining run (the zoo's own ``pretrain``, on the mini presets' small stdlib corpus)
  with the plasticity monitors measured as it trains (Fisher trace, dormant units, effective rank) beside the
  zoo's live power-law monitor of the training loss. It evaluates twice as often as the zoo's default, which also
  keys it apart from the identical-looking pretraining runs the transfer/EFT minis make (those log no
  plasticity monitors)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.train.engine import Callback, Evaluation

# Epoch's procedure (their notebook drops the five highest-loss points); bootstrap refits for the intervals
CHINCHILLA = {"mini": {"drop_highest_loss": 5, "bootstrap": 400, "sensitivity": 0},
              "micro": {"drop_highest_loss": 5, "bootstrap": 20, "sensitivity": 0, "max_iter": 200}}


def _chinchilla_config(scale: str) -> Any:
    from transferlab.data.reference import CHINCHILLA_CSV
    from transferlab.studies.transfer import ChinchillaFitConfig

    return ChinchillaFitConfig(file=str(CHINCHILLA_CSV), **CHINCHILLA.get(scale, CHINCHILLA["mini"]))


def chinchilla_config(scale: str) -> Any:
    """The fit's config at ``scale``, keyed by the file's content as `fit chinchilla` keys its run."""
    cfg = _chinchilla_config(scale)
    return cfg.model_copy(update={"file_sha256": hashlib.sha256(Path(cfg.file).read_bytes()).hexdigest()})


def chinchilla_command(scale: str) -> str:
    cfg = _chinchilla_config(scale)
    flags = f"--drop-highest-loss {cfg.drop_highest_loss} --bootstrap {cfg.bootstrap} --sensitivity {cfg.sensitivity}"
    if scale in CHINCHILLA and "max_iter" in CHINCHILLA[scale]:
        flags += f" --max-iter {cfg.max_iter}"
    return f"transferlab fit chinchilla {cfg.file} {flags}"


def chinchilla(ctx: Any) -> dict[str, Any]:
    """The fit's summary (E, A, B, alpha, beta with intervals, compute-optimal table, over-training plans)."""
    from transferlab.studies.transfer import fit_chinchilla_csv

    cfg = _chinchilla_config(ctx.scale)
    done = ctx.store.done("fit", chinchilla_config(ctx.scale))
    if done is not None and done.get("report") and Path(done["report"]).is_file():
        return {"fit": {**done, "reused": True}}
    return {"fit": {**fit_chinchilla_csv(cfg, store=ctx.store), "reused": False}}


# ---- monitors on a zoo pretraining run --------------------------------------------------------------
MONITOR_ZOO = {
    # the mini presets' small corpus: the standard library's prose (1,000 files), a 2,048-token BPE
    "mini": {"sizes": ["xs"], "tokens_per_param": 10.0, "vocab_size": 2048, "max_files": 1000,
             "train": {"evals": 40}},
    "micro": {"sizes": ["xxs"], "tokens_per_param": None, "tokens": 3_200, "vocab_size": 400, "max_files": 30,
              "train": {"seq_len": 16, "batch_size": 8, "min_steps": 4, "evals": 8, "eval_tokens": 340}},
}
PROBE = {"mini": 32, "micro": 8}  # windows in the Fisher probe


class WindowLoss(nn.Module):
    """Next-token loss of one model's logits [B, T, V] on windows [B, T+1] (the engine's loss, unstacked)."""

    def forward(self, logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        from transferlab.train.lm import LMCrossEntropy

        return LMCrossEntropy()(logits.unsqueeze(0), w)[0].mean()


class LMPlasticity(Callback):
    """At every evaluation: the Fisher trace on a probe of training windows, the dormant fraction of the SwiGLU
    hidden units (the inputs of every ``down_proj``) and the effective rank of the final norm's output, on
    held-out windows."""

    def __init__(self, factory: Any, probe: torch.Tensor, heldout: torch.Tensor):
        self.module = factory()
        self.module.eval()
        self.probe, self.heldout = probe, heldout
        self.loss = WindowLoss()

    def on_measure(self, evaluation: Evaluation) -> None:
        from transferlab.train import monitors
        from transferlab.train.plasticity import member_module

        for i, rec in enumerate(evaluation.records):
            m = member_module(self.module, evaluation.params, i)
            units = {n: mod for n, mod in m.named_modules() if n.endswith("mlp.down_proj")}
            with torch.enable_grad(), warnings.catch_warnings():
                # vmap has no batching rule for the CPU attention kernel: it loops per sample (correct, slower)
                warnings.filterwarnings("ignore", message="There is a performance drop")
                rec["fisher_trace"] = monitors.fisher_trace(m, self.loss, self.probe, self.probe, chunk_size=8)
            rec["dormant_fraction"] = monitors.dormant_units(m, self.heldout, modules=units,
                                                             inputs_of=True)["dormant_fraction"]
            norm = next(n for n, _ in m.named_modules() if n.endswith("model.norm"))
            rec["effective_rank"] = monitors.feature_effective_rank(m, self.heldout, norm)


def monitors(ctx: Any) -> dict[str, Any]:
    """Pretrain (or reuse) one zoo model with the plasticity monitors; its records and the power-law fit."""
    from transferlab.store.run import Run
    from transferlab.train.lm import CausalLMLogits, spread_windows, windows
    from transferlab.train.monitors import fit_power_law
    from transferlab.zoo.build import ZooConfig, prepare
    from transferlab.zoo.model import new_lm
    from transferlab.zoo.store import Zoo
    from transferlab.zoo.train import LM_STUDY, pretrain, shape_of

    spec = MONITOR_ZOO.get(ctx.scale, MONITOR_ZOO["mini"])
    cfg = ZooConfig(corpus="prose", heldout=["prose"], **spec)
    zoo = Zoo(ctx.zoo_root if ctx.zoo_root is not None else ctx.store.root / "zoo")
    _, tok, data, _ = prepare(cfg, zoo)
    size = cfg.sizes[0]
    seq = cfg.train.seq_len
    shape = shape_of(size, len(tok), seq)
    probe = windows(data.train, seq)[: PROBE.get(ctx.scale, 32)]
    heldout = spread_windows(data.val, seq, 64 * (seq + 1))
    cb = LMPlasticity(lambda: CausalLMLogits(new_lm(shape, cfg.train.seed)), probe, heldout)
    entry = pretrain(zoo, ctx.store, size, data, tok, cfg.train, cfg.tokens_for(size), tag="tour-monitors",
                     callbacks=[cb])
    recs = Run(ctx.store, LM_STUDY, entry["run_id"]).metrics()
    tps = entry.get("tokens_seen", 0) / max(1, entry.get("steps", 1))
    train = [(int(r["step"]) * tps, float(r["train_loss"])) for r in recs if r.get("train_loss") and r["step"] > 0]
    fit = None
    if len(train) >= 4:
        try:
            f = fit_power_law([t for t, _ in train], [v for _, v in train])
            fit = {"E": f.E, "A": f.A, "alpha": f.alpha, "sigma": f.sigma}
        except Exception as err:  # a curve the fit cannot take is said on the page, not a failed section
            fit = {"error": str(err)}
    return {"entry": {k: entry.get(k) for k in ("name", "size", "run_id", "non_embedding_params", "tokens_seen",
                                                "steps", "val_loss", "reused", "monitor_deviations")},
            "records": [{k: r.get(k) for k in ("step", "train_loss", "val_loss", "loss_pred", "loss_pred_lo",
                                               "loss_pred_hi", "loss_deviation", "fisher_trace",
                                               "dormant_fraction", "effective_rank")} for r in recs],
            "tokens_per_step": tps, "power_law": fit, "run_dir": str(ctx.store.run_dir(LM_STUDY, entry["run_id"]))}
