"""Bad input across every command: exit 2, exactly one stderr line naming the field, file or row, no
traceback, and no run folder left ``new`` or ``running``.

The cases are generated: every scalar field of every study config gets values it must refuse (NaN, inf,
a wrong type, a value outside its Literal), and the hand-written cases cover files (binary, latin-1,
duplicate keys, folders, malformed manifests and indexes), paths (a store under a file, reports into a
folder), sizes that cannot fit in memory, and the silent accepts of issue 13. All run in-process and
fail at validation, so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


# ---- the files the cases point at ------------------------------------------------------------------
def _chinchilla(path: Path) -> Path:
    N, D = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 3e9, 5), np.geomspace(3e8, 3e11, 5)))
    pd.DataFrame({"N": N, "D": D, "loss": 1.9 + 300 / N**0.33 + 900 / D**0.31}).to_csv(path, index=False)
    return path


def _transfer(path: Path) -> Path:
    rows = [{"kind": "scratch", "N": n, "D": d, "loss": 1.5 + 60 / n**0.32 + 300 / d**0.3}
            for n in (1e6, 3e6, 1e7) for d in np.geomspace(1e4, 1e9, 5)]
    rows += [{"kind": "finetune", "N": n, "D": d, "loss": 1.5 + 60 / n**0.32 + 300 / (3 * d) ** 0.3}
             for n in (1e6, 3e6, 1e7) for d in np.geomspace(1e4, 1e6, 3)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _tidy(path: Path, edit=None) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        for stage in ("pretrain", "sft"):
            for b in ("piqa", "arc"):
                rows.append({"model": f"m{i}", "stage": stage, "benchmark": b, "accuracy": rng.uniform(0.3, 0.8)})
    df = pd.DataFrame(rows)
    if edit is not None:
        edit(df)
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.studies.grokking.config import PRESETS as GROK_PRESETS
    from transferlab.studies.grokking.config import GrokConfig

    t = tmp_path_factory.mktemp("bad")
    f: dict[str, str] = {"t": str(t), "store": str(t / "runs")}

    def put(name: str, data: bytes | str) -> str:
        p = t / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name.replace(".", "_").replace("/", "_")] = str(p)
        return str(p)

    put("binary.yaml", bytes(range(256)))
    put("latin1.yaml", "lr: 0.01  # caf\xe9\n".encode("latin-1"))
    put("dup.yaml", "lr: 0.01\nsteps: 10\nlr: 0.02\n")
    put("list.yaml", "- lr\n- 0.01\n")
    put("broken.yaml", "lr: [0.01\n")
    put("unknown.yaml", "colour: red\n")
    put("nan.yaml", "lr: .nan\n")
    put("afile", "not a folder")
    (t / "adir.csv").mkdir()
    (t / "adir.yaml").mkdir()
    f["adir_csv"], f["adir_yaml"] = str(t / "adir.csv"), str(t / "adir.yaml")
    f["chin"] = str(_chinchilla(t / "chin.csv"))
    f["xfer"] = str(_transfer(t / "xfer.csv"))
    put("latin1.csv", "N,D,loss\n1e9,1e10,2.5\n# caf\xe9\n".encode("latin-1"))
    put("binary.csv", bytes(range(256)) * 4)
    f["tidy"] = str(_tidy(t / "tidy.csv"))
    def blank(col: str, row: int):
        return lambda d: d.__setitem__(col, d[col].where(d.index != row, ""))

    for name, edit in (("empty_model", blank("model", 3)), ("empty_bench", blank("benchmark", 5)),
                       ("percent", lambda d: d.__setitem__("accuracy", d["accuracy"] * 100)),
                       ("negative", lambda d: d.__setitem__("accuracy", d["accuracy"] - 2))):
        f[f"tidy_{name}"] = str(_tidy(t / f"tidy_{name}.csv", edit))
    # w2s user files
    put("w2s_latin1.csv", "text,label\ncaf\xe9,pos\nthe,neg\n".encode("latin-1"))
    put("w2s_binary.jsonl", bytes(range(256)))
    put("w2s_list.jsonl", '{"text": "a", "label": "pos"}\n[1, 2]\n')
    put("w2s_number.jsonl", "3\n")
    put("w2s_string.jsonl", '"hello"\n')
    put("w2s_badline.jsonl", '{"text": "a", "label": "pos"}\n{"text": \n')
    put("w2s_nolabel.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    put("w2s_empty.csv", "")
    put("w2s_type.txt", "x")
    # zoo manifests
    for name, text in (("notjson", "{nope"), ("list", '{"models": [1, 2]}'), ("nomodels", '{"x": 1}'),
                       ("entry", '{"models": {"a": {"name": "a"}}}'), ("latin1", b"\xe9\xe9")):
        put(f"zoo_{name}/manifest.json", text if isinstance(text, bytes) else text.encode())
        f[f"zoo_{name}"] = str(t / f"zoo_{name}")
    # stores with one damaged run each, and a store with a garbage index
    for kind in ("summary", "config", "summary_list"):
        st = Store(t / f"store_{kind}")
        # the config `grok --set p=23 --set width=8 --set steps=10` resolves to (on top of the default preset)
        cfg = resolve(GrokConfig, presets=GROK_PRESETS, preset="default", overrides=["p=23", "width=8", "steps=10"])
        run = st.open_run("grokking", cfg)
        run.finish({"final_val_acc": 1.0})
        if kind == "summary":
            run.summary_path.write_text('{"status": "done", "final')
        elif kind == "summary_list":
            run.summary_path.write_text("[1, 2]")
        else:
            (run.path / "config.yaml").write_bytes(b"p: [23\n\xff")
        f[f"store_{kind}"], f[f"run_{kind}"] = str(st.root), run.id
    put("store_garbage/index.sqlite", b"this is not a database" * 100)
    f["store_garbage"] = str(t / "store_garbage")
    return f


# ---- the cases --------------------------------------------------------------------------------------
TINY = ["--set", "p=23", "--set", "width=16", "--set", "steps=30", "--set", "eval_every=10"]

COMMANDS = {  # command -> (config class path, extra arguments it needs)
    "grok": ("transferlab.studies.grokking.config:GrokConfig", ["grok"]),
    "sweep": ("transferlab.studies.grokking.config:GrokConfig", ["sweep", "grok", "--grid", "lr=1e-3,3e-3"]),
    "w2s": ("transferlab.studies.w2s.config:W2SConfig", ["w2s"]),
    "fit-chinchilla": ("transferlab.studies.transfer.config:ChinchillaFitConfig", ["fit", "chinchilla", "{chin}"]),
    "fit-transfer": ("transferlab.studies.transfer.config:TransferFitConfig", ["fit", "transfer", "{xfer}"]),
    "correlate": ("transferlab.studies.correlate.config:CorrelateConfig", ["correlate", "{tidy}"]),
    "zoo-build": ("transferlab.zoo.build:ZooConfig", ["zoo", "build"]),
    "transfer": ("transferlab.studies.transfer.zoo_config:TransferRunConfig", ["transfer"]),
    "correlate-zoo": ("transferlab.studies.correlate.zoo_config:ZooPairsConfig", ["correlate-zoo"]),
    "eft-demo": ("transferlab.studies.eft.demo:EFTDemoConfig", ["eft", "demo"]),
}
SKIP_FIELDS = {"file", "path", "file_sha256", "device", "progress"}  # filled by the CLI, or free text


def _config_class(spec: str):
    import importlib

    mod, name = spec.split(":")
    return getattr(importlib.import_module(mod), name)


def _scalar_kind(annotation) -> str | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "literal"
    if annotation in (int, float, bool):
        return annotation.__name__
    if len(args) == 1 and typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return _scalar_kind(args[0])
    return None


def generated_cases() -> list[tuple[str, list[str], str]]:
    """For every scalar field of every command's config: values it must refuse."""
    cases = []
    for cmd, (spec, base) in COMMANDS.items():
        cls = _config_class(spec)
        for name, field in cls.model_fields.items():
            if name in SKIP_FIELDS:
                continue
            kind = _scalar_kind(field.annotation)
            bad = {"float": ["nan", "inf", "-inf", "abc"], "int": ["abc", "1.5", "nan"], "bool": ["maybe"],
                   "literal": ["no-such-choice"]}.get(kind or "", [])
            for value in bad:
                cases.append((f"{cmd}:{name}={value}", [*base, "--set", f"{name}={value}"], name))
        cases.append((f"{cmd}:unknown-key", [*base, "--set", "no_such_key=1"], "no_such_key"))
        cases.append((f"{cmd}:no-equals", [*base, "--set", "lr"], "'lr'"))
    return cases


