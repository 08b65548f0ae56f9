"""The ``finetune`` trainer: weak and strong Hugging Face models (full or LoRA), attention-mask pooled heads.

The same pipeline as the heads trainer (:mod:`~transferlab.studies.w2s.run`: four disjoint splits, floor and
ceiling cached, students selected on weak-labelled validation only), with whole models trained instead of heads
on cached features. The label methods (``knn-refine``, ``bootstrap``) need cached features and are only offered
by the heads trainer.
"""

from __future__ import annotations

from typing import Any

import torch

from transferlab.core.errors import ConfigError, DataError
from transferlab.data.classification import ClassificationData
from transferlab.models.hf_classifier import HFClassifier, ModelError, load_backbone
from transferlab.studies.w2s.config import W2SConfig
from transferlab.studies.w2s.losses import W2SLoss, make_loss
from transferlab.studies.w2s.protocol import (
    WEAK_SEED_OFFSET,
    Baseline,
    Splits,
    Trainer,
    onehot,
    select_rule,
    student_metrics,
)


def tokenize(path: str, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    _, tok = load_backbone(path)
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def _probs(
    model: HFClassifier, enc: dict[str, torch.Tensor], idx: torch.Tensor, bs: int = 64
) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    out = [
        torch.softmax(model(enc["input_ids"][idx[i : i + bs]].to(dev), enc["attention_mask"][idx[i : i + bs]].to(dev)),
                      -1).float().cpu()
        for i in range(0, len(idx), bs)
    ]
    model.train()
    return torch.cat(out)


def finetune_one(
    path: str,
    enc: dict[str, torch.Tensor],
    n_classes: int,
    train_idx: torch.Tensor,
    train_targets: torch.Tensor,
    val_idx: torch.Tensor,
    val_targets: torch.Tensor,
    loss: W2SLoss,
    seed: int,
    cfg: W2SConfig,
    monitor_idx: torch.Tensor,
    monitor_labels: torch.Tensor,
    select: str = "val",
    predict_idx: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fine-tune one model; returns its probabilities on every row, its gold monitor curve and best step.
    Selection reads ``val_targets`` only."""
    torch.manual_seed(seed)
    from transferlab.core.devices import resolve_device

    device = resolve_device(cfg.device, where="device")
    model, _ = HFClassifier.from_pretrained(path, n_classes, lora_r=cfg.finetune.lora_r if cfg.finetune.lora else 0,
                                            lora_targets=cfg.finetune.lora_target_modules)
    model.to(device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.finetune.lr)
    g = torch.Generator().manual_seed(seed)
    n = len(train_idx)
    bs = min(cfg.finetune.batch_size, n)
    perm, ptr = torch.randperm(n, generator=g), 0
    best, best_score, best_step, curve = None, -1.0, 0, []
    val_lab = val_targets.argmax(-1)
    for step in range(1, cfg.finetune.steps + 1):
        if ptr + bs > n:
            perm, ptr = torch.randperm(n, generator=g), 0
        b = perm[ptr : ptr + bs]
        ptr += bs
        rows = train_idx[b]
        logits = model(enc["input_ids"][rows].to(device), enc["attention_mask"][rows].to(device))
        value = loss(logits, train_targets[b].to(device), (step - 1) / max(1, cfg.finetune.steps - 1))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.finetune.steps:
            score = float((_probs(model, enc, val_idx).argmax(-1) == val_lab).float().mean())
            gold = float((_probs(model, enc, monitor_idx).argmax(-1) == monitor_labels).float().mean())
            curve.append((step, gold))
            if score > best_score or select == "last":
                best_score, best_step = score, step
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best is not None
    model.load_state_dict(best)
    n_rows = enc["input_ids"].shape[0]
    rows = torch.arange(n_rows) if predict_idx is None else predict_idx
    probs = torch.full((n_rows, n_classes), 1.0 / n_classes)  # rows outside every split are never read
    probs[rows] = _probs(model, enc, rows)
    return {"probs": probs, "curve": curve, "best_step": best_step}


class FinetuneTrainer(Trainer):
    def __init__(self, cfg: W2SConfig, data: ClassificationData):
        if data.texts is None:
            raise DataError("the finetune backend needs a text task", where=cfg.task.name,
                            fix="use a stdlib-* task or a text file")
        self.cfg, self.data = cfg, data
        self.y = torch.as_tensor(data.labels)
        self.enc_w: dict[str, torch.Tensor] = {}
        self.enc_s: dict[str, torch.Tensor] = {}

    def prepare(self) -> None:
        assert self.data.texts is not None and self.cfg.weak.model and self.cfg.strong.model
        self.enc_w = tokenize(self.cfg.weak.model, self.data.texts, self.cfg.strong.max_length)
        self.enc_s = tokenize(self.cfg.strong.model, self.data.texts, self.cfg.strong.max_length)

    def _used(self, splits: list[Splits]) -> torch.Tensor:
        return torch.cat([torch.cat([sp.transfer, sp.val, sp.test]) for sp in splits]).unique()

    def baseline(self, splits: list[Splits]) -> Baseline:
        cfg, y, k, used = self.cfg, self.y, self.data.n_classes, self._used(splits)
        assert cfg.weak.model and cfg.strong.model
        weak, ceil = [], []
        for s, sp in enumerate(splits):
            train, hold = sp.weak_holdout()
            weak.append(finetune_one(cfg.weak.model, self.enc_w, k, train, onehot(y[train], k), hold,
                                     onehot(y[hold], k), make_loss("xent"), cfg.seed + s + WEAK_SEED_OFFSET,
                                     cfg.for_weak(), sp.test, y[sp.test], predict_idx=used))
            ceil.append(finetune_one(cfg.strong.model, self.enc_s, k, sp.transfer, onehot(y[sp.transfer], k),
                                     sp.val, onehot(y[sp.val], k), make_loss("xent"), cfg.seed + s, cfg, sp.test,
                                     y[sp.test], predict_idx=used))
        return Baseline(weak_probs={"weak": torch.stack([w["probs"] for w in weak])},
                        ceiling_probs=torch.stack([c["probs"] for c in ceil]),
                        ceiling_curves=[c["curve"] for c in ceil], ceiling_best_step=[c["best_step"] for c in ceil])

    def students(self, splits: list[Splits], base: Baseline, methods: list[str]) -> dict[str, list[dict[str, Any]]]:
        cfg, y, k, used = self.cfg, self.y, self.data.n_classes, self._used(splits)
        assert cfg.strong.model
        out: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for m in methods:
            for s, sp in enumerate(splits):
                weak = base.weak[s]
                res = finetune_one(cfg.strong.model, self.enc_s, k, sp.transfer, weak[sp.transfer], sp.val,
                                   weak[sp.val], make_loss(m, **cfg.students.loss_params.get(m, {})), cfg.seed + s, cfg,
                                   sp.test, y[sp.test], select=select_rule(cfg), predict_idx=used)
                out[m].append(student_metrics(cfg.seed + s, res["probs"][sp.test].numpy(),
                                              weak[sp.test].numpy(), y[sp.test].numpy(), res["best_step"],
                                              res["curve"]))
        return out


def check_finetune(cfg: W2SConfig) -> None:
    """What the finetune trainer refuses from its config alone, before any data is read or model trained."""
    if not cfg.strong.model or not cfg.weak.model:
        raise ConfigError("the finetune backend needs a weak and a strong model", where="backend=finetune",
                          fix="--set weak_model=<local HF folder> --set strong_model=<local HF folder>")
    if cfg.students.label_methods:
        raise ConfigError(f"{', '.join(cfg.students.label_methods)} need cached features", where="backend=finetune",
                          fix="use backend=heads for knn-refine, bootstrap and icl-refine")
    weak_lora = cfg.for_weak().finetune.lora
    if cfg.finetune.lora or weak_lora:  # a model LoRA cannot adapt is refused before any model trains
        from transferlab.models.hf_classifier import check_lora

        roles = ([("strong_model", cfg.strong.model)] if cfg.finetune.lora else []) + (
            [("weak_model", cfg.weak.model)] if weak_lora else [])
        for role, path in roles:
            try:
                check_lora(path, cfg.finetune.lora_target_modules)
            except ModelError as err:
                raise ModelError(f"{role} {path}: {err.what}", where=err.where, fix=err.fix) from None
