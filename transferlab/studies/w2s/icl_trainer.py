"""The ``icl-concepts`` trainer: Somerstep et al.'s setting in miniature (:mod:`.icl`) inside the one w2s
pipeline (splits, floor and ceiling cached, students, PGR).

- The in-context model is pretrained once on the concept prior and cached in the store under the hash of
  what makes it (:class:`ICLModelConfig`); a second run, or a run that changes only the students, reuses it.
- Floor: the biased weak labeller (a fixed set of inputs labelled wrong, drawn per seed). Ceiling: the
  in-context model fine-tuned on gold labels of the transfer split.
- Students: ``xent`` is naive fine-tuning on the weak labels; ``icl-refine`` fine-tunes on the labels refined
  with ``icl_k`` demonstrations. The refinement curve (``refinement`` in the summary) refines and trains a
  student at every k of ``icl_ks``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferlab.core.config import StudyConfig
from transferlab.data.classification import ClassificationData
from transferlab.store.run import Store
from transferlab.studies.w2s.analysis import refinement_summary, summarize_method
from transferlab.studies.w2s.config import ICL_MODEL_STUDY, ICL_TASK, W2SConfig
from transferlab.studies.w2s.icl import (
    ConceptSpec,
    bayes_label_probs,
    concept_table,
    finetune,
    misalignment,
    model_shape,
    pretrain,
    refine,
)
from transferlab.studies.w2s.icl_refine import pick_demos, sample_labels
from transferlab.studies.w2s.protocol import (
    WEAK_SEED_OFFSET,
    Baseline,
    Splits,
    Trainer,
    onehot,
    select_rule,
    student_metrics,
)
from transferlab.zoo.model import ZooLM, new_lm

PRETRAIN_PAIRS = 40  # (x, y) pairs per pretraining sequence: contexts of up to 39 demonstrations
PRETRAIN_BATCH = 64
PRETRAIN_LR = 3e-3
FT_BATCH = 64
DEFAULT_N = 2000
MODEL_FILE = "model.safetensors"
REFINE_SEED_OFFSET = 30_000


class ICLModelConfig(StudyConfig):
    """What makes the in-context model (its cache key in the store)."""

    bits: int
    noise: float
    d_model: int
    layers: int
    pairs: int
    steps: int
    batch: int
    lr: float
    seed: int


def model_config(cfg: W2SConfig) -> ICLModelConfig:
    ic = cfg.icl_concepts
    return ICLModelConfig(bits=ic.bits, noise=ic.noise, d_model=ic.d_model, layers=ic.layers, pairs=PRETRAIN_PAIRS,
                          steps=ic.pretrain_steps, batch=PRETRAIN_BATCH, lr=PRETRAIN_LR, seed=cfg.task.seed)


def spec_of(cfg: W2SConfig) -> ConceptSpec:
    return ConceptSpec(bits=cfg.icl_concepts.bits, noise=cfg.icl_concepts.noise)


def concept_data(cfg: W2SConfig) -> tuple[ClassificationData, torch.Tensor, int]:
    """(data, inputs, target concept): n inputs drawn uniformly, labelled by the target concept c* drawn from the
    prior (both by ``task_seed``)."""
    spec = spec_of(cfg)
    table = concept_table(spec.bits)
    gen = torch.Generator().manual_seed(cfg.task.seed)
    target = int(torch.randint(len(table), (1,), generator=gen))
    x = torch.randint(spec.n_inputs, (cfg.task.n_examples or DEFAULT_N,), generator=gen)
    y = table[target, x]
    desc = (f"Somerstep et al. in miniature: {spec.bits}-bit inputs labelled by a concept drawn from a prior over "
            f"{len(table)} sparse parities (degree 1-2, either polarity); weak labeller wrong on a fixed "
            f"{cfg.icl_concepts.weak_error:.0%} of inputs")
    return ClassificationData(name=ICL_TASK, classes=["0", "1"], labels=y.numpy(), description=desc), x, target


def load_or_pretrain(cfg: W2SConfig, store: Store | None) -> tuple[ZooLM, dict[str, Any]]:
    """The in-context model: from the store when this exact model was pretrained before, else pretrained now and
    stored (safetensors). Returns it with {'reused', 'seconds', 'loss_curve', 'run_dir'}."""
    key = model_config(cfg)
    spec = spec_of(cfg)
    shape = model_shape(spec, key.d_model, key.layers, key.pairs)
    run = store.open_run(ICL_MODEL_STUDY, key) if store is not None else None
    if run is not None:
        path = Path(run.path) / MODEL_FILE
        if run.status == "done" and path.is_file():
            model = new_lm(shape, key.seed)
            model.load_state_dict(load_file(str(path)))
            model.eval()
            summ = run.summary() or {}
            return model, {"reused": True, "seconds": summ.get("seconds"), "loss_curve": summ.get("loss_curve", []),
                           "run_dir": str(run.path)}
        run.start()
    t0 = time.perf_counter()
    model, curve = pretrain(spec, shape, steps=key.steps, batch=key.batch, lr=key.lr, seed=key.seed,
                            log_every=max(1, key.steps // 50))
    info = {"reused": False, "seconds": time.perf_counter() - t0, "loss_curve": curve,
            "run_dir": str(run.path) if run is not None else None}
    if run is not None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(run.path) / MODEL_FILE))
        run.finish({"seconds": info["seconds"], "loss_curve": curve,
                    "non_embedding_params": sum(p.numel() for n, p in model.named_parameters()
                                                if "embed" not in n)})
    return model, info


class ICLConceptTrainer(Trainer):
    def __init__(self, cfg: W2SConfig, store: Store | None):
        self.cfg, self.store = cfg, store
        self.spec = spec_of(cfg)
        self.data, self.x, self.target = concept_data(cfg)
        self.model: ZooLM | None = None
        self.model_info: dict[str, Any] = {}
        self.refinement: dict[str, Any] = {}

    def prepare(self) -> None:
        self.model, self.model_info = load_or_pretrain(self.cfg, self.store)

    def weak_labels(self, seed: int) -> torch.Tensor:
        """(n,) the biased labeller's labels: the target's, flipped on a fixed random set of inputs."""
        n_in = self.spec.n_inputs
        gen = torch.Generator().manual_seed(seed + WEAK_SEED_OFFSET)
        wrong = torch.zeros(n_in, dtype=torch.long)
        wrong[torch.randperm(n_in, generator=gen)[: max(1, round(self.cfg.icl_concepts.weak_error * n_in))]] = 1
        y = torch.as_tensor(self.data.labels)
        return (y + wrong[self.x]) % 2

    def _finetune(self, sp: Splits, train: torch.Tensor, val: torch.Tensor, seed: int, select: str
                  ) -> tuple[torch.Tensor, int]:
        """Fine-tune the in-context model on (transfer, val) label rows; (n, 2) probabilities on every example."""
        assert self.model is not None
        cfg = self.cfg
        p_inputs, best = finetune(self.model, self.spec, self.x, sp.transfer, train, sp.val, val,
                                  steps=cfg.icl_concepts.ft_steps, batch=FT_BATCH, lr=cfg.icl_concepts.ft_lr, seed=seed,
                                  eval_every=cfg.eval_every, select=select)
        return p_inputs[self.x], best

    def baseline(self, splits: list[Splits]) -> Baseline:
        y = torch.as_tensor(self.data.labels)
        weak, ceil, best = [], [], []
        for s, sp in enumerate(splits):
            weak.append(onehot(self.weak_labels(self.cfg.seed + s), 2))
            p, b = self._finetune(sp, onehot(y[sp.transfer], 2), onehot(y[sp.val], 2), self.cfg.seed + s, "val")
            ceil.append(p)
            best.append(b)
        return Baseline(weak_probs={"weak": torch.stack(weak)}, ceiling_probs=torch.stack(ceil),
                        ceiling_curves=[[] for _ in splits], ceiling_best_step=best)

    def students(self, splits: list[Splits], base: Baseline, methods: list[str]) -> dict[str, list[dict[str, Any]]]:
        assert self.model is not None
        cfg = self.cfg
        y = torch.as_tensor(self.data.labels)
        ks = sorted(set(cfg.students.icl_ks) | ({cfg.students.icl_k} if "icl-refine" in methods else set()))
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        by_k: dict[int, list[dict[str, Any]]] = {k: [] for k in ks}
        mis: dict[int, list[float]] = {k: [] for k in ks}
        student_mis: dict[int, list[float]] = {k: [] for k in ks}
        bayes: dict[int, list[float]] = {k: [] for k in ks}
        naive_mis, weak_mis, naive_rows = [], [], []
        table = concept_table(self.spec.bits)
        for s, sp in enumerate(splits):
            seed = cfg.seed + s
            w = base.weak[s]
            yt, wt = y[sp.test], w[sp.test]

            p, best = self._finetune(sp, w[sp.transfer], w[sp.val], seed, select_rule(cfg))
            naive = student_metrics(seed, p[sp.test].numpy(), wt.numpy(), yt.numpy(), best, [])
            naive_rows.append(naive)
            naive_mis.append(float(misalignment(p[sp.test], yt, cfg.icl_concepts.noise).mean()))
            weak_mis.append(float(misalignment(wt, yt, cfg.icl_concepts.noise).mean()))
            if "xent" in rows:
                rows["xent"].append(naive)
            hard = w.argmax(1)
            queries = torch.cat([sp.transfer, sp.val])
            n_tr = len(sp.transfer)
            for k in ks:
                gseed = seed + REFINE_SEED_OFFSET + 97 * k
                gen = torch.Generator().manual_seed(gseed)
                probs = refine(self.model, self.spec, self.x, hard, queries, sp.transfer, k, gen)
                mis[k].append(float(misalignment(probs[:n_tr], y[sp.transfer], cfg.icl_concepts.noise).mean()))
                # the Bayes predictor of the prior on the same demonstrations: what the model approximates
                demos = pick_demos(sp.transfer, sp.transfer, k, torch.Generator().manual_seed(gseed))
                p1 = bayes_label_probs(table, self.spec, self.x[demos], hard[demos], self.x[sp.transfer])
                bayes[k].append(float(misalignment(torch.stack([1 - p1, p1], 1), y[sp.transfer],
                                                   cfg.icl_concepts.noise).mean()))
                labels = sample_labels(probs, gen) if cfg.students.icl_read == "sample" else probs
                p, best = self._finetune(sp, labels[:n_tr], labels[n_tr:], seed, select_rule(cfg))
                row = student_metrics(seed, p[sp.test].numpy(), wt.numpy(), yt.numpy(), best, [])
                student_mis[k].append(float(misalignment(p[sp.test], yt, cfg.icl_concepts.noise).mean()))
                by_k[k].append(row)
                if k == cfg.students.icl_k and "icl-refine" in rows:
                    rows["icl-refine"].append(row)
        weak_acc, ceil_acc = base.accuracies(y, splits)
        summary = refinement_summary(ks, mis, naive_mis, weak_mis, student_mis, bayes)
        for r in summary["per_k"]:
            sm = summarize_method(weak_acc, ceil_acc, by_k[r["k"]], min_gap=cfg.analysis.min_gap)
            r["student_acc"], r["pgr"] = sm["student_acc"], sm["pgr"]
        summary["naive_pgr"] = summarize_method(weak_acc, ceil_acc, naive_rows, min_gap=cfg.analysis.min_gap)["pgr"]
        summary["read"] = cfg.students.icl_read
        self.refinement = summary
        return rows

    def summary_extra(self) -> dict[str, Any]:
        table = concept_table(self.spec.bits)
        return {"refinement": self.refinement,
                "icl_model": {**self.model_info, "bits": self.spec.bits, "concepts": len(table),
                              "target_concept": self.target, "noise": self.spec.noise,
                              "pretrain_steps": self.cfg.icl_concepts.pretrain_steps}}