HAND = [
    # config files
    ("config-binary", ["grok", "--config", "{binary_yaml}"], "binary.yaml"),
    ("config-latin1", ["grok", "--config", "{latin1_yaml}"], "latin1.yaml"),
    ("config-duplicate-key", ["grok", "--config", "{dup_yaml}"], "'lr' is given twice"),
    ("config-not-mapping", ["grok", "--config", "{list_yaml}"], "list.yaml"),
    ("config-broken", ["grok", "--config", "{broken_yaml}"], "broken.yaml"),
    ("config-unknown-key", ["grok", "--config", "{unknown_yaml}"], "colour"),
    ("config-nan", ["grok", "--config", "{nan_yaml}"], "'lr'"),
    ("config-folder", ["grok", "--config", "{adir_yaml}"], "adir.yaml"),
    ("config-missing", ["grok", "--config", "{t}/nope.yaml"], "nope.yaml"),
    ("w2s-config-latin1", ["w2s", "--config", "{latin1_yaml}"], "latin1.yaml"),
    ("w2s-config-dup", ["w2s", "--config", "{dup_yaml}"], "given twice"),
    ("correlate-config-binary", ["correlate", "{tidy}", "--config", "{binary_yaml}"], "binary.yaml"),
    ("correlate-categories-binary", ["correlate", "{tidy}", "--categories", "{binary_yaml}"], "binary.yaml"),
    ("correlate-categories-dup", ["correlate", "{tidy}", "--categories", "{dup_yaml}"], "given twice"),
    ("fit-config-latin1", ["fit", "chinchilla", "{chin}", "--config", "{latin1_yaml}"], "latin1.yaml"),
    ("sweep-config-dup", ["sweep", "grok", "--grid", "lr=1e-3", "--config", "{dup_yaml}"], "given twice"),
    ("transfer-config-binary", ["transfer", "--config", "{binary_yaml}"], "binary.yaml"),
    ("eft-config-dup", ["eft", "demo", "--config", "{dup_yaml}"], "given twice"),
    # stores
    ("store-under-file", ["grok", *TINY, "--store", "{afile}/sub"], "afile"),
    ("store-is-file", ["grok", *TINY, "--store", "{afile}"], "afile"),
    ("w2s-store-under-file", ["w2s", "--store", "{afile}/sub"], "afile"),
    ("fit-store-under-file", ["fit", "chinchilla", "{chin}", "--bootstrap", "0", "--store", "{afile}/x"], "afile"),
    ("runs-ls-store-under-file", ["runs", "ls", "--store", "{afile}/x"], "afile"),
    ("runs-ls-garbage-index", ["runs", "ls", "--store", "{store_garbage}"], "index.sqlite"),
    ("runs-show-garbage-index", ["runs", "show", "abc", "--store", "{store_garbage}"], "index.sqlite"),
    ("runs-show-damaged-summary", ["runs", "show", "{run_summary}", "--store", "{store_summary}"], "summary.json"),
    ("runs-show-summary-list", ["runs", "show", "{run_summary_list}", "--store", "{store_summary_list}"],
     "summary.json"),
    ("runs-report-damaged-summary", ["runs", "report", "{run_summary}", "--store", "{store_summary}"],
     "summary.json"),
    ("runs-show-damaged-config", ["runs", "show", "{run_config}", "--store", "{store_config}"], "config.yaml"),
    ("runs-report-damaged-config", ["runs", "report", "{run_config}", "--store", "{store_config}"], "config.yaml"),
    ("rerun-damaged-summary", ["grok", "--set", "p=23", "--set", "width=8", "--set", "steps=10",
                               "--store", "{store_summary}"], "summary.json"),
    ("runs-show-unknown", ["runs", "show", "nope", "--store", "{store}"], "nope"),
    ("runs-report-unknown", ["runs", "report", "nope", "--store", "{store}"], "nope"),
    ("runs-mirror-unknown", ["runs", "mirror", "nope", "--to", "tensorboard", "--store", "{store}"], "nope"),
    ("runs-mirror-bad-target", ["runs", "mirror", "--to", "wandb", "--store", "{store}"], "--to"),
    # reports and outputs
    ("fit-report-folder", ["fit", "chinchilla", "{chin}", "--report", "{t}"], "is a folder"),
    ("fit-report-under-file", ["fit", "chinchilla", "{chin}", "--report", "{afile}/r.html"], "afile"),
    ("fit-transfer-report-folder", ["fit", "transfer", "{xfer}", "--report", "{t}"], "is a folder"),
    ("correlate-out-folder", ["correlate", "{tidy}", "--out", "{t}"], "is a folder"),
    ("correlate-out-under-file", ["correlate", "{tidy}", "--out", "{afile}/r.html"], "afile"),
    # fit: numbers that cannot be right
    ("fit-budget-0", ["fit", "chinchilla", "{chin}", "--budget", "0"], "budgets"),
    ("fit-budget-negative", ["fit", "chinchilla", "{chin}", "--budget", "-1e20"], "budgets"),
    ("fit-budget-inf", ["fit", "chinchilla", "{chin}", "--budget", "inf"], "budgets"),
    ("fit-budget-nan", ["fit", "chinchilla", "{chin}", "--budget", "nan"], "budgets"),
    ("fit-seed-negative", ["fit", "chinchilla", "{chin}", "--seed", "-1"], "seed"),
    ("fit-transfer-seed-negative", ["fit", "transfer", "{xfer}", "--seed", "-1"], "seed"),
    ("fit-bootstrap-negative", ["fit", "chinchilla", "{chin}", "--bootstrap", "-1"], "bootstrap"),
    ("fit-max-iter-0", ["fit", "chinchilla", "{chin}", "--max-iter", "0"], "max_iter"),
    ("fit-target-loss-negative", ["fit", "chinchilla", "{chin}", "--target-loss", "-1"], "target_loss"),
    ("fit-target-loss-nan", ["fit", "chinchilla", "{chin}", "--target-loss", "nan"], "target_loss"),
    ("fit-inference-negative", ["fit", "chinchilla", "{chin}", "--inference-tokens", "-5"], "inference_tokens"),
    ("fit-drop-negative", ["fit", "chinchilla", "{chin}", "--drop-highest-loss", "-1"], "drop_highest_loss"),
    ("fit-fix-beta-nan", ["fit", "transfer", "{xfer}", "--fix-beta", "nan"], "fix_beta"),
    ("fit-fix-beta-inf", ["fit", "transfer", "{xfer}", "--fix-beta", "inf"], "fix_beta"),
    ("fit-plan-negative-loss", ["fit", "transfer", "{xfer}", "--plan", "-1@1e7"], "plan"),
    ("fit-plan-nan-loss", ["fit", "transfer", "{xfer}", "--plan", "nan@1e7"], "plan"),
    ("fit-plan-negative-n", ["fit", "transfer", "{xfer}", "--plan", "2.5@-1e7"], "plan"),
    ("fit-plan-inf-n", ["fit", "transfer", "{xfer}", "--plan", "2.5@inf"], "plan"),
    ("fit-plan-no-at", ["fit", "transfer", "{xfer}", "--plan", "2.5"], "--plan"),
    ("fit-fix-alpha-negative", ["fit", "transfer", "{xfer}", "--fix", "alpha=-1"], "alpha"),
    ("fit-fix-alpha-nan", ["fit", "transfer", "{xfer}", "--fix", "alpha=nan"], "fix"),
    ("fit-fix-unknown", ["fit", "transfer", "{xfer}", "--fix", "zeta=1"], "zeta"),
    ("fit-fix-no-number", ["fit", "transfer", "{xfer}", "--fix", "alpha=big"], "--fix"),
    ("fit-missing-file", ["fit", "chinchilla", "{t}/nope.csv"], "nope.csv"),
    ("fit-file-is-folder", ["fit", "chinchilla", "{adir_csv}"], "adir.csv"),
    ("fit-binary-file", ["fit", "chinchilla", "{binary_csv}"], "binary.csv"),
    ("fit-latin1-file", ["fit", "chinchilla", "{latin1_csv}"], "latin1.csv"),
    ("fit-transfer-binary-file", ["fit", "transfer", "{binary_csv}"], "binary.csv"),
    # correlate
    ("correlate-empty-model", ["correlate", "{tidy_empty_model}"], "row 5"),
    ("correlate-empty-benchmark", ["correlate", "{tidy_empty_bench}"], "row 7"),
    ("correlate-percent", ["correlate", "{tidy_percent}"], "percent"),
    ("correlate-negative-accuracy", ["correlate", "{tidy_negative}"], "outside [0, 1]"),
    ("correlate-pre-equals-post", ["correlate", "{tidy}", "--pre", "sft", "--post", "sft"], "--pre"),
    ("correlate-missing", ["correlate", "{t}/nope.csv"], "nope.csv"),
    ("correlate-binary", ["correlate", "{binary_csv}"], "binary.csv"),
    ("correlate-unknown-stage", ["correlate", "{tidy}", "--pre", "base"], "base"),
    ("correlate-n-boot-small", ["correlate", "{tidy}", "--n-boot", "5"], "n_boot"),
    # w2s inputs
    ("w2s-task-latin1", ["w2s", "--task", "{w2s_latin1_csv}"], "w2s_latin1.csv"),
    ("w2s-task-binary-jsonl", ["w2s", "--task", "{w2s_binary_jsonl}"], "w2s_binary.jsonl"),
    ("w2s-task-list-jsonl", ["w2s", "--task", "{w2s_list_jsonl}"], "line 2"),
    ("w2s-task-number-jsonl", ["w2s", "--task", "{w2s_number_jsonl}"], "line 1"),
    ("w2s-task-string-jsonl", ["w2s", "--task", "{w2s_string_jsonl}"], "line 1"),
    ("w2s-task-bad-line", ["w2s", "--task", "{w2s_badline_jsonl}"], "line 2"),
    ("w2s-task-no-label", ["w2s", "--task", "{w2s_nolabel_jsonl}"], "label"),
    ("w2s-task-empty-csv", ["w2s", "--task", "{w2s_empty_csv}"], "w2s_empty.csv"),
    ("w2s-task-folder", ["w2s", "--task", "{adir_csv}"], "adir.csv"),
    ("w2s-task-missing", ["w2s", "--task", "{t}/nope.jsonl"], "nope.jsonl"),
    ("w2s-task-unknown", ["w2s", "--task", "no-such-task"], "no-such-task"),
    ("w2s-num-threads-negative", ["w2s", "--set", "num_threads=-1"], "num_threads"),
    ("w2s-num-threads-0", ["w2s", "--set", "num_threads=0"], "num_threads"),
    ("w2s-n-examples-huge", ["w2s", "--set", "n_examples=1e9"], "n_examples"),
    ("w2s-n-examples-tiny", ["w2s", "--set", "n_examples=5"], "n_examples"),
    ("w2s-seeds-0", ["w2s", "--seeds", "0"], "seeds"),
    ("w2s-seeds-huge", ["w2s", "--seeds", "100000"], "seeds"),
    ("w2s-losses-unknown", ["w2s", "--losses", "xent,nope"], "nope"),
    ("w2s-losses-twice", ["w2s", "--losses", "xent,xent"], "losses"),
    ("w2s-gold", ["w2s", "--set", "student_early_stop=gold_val"], "gold"),
    # grok: sizes, seeds, numbers
    ("grok-p-huge", ["grok", "--set", "p=1000003"], "GB"),
    ("grok-p-big", ["grok", "--set", "p=30011"], "GB"),
    ("grok-width-huge", ["grok", "--set", "width=1e9"], "GB"),
    ("grok-dmodel-huge", ["grok", "--set", "model=transformer", "--set", "d_model=1048576", "--set", "n_heads=1"],
     "GB"),
    ("grok-seeds-huge", ["grok", *TINY, "--seeds", "100000"], "TRANSFERLAB_MAX_RUNS"),
    ("grok-seeds-0", ["grok", *TINY, "--seeds", "0"], "--seeds"),
    ("grok-seeds-negative", ["grok", *TINY, "--seeds", "-2"], "--seeds"),
    ("grok-seeds-word", ["grok", "--seeds", "many"], "seeds"),
    ("grok-lr-inf", ["grok", *TINY, "--set", "lr=inf"], "'lr'"),
    ("grok-wd-inf", ["grok", *TINY, "--set", "weight_decay=inf"], "weight_decay"),
    ("grok-lr-negative", ["grok", *TINY, "--set", "lr=-1"], "'lr'"),
    ("grok-lr-zero", ["grok", *TINY, "--set", "lr=0"], "'lr'"),
    ("grok-p-not-prime", ["grok", "--set", "operation=x/y", "--set", "p=12"], "not prime"),
    ("grok-p-1", ["grok", "--set", "p=1"], "'p'"),
    ("grok-operation", ["grok", "--set", "operation=x**y"], "operation"),
    ("grok-train-fraction", ["grok", "--set", "train_fraction=1.5"], "train_fraction"),
    ("grok-heads", ["grok", "--set", "model=transformer", "--set", "d_model=30", "--set", "n_heads=4"], "n_heads"),
    ("grok-explode-negative", ["grok", "--set", "explode_factor=-1"], "explode_factor"),
    ("grok-preset", ["grok", "--preset", "nope"], "nope"),
    ("grok-flag", ["grok", "--no-such-flag"], "no-such-flag"),
    ("grok-memory-env", ["grok", *TINY], "TRANSFERLAB_MAX_MEMORY_GB"),  # the env is set bad in the test
    # sweeps
    ("sweep-seed-twice", ["sweep", "grok", "--grid", "seed=1,1", *TINY], "seed"),
    ("sweep-value-twice", ["sweep", "grok", "--grid", "lr=1e-3,0.001", *TINY], "twice"),
    ("sweep-key-twice", ["sweep", "grok", "--grid", "lr=1e-3", "--grid", "lr=3e-3", *TINY], "'lr'"),
    ("sweep-set-and-grid", ["sweep", "grok", "--grid", "width=8,16", *TINY], "width"),
    ("sweep-seed-and-seeds", ["sweep", "grok", "--grid", "seed=0,1", "--seeds", "2", *TINY], "--seeds"),
    ("sweep-seeds-0", ["sweep", "grok", "--grid", "lr=1e-3", "--seeds", "0", *TINY], "--seeds"),
    ("sweep-name-escapes", ["sweep", "grok", "--grid", "lr=1e-3", "--name", "../../x", *TINY], "--name"),
    ("sweep-name-slash", ["sweep", "grok", "--grid", "lr=1e-3", "--name", "a/b", *TINY], "--name"),
    ("sweep-name-empty", ["sweep", "grok", "--grid", "lr=1e-3", "--name", "", *TINY], "--name"),
    ("sweep-name-dotdot", ["sweep", "grok", "--grid", "lr=1e-3", "--name", "..", *TINY], "--name"),
    ("sweep-grid-no-equals", ["sweep", "grok", "--grid", "lr", *TINY], "--grid"),
    ("sweep-grid-no-values", ["sweep", "grok", "--grid", "lr=", *TINY], "--grid"),
    ("sweep-grid-unknown", ["sweep", "grok", "--grid", "colour=red,blue", *TINY], "colour"),
    ("sweep-grid-bad-value", ["sweep", "grok", "--grid", "lr=1e-3,-1", *TINY], "'lr'"),
    ("sweep-grid-inf", ["sweep", "grok", "--grid", "lr=1e-3,inf", *TINY], "'lr'"),
    ("sweep-grid-huge", ["sweep", "grok", "--grid", "p=23,1000003", "--set", "steps=30"], "GB"),
    ("sweep-too-many", ["sweep", "grok", "--grid", "lr=" + ",".join(f"{1e-4 * (i + 1):.4g}" for i in range(60)),
                        "--seeds", "20", *TINY], "TRANSFERLAB_MAX_RUNS"),
    ("sweep-backend", ["sweep", "grok", "--grid", "lr=1e-3", "--backend", "slurm", *TINY], "--backend"),
    ("sweep-ray-unreachable", ["sweep", "grok", "--grid", "lr=1e-3", *TINY, "--backend", "ray", "--address",
                               "127.0.0.1:1"], "127.0.0.1:1"),
    ("sweep-ray-bad-port", ["sweep", "grok", "--grid", "lr=1e-3", *TINY, "--backend", "ray", "--address",
                            "head:port"], "--address"),
    # zoo
    ("zoo-vocab-huge", ["zoo", "build", "--set", "vocab_size=1e9"], "vocab_size"),
    ("zoo-vocab-small", ["zoo", "build", "--set", "vocab_size=10"], "vocab_size"),
    ("zoo-sizes-unknown", ["zoo", "build", "--sizes", "xxxl"], "xxxl"),
    ("zoo-sizes-repeated", ["zoo", "build", "--sizes", "xs,xs"], "sizes"),
    ("zoo-tokens-0", ["zoo", "build", "--tokens", "0"], "tokens"),
    ("zoo-batch-huge", ["zoo", "build", "--set", "train.batch_size=100000000", "--tokens", "10000000000000"], "GB"),
    ("transfer-vocab-huge", ["transfer", "--set", "vocab_size=1e9"], "vocab_size"),
    ("zoo-ls-not-json", ["zoo", "ls", "--out", "{zoo_notjson}"], "manifest"),
    ("zoo-ls-list", ["zoo", "ls", "--out", "{zoo_list}"], "manifest"),
    ("zoo-ls-no-models", ["zoo", "ls", "--out", "{zoo_nomodels}"], "manifest"),
    ("zoo-ls-entry", ["zoo", "ls", "--out", "{zoo_entry}"], "entry 'a'"),
    ("zoo-ls-latin1", ["zoo", "ls", "--out", "{zoo_latin1}"], "manifest"),
]


