"""The weak-to-strong protocol on the frozen-feature backend: targets, leakage, caching, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferlab.core.errors import ConfigError, DataError, TransferlabError
from transferlab.metrics import MetricError
from transferlab.studies.w2s.heads import HeadJob, train_heads
from transferlab.studies.w2s.heads_trainer import compute_baseline, train_students
from transferlab.studies.w2s.losses import make_loss
from transferlab.studies.w2s.protocol import make_splits, split_sizes
from transferlab.studies.w2s.run import make_config, run
from transferlab.studies.w2s.tasks import build_views

FAST = {"n_examples": 2000, "steps": 200}


def test_synthetic_noisy_recovers_at_least_half_the_gap_for_xent(store):
    s = run(make_config(task="synthetic-noisy", losses=["xent"], seeds=4, **FAST), store, write_report=False)
    p = s["losses"]["xent"]["pgr"]
    assert p["value"] >= 0.5, p
    assert p["lo"] > 0.3, p
    assert all(v > 0.3 for v in s["losses"]["xent"]["pgr_per_seed"])
    w, c = s["losses"]["xent"]["weak_acc"]["value"], s["losses"]["xent"]["ceiling_acc"]["value"]
    assert c - w > 0.1  # a real gap to recover


def test_synthetic_subset_student_imitates_its_supervisor(store):
    s = run(make_config(task="synthetic-subset", losses=["xent"], seeds=4, **FAST), store, write_report=False)
    d = s["losses"]["xent"]
    assert abs(d["pgr"]["value"]) <= 0.15, d["pgr"]
    assert -0.15 <= d["pgr"]["lo"] and d["pgr"]["hi"] <= 0.15
    assert d["agreement"]["value"] > 0.95  # it fits the weak model's errors, not the truth
    assert d["ceiling_acc"]["value"] - d["weak_acc"]["value"] > 0.1


def test_splits_are_disjoint_and_sized():
    cfg = make_config(
        task="synthetic-noisy", n_examples=500, n_weak_train=50, n_transfer=200, n_val=40, n_test=100
    )
    sizes = split_sizes(cfg, 500, 2)
    sp = make_splits(500, sizes, seed=3)
    parts = [
        set(sp.weak_train.tolist()),
        set(sp.transfer.tolist()),
        set(sp.val.tolist()),
        set(sp.test.tolist()),
    ]
    assert [len(p) for p in parts] == [50, 200, 40, 100]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not parts[i] & parts[j]
    assert make_splits(500, sizes, seed=3).transfer.tolist() == sp.transfer.tolist()
    assert make_splits(500, sizes, seed=4).transfer.tolist() != sp.transfer.tolist()


def test_no_gold_label_reaches_the_student():
    """Scrambling the gold labels of the student's splits (transfer and val) after the weak labels are made
    must not change the student at all; it does change the ceiling, which is trained on them."""
    cfg = make_config(
        task="synthetic-noisy", losses=["xent", "logconf"], label_methods=["knn-refine"], seeds=2, n_examples=1200,
        steps=120
    )
    views = build_views(cfg, None)
    sizes = split_sizes(cfg, views.data.n, 2)
    splits = [make_splits(views.data.n, sizes, cfg.seed + s) for s in range(cfg.seeds)]
    base = compute_baseline(views, splits, cfg)
    a = train_students(views, splits, base, cfg, cfg.methods)

    labels = views.data.labels.copy()
    rng = np.random.default_rng(0)
    for sp in splits:
        for part in (sp.transfer, sp.val):
            idx = part.numpy()
            labels[idx] = rng.integers(0, 2, idx.size)
    views.data.labels = labels
    b = train_students(views, splits, base, cfg, cfg.methods)
    for m in cfg.methods:
        for ra, rb in zip(a[m], b[m]):
            assert ra["best_step"] == rb["best_step"]
            assert ra["agreement"] == rb["agreement"] and ra["misfit"] == pytest.approx(rb["misfit"], abs=0)
    base2 = compute_baseline(views, splits, cfg)
    assert not torch.allclose(base2.ceiling_probs, base.ceiling_probs)


def test_config_refuses_gold_labels_for_the_student():
    with pytest.raises(ConfigError, match="select the student with gold labels"):
        make_config(student_early_stop="gold_val")
    with pytest.raises(ConfigError, match="student always trains on weak labels"):
        make_config(student_labels="gold")
    with pytest.raises(ConfigError, match="unknown loss 'foo'"):
        make_config(losses="xent,foo")
    # a label method is not a loss: it is refused there, with where it goes
    with pytest.raises(ConfigError, match="give it as label_methods"):
        make_config(losses="xent,knn-refine")
    with pytest.raises(ConfigError, match="is a label method, not a loss"):
        make_loss("knn-refine")
    with pytest.raises(ConfigError, match="at least one loss or label method"):
        make_config(losses=[])
    assert make_config(losses=[], label_methods="knn-refine").methods == ["knn-refine"]
    with pytest.raises(ConfigError, match="loss_params"):
        make_config(loss_params={"logconf": {"nope": 1.0}})


def test_heads_trained_together_equal_heads_trained_alone():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    t = torch.softmax(torch.randn(300, 2, generator=g), -1)

    def job(name, seed):
        return HeadJob(
            torch.arange(0, 200), t[:200], torch.arange(200, 250), t[200:250], make_loss(name), seed
        )

    kw = {"steps": 40, "batch_size": 32, "lr": 0.05, "weight_decay": 0.0, "eval_every": 10}
    together = train_heads(x, [job("xent", 1), job("logconf", 2), job("window", 3)], **kw)
    alone = [train_heads(x, [job(n, s)], **kw)[0] for n, s in (("xent", 1), ("logconf", 2), ("window", 3))]
    for a, b in zip(together, alone):
        assert torch.allclose(a.weight, b.weight, atol=1e-5)
        assert a.best_step == b.best_step
    assert not torch.allclose(together[0].weight, together[1].weight)


def test_floor_and_ceiling_are_cached_and_reused_across_losses(store):
    cfg1 = make_config(task="synthetic-subset", losses=["xent"], seeds=2, n_examples=800, steps=60)
    s1 = run(cfg1, store, write_report=False)
    s2 = run(
        make_config(task="synthetic-subset", losses=["window", "product"], seeds=2, n_examples=800, steps=60),
        store,
        write_report=False,
    )
    assert s1["timing_s"]["baseline_reused"] is False
    assert s2["timing_s"]["baseline_reused"] is True
    assert s1["weak"]["acc_per_seed"] == s2["weak"]["acc_per_seed"]
    assert s1["ceiling"]["acc_per_seed"] == s2["ceiling"]["acc_per_seed"]
    baselines = [r for r in store.index.rows(study="w2s-baseline")]
    assert len(baselines) == 1 and baselines[0]["status"] == "done"
    # the same config again is the same run
    s3 = run(cfg1, store, write_report=False)
    assert s3["reused"] is True and s3["run_dir"] == s1["run_dir"]
    # gold accuracy over training is in metrics.jsonl: one line per (loss, seed, eval step)
    lines = [json.loads(x) for x in open(f"{s2['run_dir']}/metrics.jsonl")]
    evals = 60 // 15
    assert len(lines) == 2 * 2 * evals
    assert {ln["method"] for ln in lines} == {"window", "product"}
    assert all(0.0 <= ln["gold_acc"] <= 1.0 for ln in lines)


def baseline_reads(cfg, store=None) -> set[str]:
    """The W2SConfig fields the floor and ceiling are computed from: the data, the splits and both trainers'
    ``prepare`` + ``baseline``, run on a config that records every field read."""
    from transferlab.core.config import config_keys
    from transferlab.studies.w2s.config import W2SConfig
    from transferlab.studies.w2s.run import make_trainer
    from transferlab.studies.w2s.tasks import build_data

    seen: set[str] = set()
    keys = config_keys(W2SConfig)

    def recording(cls, part=None):  # records every field read, by its flat name
        class Recording(cls):
            def __getattribute__(self, name):
                if name in cls.model_fields and name not in keys.parts:
                    seen.add(keys.flat_name((part, name) if part else (name,)))
                return super().__getattribute__(name)
        return Recording

    cfg, trainer = make_trainer(cfg, store)  # its checks may read anything: not recorded
    rec = recording(W2SConfig)(**{k: recording(keys.parts[k], k)(**v) if k in keys.parts else v
                                   for k, v in cfg.model_dump().items()})
    trainer.cfg = rec
    seen.clear()
    data = build_data(rec)
    trainer.prepare()
    sizes = split_sizes(rec, data.n, data.n_classes)
    trainer.baseline([make_splits(data.n, sizes, rec.seed + s) for s in range(rec.seeds)])
    return seen


def student_fields() -> set[str]:
    """The flat names of the student parts' fields (losses, label_methods, student_early_stop, ...)."""
    from transferlab.core.config import config_keys
    from transferlab.studies.w2s.config import STUDENT_PARTS, W2SConfig

    found = {k for k, path in config_keys(W2SConfig).paths.items() if path[0] in STUDENT_PARTS}
    assert {"losses", "label_methods", "student_early_stop", "loss_params", "knn_k", "min_gap"} <= found
    return found


