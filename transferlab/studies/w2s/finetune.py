"""The fine-tuning backend: weak and strong Hugging Face models (full or LoRA), attention-mask pooled heads.

Same protocol as the heads backend (four disjoint splits, floor/ceiling cached, students selected
on weak-labelled validation only), with whole models trained instead of heads on cached features.
``knn-refine`` and ``bootstrap`` need cached features and are only offered by the heads backend.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from transferlab.core import progress
from transferlab.core.errors import ConfigError, DataError
from transferlab.metrics import accuracy, agreement, auroc, check_gap, ece, misfit
from transferlab.models.hf_classifier import HFClassifier, ModelError, load_backbone
from transferlab.store.run import Store
from transferlab.studies.w2s.config import W2SConfig
from transferlab.studies.w2s.losses import W2SLoss, XentLoss, make_loss
from transferlab.studies.w2s.tasks import Views, build_data


def _tokenize(path: str, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
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
    model, _ = HFClassifier.from_pretrained(path, n_classes, lora_r=cfg.lora_r if cfg.lora else 0,
                                            lora_targets=cfg.lora_target_modules)
    model.to(device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.ft_lr)
    g = torch.Generator().manual_seed(seed)
    n = len(train_idx)
    bs = min(cfg.ft_batch_size, n)
    perm, ptr = torch.randperm(n, generator=g), 0
    best, best_score, best_step, curve = None, -1.0, 0, []
    val_lab = val_targets.argmax(-1)
    for step in range(1, cfg.ft_steps + 1):
        if ptr + bs > n:
            perm, ptr = torch.randperm(n, generator=g), 0
        b = perm[ptr : ptr + bs]
        ptr += bs
        rows = train_idx[b]
        logits = model(enc["input_ids"][rows].to(device), enc["attention_mask"][rows].to(device))
        value = loss(logits, train_targets[b].to(device), (step - 1) / max(1, cfg.ft_steps - 1))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.ft_steps:
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


def _onehot(y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, k).float()


def run_finetune(cfg: W2SConfig, store: Store | None, *, write_report: bool = True) -> dict[str, Any]:
    from transferlab.studies.w2s import run as R

    if not cfg.strong_model or not cfg.weak_model:
        raise ConfigError(
            "the finetune backend needs a weak and a strong model",
            where="backend=finetune",
            fix="--set weak_model=<local HF folder> --set strong_model=<local HF folder>",
        )
    bad = [m for m in cfg.losses if m in ("knn-refine", "bootstrap")]
    if bad:
        raise ConfigError(
            f"{', '.join(bad)} need cached features",
            where="backend=finetune",
            fix="use backend=heads for knn-refine and bootstrap",
        )
    if cfg.lora or cfg.for_weak().lora:  # a model LoRA cannot adapt is refused before any model trains
        from transferlab.models.hf_classifier import check_lora

        roles = ([("strong_model", cfg.strong_model)] if cfg.lora else []) + (
            [("weak_model", cfg.weak_model)] if cfg.for_weak().lora else [])
        for role, path in roles:
            try:
                check_lora(path, cfg.lora_target_modules)
            except ModelError as err:
                raise ModelError(f"{role} {path}: {err.what}", where=err.where, fix=err.fix) from None
    t0 = time.perf_counter()
    data = build_data(cfg)
    if data.texts is None:
        raise DataError(
            "the finetune backend needs a text task", where=cfg.task, fix="use a stdlib-* task or a text file"
        )
    sizes = R.split_sizes(cfg, data.n, data.n_classes)
    if store is not None and R._is_done(store, cfg):
        existing = store.open_run(R.STUDY, cfg)
        return {**(existing.summary() or {}), "reused": True, "run_dir": str(existing.path)}
    enc_w = _tokenize(cfg.weak_model, data.texts, cfg.max_length)
    enc_s = _tokenize(cfg.strong_model, data.texts, cfg.max_length)
    views = Views(data, {}, [])
    y = torch.as_tensor(data.labels)
    k = data.n_classes
    splits = [R.make_splits(data.n, sizes, cfg.seed + s) for s in range(cfg.seeds)]
    used = torch.cat([torch.cat([sp.transfer, sp.val, sp.test]) for sp in splits]).unique()

    def compute(views_: Views, splits_: list, cfg_: W2SConfig) -> dict[str, Any]:
        weak, ceil = [], []
        for s, sp in enumerate(splits_):
            wt = sp.weak_train
            hold = max(2, len(wt) // 5)
            weak.append(
                finetune_one(
                    cfg_.weak_model,
                    enc_w,
                    k,
                    wt[hold:],
                    _onehot(y[wt[hold:]], k),
                    wt[:hold],
                    _onehot(y[wt[:hold]], k),
                    XentLoss(),
                    cfg_.seed + s + 10_000,
                    cfg_.for_weak(),
                    sp.test,
                    y[sp.test],
                    predict_idx=used,
                )
            )
            ceil.append(
                finetune_one(
                    cfg_.strong_model,
                    enc_s,
                    k,
                    sp.transfer,
                    _onehot(y[sp.transfer], k),
                    sp.val,
                    _onehot(y[sp.val], k),
                    XentLoss(),
                    cfg_.seed + s,
                    cfg_,
                    sp.test,
                    y[sp.test],
                    predict_idx=used,
                )
            )
        return {
            "weak_probs": {"weak": torch.stack([w["probs"] for w in weak])},
            "ceiling_probs": torch.stack([c["probs"] for c in ceil]),
            "ceiling_curves": [c["curve"] for c in ceil],
            "ceiling_best_step": [c["best_step"] for c in ceil],
        }

    with progress.progress_bar("w2s finetune floor+ceiling", total=None):
        base, reused = R.load_or_compute_baseline(views, splits, cfg, sizes, store, compute=compute)
    weak_all = base["weak_probs"]["weak"]
    weak_acc = [accuracy(y[sp.test].numpy(), weak_all[s][sp.test].numpy()) for s, sp in enumerate(splits)]
    ceil_acc = [
        accuracy(y[sp.test].numpy(), base["ceiling_probs"][s][sp.test].numpy()) for s, sp in enumerate(splits)
    ]
    check_gap(weak_acc, ceil_acc, cfg.min_gap, where=cfg.task)
    t_base = time.perf_counter()
    select = "val" if cfg.student_early_stop == "weak_val" else "last"
    students: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.losses}
    for m in cfg.losses:
        for s, sp in enumerate(splits):
            res = finetune_one(
                cfg.strong_model,
                enc_s,
                k,
                sp.transfer,
                weak_all[s][sp.transfer],
                sp.val,
                weak_all[s][sp.val],
                make_loss(m, **cfg.loss_params.get(m, {})),
                cfg.seed + s,
                cfg,
                sp.test,
                y[sp.test],
                select=select,
                predict_idx=used,
            )
            pt, wt_, yt = res["probs"][sp.test].numpy(), weak_all[s][sp.test].numpy(), y[sp.test].numpy()
            students[m].append(
                {
                    "seed": cfg.seed + s,
                    "student_acc": accuracy(yt, pt),
                    "agreement": agreement(pt, wt_),
                    "misfit": misfit(pt, wt_),
                    "ece": ece(yt, pt),
                    "auroc": auroc(yt, pt),
                    "best_step": res["best_step"],
                    "curve": res["curve"],
                }
            )
    summary = R.assemble(cfg, views, splits, base, weak_acc, ceil_acc, students)
    summary["sweep"] = []
    summary["timing_s"] = {
        "features": 0.0,
        "baseline": t_base - t0,
        "students": time.perf_counter() - t_base,
        "baseline_reused": reused,
    }
    summary["sizes"] = sizes
    return R.finish_run(cfg, store, summary, students, write_report)