def all_cases() -> list[tuple[str, list[str], str]]:
    return HAND + generated_cases()


def _unfinished_runs(root: Path) -> list[str]:
    from transferlab.store.run import Run, Store

    if not root.is_dir():
        return []
    st = Store(root)
    out = []
    for cfg in root.glob("*/*/config.yaml"):
        run = Run(st, cfg.parent.parent.name, cfg.parent.name)
        try:
            status = run.status
        except Exception:  # noqa: BLE001 - a damaged run made on purpose by the fixture
            continue
        if status in ("new", "running", "interrupted"):
            out.append(f"{run.id} {status}")
    return out


def test_there_are_at_least_200_cases_across_all_commands():
    cases = all_cases()
    assert len(cases) >= 200, len(cases)
    assert len({c[0] for c in cases}) == len(cases), "case ids are unique"
    commands = {c[1][0] for c in cases}
    assert {"grok", "sweep", "w2s", "fit", "correlate", "zoo", "transfer", "correlate-zoo", "eft", "runs"} <= commands


@pytest.mark.parametrize("case_id,args,needle", all_cases(), ids=[c[0] for c in all_cases()])
def test_bad_input_is_one_line_exit_2_and_leaves_no_unfinished_run(case_id, args, needle, env, cli, monkeypatch):
    if case_id == "grok-memory-env":
        monkeypatch.setenv("TRANSFERLAB_MAX_MEMORY_GB", "lots")
    argv = [a.format(**env) for a in args]
    if "--store" not in argv and argv[0] != "zoo" or argv[:2] == ["zoo", "build"]:
        argv += ["--store", env["store"]]
    code, out, err = cli(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error"), (argv, err)
    assert needle.format(**env) in lines[0], (needle, lines[0])
    for root in (env["store"], *(v for k, v in env.items() if k.startswith("store_"))):
        assert not _unfinished_runs(Path(root)), (argv, _unfinished_runs(Path(root)))


@pytest.mark.skipif(ROOT_USER, reason="root reads and writes everything: permissions cannot be tested as root")
def test_unreadable_inputs_and_unwritable_outputs(env, cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x.csv").write_text("text,label\na,pos\n")
    secret = tmp_path / "secret.yaml"
    secret.write_text("lr: 0.01\n")
    secret.chmod(0)
    locked.chmod(0)
    try:
        for argv, needle in (
            (["grok", "--config", str(secret)], "secret.yaml"),
            (["w2s", "--task", str(locked / "x.csv")], "x.csv"),
            (["grok", *TINY, "--store", str(locked / "runs")], "locked"),
            (["fit", "chinchilla", env["chin"], "--report", str(locked / "r.html")], "locked"),
        ):
            code, _, err = cli([*argv, "--store", env["store"]] if "--store" not in argv else argv)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, (argv, err)
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)


def test_a_bom_at_the_start_of_a_w2s_csv_is_not_part_of_the_label_column(tmp_path):
    """Excel writes a byte-order mark; the header must still read 'label', not '\\ufefflabel'."""
    from transferlab.data.classification import load_user_file

    rng = np.random.default_rng(0)
    rows = ["f0,f1,label"] + [f"{a:.3f},{b:.3f},{'pos' if a + b > 0 else 'neg'}"
                              for a, b in rng.normal(size=(60, 2))]
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    data = load_user_file(f)
    assert data.classes == ["neg", "pos"] and len(data.labels) == 60


def test_json_inputs_are_still_accepted_after_the_checks(env, cli):
    """The checks refuse bad values only: the good files of the cases above run (fit without bootstrap)."""
    code, out, err = cli(["fit", "chinchilla", env["chin"], "--bootstrap", "0", "--json", "--store", env["store"]])
    assert code == 0, err
    res = json.loads(out)
    assert abs(res["alpha"] - 0.33) < 0.05 and abs(res["E"] - 1.9) < 0.1