def test_the_heads_baseline_reads_no_student_field():

    cfg = make_config(task="synthetic-noisy", losses=["xent", "logconf"], label_methods=["knn-refine"], seeds=1,
                      n_examples=300, steps=20)
    reads = baseline_reads(cfg)
    assert {"task", "seed", "steps", "lr"} <= reads  # the recording sees what the baseline reads
    assert reads & student_fields() == set()


def test_a_new_heads_setting_trains_a_new_baseline(store):
    base = {"task": "synthetic-subset", "seeds": 1, "n_examples": 300, "steps": 30}
    s1 = run(make_config(**base), store, write_report=False)
    s2 = run(make_config(**base, losses=["logconf"], knn_k=3, min_gap=0.0), store, write_report=False)
    s3 = run(make_config(**base, weight_decay=1e-2), store, write_report=False)
    assert s1["timing_s"]["baseline_reused"] is False and s2["timing_s"]["baseline_reused"] is True
    assert s3["timing_s"]["baseline_reused"] is False
    assert len(store.index.rows(study="w2s-baseline")) == 2


def test_weak_model_as_good_as_the_ceiling_is_refused(store):
    with pytest.raises(MetricError, match="PGR .* is undefined"):
        # the weak model sees the clean features and has 35x the gold data of the ceiling: it is better
        run(
            make_config(
                task="synthetic-noisy",
                weak_noise=0.0,
                seeds=2,
                n_examples=1200,
                n_weak_train=700,
                n_transfer=20,
                n_val=80,
                n_test=300,
                steps=60,
            ),
            store,
        )
    assert not store.index.rows(study="w2s")  # no student run was written


def test_split_too_small_and_labels_outside_the_class_set(tmp_path, store):
    with pytest.raises(DataError, match="split too small"):
        run(make_config(task="sklearn-wine", n_transfer=1000), store)
    with pytest.raises(DataError, match="split too small: val"):
        run(make_config(task="sklearn-wine", n_val=2), store)
    csv = tmp_path / "d.csv"
    csv.write_text(
        "f0,f1,label\n"
        + "".join(f"{i % 7},{(i * 3) % 5},{'cat' if i % 2 else 'dog'}\n" for i in range(100))
        + "1,2,bird\n"
    )
    with pytest.raises(DataError, match="label 'bird' outside the class set"):
        run(make_config(task=str(csv), classes=["cat", "dog"]), store)
    assert not (store.root / "w2s").exists()


def test_user_jsonl_with_features_runs_end_to_end(tmp_path, store):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    f = tmp_path / "mine.jsonl"
    f.write_text(
        "".join(json.dumps({"features": r.tolist(), "label": int(lab)}) + "\n" for r, lab in zip(x, y))
    )
    s = run(
        make_config(task=str(f), losses=["xent"], seeds=2, weak_noise=1.5, steps=80),
        store,
        write_report=False,
    )
    d = s["losses"]["xent"]
    assert d["ceiling_acc"]["value"] > 0.9
    assert d["weak_acc"]["value"] < d["ceiling_acc"]["value"]
    assert s["task"] == "file-mine" and s["classes"] == ["0", "1"]


def test_errors_are_transferlab_errors():
    assert issubclass(MetricError, TransferlabError)


def test_a_task_file_keys_its_runs_by_content(tmp_path, store):
    """Other data saved at the same path is another run with its own floor and ceiling; the same bytes again
    (re-saved, so with a new mtime) are the first run."""

    def save(seed: int) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(600, 5))
        y = (x[:, 0] - x[:, 1] > 0).astype(int)
        f.write_text("".join(json.dumps({"features": r.tolist(), "label": int(lab)}) + "\n" for r, lab in zip(x, y)))

    f = tmp_path / "mine.jsonl"
    cfg = make_config(task=str(f), seeds=1, weak_noise=4.0, steps=80)
    save(0)
    first = run(cfg, store, write_report=False)
    save(1)
    other = run(cfg, store, write_report=False)
    save(0)
    again = run(cfg, store, write_report=False)
    assert other["reused"] is False and other["run_id"] != first["run_id"]
    assert other["timing_s"]["baseline_reused"] is False
    assert other["weak"]["acc_per_seed"] != first["weak"]["acc_per_seed"]
    assert again["reused"] is True and again["run_dir"] == first["run_dir"]
    assert len(store.index.rows(study="w2s-baseline")) == 2
