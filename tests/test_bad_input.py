"""Bad input across every command: exit 2, exactly one stderr line naming the field, file or row, no
traceback, and no run folder left ``new`` or ``running``.

The cases are generated: every scalar field of every study config gets values it must refuse (NaN, inf,
a wrong type, a value outside its Literal), and the hand-written cases cover files (binary, latin-1,
duplicate keys, folders, malformed manifests and indexes), paths (a store under a file, reports into a
folder), sizes that cannot fit in memory, and the silent accepts of issue 13. The surface cases (issue 23)
are generated from tables of bad values for the inputs added since: ``sweep --sample`` specs, ``--plan`` and
``--scheduler``, corpus parts (``code[...]``) wherever a corpus is named, ``hf:PATH`` tasks, lm-eval harness
folders, EFT prompt files, damaged zoo manifests and mirror folders; each also checks that the command
changed no file under the fixture's folder (no run folder, report, tokenizer or mirror half-written). All run
in-process and fail at validation, so the whole file takes seconds.
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
    _surface_inputs(t, f, put)
    return f


def _finished_store(root: Path) -> tuple[Path, str]:
    """A store with one finished grokking run (not trained: opened, logged once and finished)."""
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.studies.grokking.config import PRESETS as GROK_PRESETS
    from transferlab.studies.grokking.config import GrokConfig

    st = Store(root)
    cfg = resolve(GrokConfig, presets=GROK_PRESETS, preset="default", overrides=["p=23", "width=8", "steps=10"])
    run = st.open_run("grokking", cfg)
    run.log({"step": 0, "train_loss": 1.0})
    run.finish({"final_val_acc": 1.0})
    return st.root, run.id


def _harness(root: Path, n_models: int = 3) -> Path:
    """An lm-eval harness folder <root>/<stage>/<model>/ with results (piqa, arc) and piqa's samples."""
    rng = np.random.default_rng(0)
    for i in range(n_models):
        for stage in ("pretrain", "sft"):
            d = root / stage / f"m{i}"
            d.mkdir(parents=True)
            lines = []
            for doc in range(4):
                ll = rng.normal(-5, 1, size=2)
                lines.append(json.dumps({"doc_id": doc, "target": int(rng.integers(2)),
                                         "filtered_resps": [[str(v), "False"] for v in ll]}))
            (d / f"samples_piqa_{STAMP}.jsonl").write_text("\n".join(lines) + "\n")
            accs = {task: {"acc,none": float(rng.uniform(0.3, 0.8))} for task in ("piqa", "arc")}
            (d / f"results_{STAMP}.json").write_text(json.dumps({"results": accs}))
    return root


STAMP = "2024-05-01T10-00-00.000000"


def _surface_inputs(t: Path, f: dict[str, str], put) -> None:  # type: ignore[no-untyped-def]
    """The files behind the surface cases: saved HF datasets, harness folders, prompt files, tiny EFT models,
    damaged zoo manifests, stores whose mirrors cannot be written."""
    import shutil

    import datasets

    datasets.disable_progress_bars()
    texts = [f"text number {i}" for i in range(40)]
    two = [i % 2 for i in range(40)]

    def save(name: str, data: dict, splits: bool = False) -> None:
        path = t / "hf" / name
        if splits:
            datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in data.items()}).save_to_disk(path)
        else:
            datasets.Dataset.from_dict(data).save_to_disk(path)
        f[f"hf_{name}"] = str(path)

    save("ok", {"text": texts, "label": two})
    save("nocol", {"text": texts, "y": two})
    save("oneclass", {"text": texts, "label": [1] * 40})
    save("boolq_one", {"question": texts, "passage": texts, "answer": [True] * 40})
    save("emptysplit", {"train": {"text": texts, "label": two}, "test": {"text": [], "label": []}}, splits=True)
    save("empty", {"text": [], "label": []})
    save("splitcols", {"train": {"text": texts, "label": two}, "test": {"sentence": ["a"], "label": [0]}}, splits=True)
    save("arrow", {"text": texts, "label": two})
    for arrow in Path(f["hf_arrow"]).glob("*.arrow"):
        arrow.write_bytes(b"garbage" * 10)
    save("state", {"text": texts, "label": two})
    (Path(f["hf_state"]) / "state.json").write_bytes(bytes(range(256)))
    put("hf/notsaved/notes.txt", "a folder, but no saved dataset")
    (t / "hf" / "emptydir").mkdir()
    f["hf_notsaved"], f["hf_emptydir"] = str(t / "hf" / "notsaved"), str(t / "hf" / "emptydir")
    # lm-eval harness folders: a truncated results file, samples of a task no results file names, binary samples
    for name in ("trunc", "stray", "binsamples", "binresults"):
        f[f"harness_{name}"] = str(_harness(t / f"harness_{name}"))
    res = t / "harness_trunc" / "sft" / "m1" / f"results_{STAMP}.json"
    res.write_text(res.read_text()[:40])
    shutil.copy(t / "harness_stray" / "sft" / "m1" / f"samples_piqa_{STAMP}.jsonl",
                t / "harness_stray" / "sft" / "m1" / f"samples_hellaswag_{STAMP}.jsonl")
    (t / "harness_binsamples" / "pretrain" / "m2" / f"samples_piqa_{STAMP}.jsonl").write_bytes(bytes(range(256)))
    (t / "harness_binresults" / "pretrain" / "m0" / f"results_{STAMP}.json").write_bytes(bytes(range(256)))
    # EFT: tiny models and prompt files
    from tests.test_eft_tiny import build_trio

    trio = build_trio(t / "eft")
    f.update({k: str(v) for k, v in trio.items() if k != "root"})
    put("prompts/empty.txt", "")
    put("prompts/blank.txt", "\n   \n\t\n")
    put("prompts/binary.txt", bytes(range(256)))
    put("prompts/latin1.txt", "the caf\xe9\n".encode("latin-1"))
    put("prompts/huge.txt", "the cat " * (10 * 2**20 // 8) + "\n")  # one 10 MB line of known words
    (t / "prompts" / "adir").mkdir()
    f["prompts_adir"] = str(t / "prompts" / "adir")
    # zoo roots whose manifest zoo build cannot read
    for name, data in (("binary", bytes(range(256))), ("trunc", b'{"version": 2, "models": {"a": {"na')):
        put(f"zoo_{name}/manifest.json", data)
        f[f"zoo_{name}"] = str(t / f"zoo_{name}")
    (t / "zoo_dir" / "manifest.json").mkdir(parents=True)
    f["zoo_dir"] = str(t / "zoo_dir")
    # stores whose mirrors cannot be written: <store>/mirrors a file, mirrors/tensorboard a file, a junk mlflow.db
    for name in ("file", "tbfile", "db"):
        root, run_id = _finished_store(t / f"mstore_{name}")
        f[f"mstore_{name}"], f[f"mrun_{name}"] = str(root), run_id
    put("mstore_file/mirrors", "a file where the mirrors folder goes")
    put("mstore_tbfile/mirrors/tensorboard", "a file where the TensorBoard folder goes")
    put("mstore_db/mirrors/mlflow.db", b"this is not a database" * 100)


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
    """For every scalar field of every command's config (the fields of its parts included): values it must
    refuse."""
    from transferlab.core.config import config_keys

    cases = []
    for cmd, (spec, base) in COMMANDS.items():
        cls = _config_class(spec)
        for name, field in config_keys(cls).fields.items():  # every key by its flat name, a nested part's too
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


# ---- the surfaces added since the last audit (issue 23): generated from tables of bad values ----------
EFT_MODELS = ["--base", "{base}", "--ft", "{ft}", "--ref", "{ref}"]
CORPUS_COMMANDS = {  # where a corpus is named -> the arguments that name it (micro presets: 30 stdlib files)
    "zoo-build": ["zoo", "build", "--preset", "micro", "--corpus"],
    "zoo-corpus": ["zoo", "corpus", "--max-files", "30", "--store", "{store}"],
    "transfer-target": ["transfer", "--preset", "micro", "--set", "target_corpus="],
    "eft-demo-target": ["eft", "demo", "--preset", "micro", "--set", "target_corpus="],
}
BAD_PARTS = {  # corpus -> what the error line names
    "code[": "code[", "code[]": "code[]", "code[stdlib]]": "code[stdlib]]", "code[,]": "code[,]",
    "code[nosuch]": "nosuch", "prose+code[nosuch]": "nosuch", "code[^stdlib]": "leaves no document",
}
BAD_BOUNDS = {  # --sample LO:HI of uniform / loguniform / int that every kind refuses
    "reversed": "5:1", "equal": "1:1", "inf": "0:inf", "minus-inf": "-inf:1", "nan": "nan:1", "one-bound": "1",
    "three-bounds": "1:2:3", "words": "a:b", "overflow": "-1e308:1e308",
}


def surface_cases() -> list[tuple[str, list[str], str]]:
    """Bad values for each input added since the last audit; every one must fail before anything is written."""
    cases: list[tuple[str, list[str], str]] = []
    sweep = ["sweep", "grok", *TINY]
    # sweep --sample: each kind with each bad LO:HI, the kind-specific ones, unknown kinds, malformed items
    for kind, key in (("uniform", "lr"), ("loguniform", "lr"), ("int", "seed")):
        for name, bounds in BAD_BOUNDS.items():
            cases.append((f"sample-{kind}-{name}", [*sweep, "--sample", f"{key}={kind}:{bounds}"], "--sample"))
    for name, spec, needle in (
        ("loguniform-zero", "lr=loguniform:0:1", "LO > 0"), ("loguniform-negative", "lr=loguniform:-1:1", "LO > 0"),
        ("int-fraction", "seed=int:0.5:3", "whole-number"), ("int-huge", "seed=int:1:1e30", "whole-number"),
        ("choice-empty", "lr=choice:", "no choices"), ("choice-commas", "lr=choice:,,", "no choices"),
        ("unknown-kind", "lr=normal:0:1", "KIND"), ("kind-case", "lr=Uniform:0:1", "KIND"),
        ("no-kind", "lr=0.1", "KIND"), ("no-equals", "lr", "KIND"), ("unknown-key", "colour=uniform:0:1", "colour"),
        ("key-twice", "lr=uniform:0.1:0.2", "twice"), ("draws-bad-value", "lr=uniform:-2:-1", "'lr'"),
        ("choice-bad-value", "model=choice:mlp,nope", "model"),
    ):
        extra = ["--sample", "lr=uniform:0.3:0.4"] if name == "key-twice" else []
        cases.append((f"sample-{name}", [*sweep, "--sample", spec, *extra], needle))
    cases.append(("sample-trials-0", [*sweep, "--sample", "lr=uniform:0.1:0.2", "--trials", "0"], "--trials"))
    # --plan and --scheduler
    cases += [
        ("plan-unknown", ["sweep", "grok", "--plan", "nosuch"], "nosuch"),
        ("plan-empty", ["sweep", "grok", "--plan", ""], "--plan"),
        ("plan-study-without-plans", ["sweep", "w2s", "--plan", "delay-law"], "no plans"),
        ("plan-and-grid", ["sweep", "grok", "--plan", "delay-law", "--grid", "lr=1e-3"], "--plan"),
        ("plan-and-preset", ["sweep", "grok", "--plan", "delay-law", "--preset", "default"], "--plan"),
        ("scheduler-without-ray", [*sweep, "--grid", "lr=1e-3,3e-3", "--scheduler", "asha"], "--backend ray"),
        ("scheduler-without-ray-w2s", ["sweep", "w2s", "--grid", "lr=1e-3", "--scheduler", "asha"], "--backend ray"),
        ("scheduler-unknown", [*sweep, "--grid", "lr=1e-3", "--scheduler", "hyperband", "--backend", "ray"],
         "hyperband"),
        ("scheduler-no-intermediate", ["sweep", "w2s", "--grid", "lr=1e-3", "--scheduler", "asha", "--backend",
                                       "ray"], "intermediate"),
    ]
    # corpus parts wherever a corpus is named
    for where, base in CORPUS_COMMANDS.items():
        for spec, needle in BAD_PARTS.items():
            args = [*base[:-1], base[-1] + spec] if base[-1].endswith("=") else [*base, spec]
            cases.append((f"corpus-{where}-{spec}", args, needle))
    # hf:PATH w2s tasks
    for name, task, needle in (
        ("missing-column", "hf:{hf_nocol}:text:label", "no column 'label'"),
        ("no-known-shape", "hf:{hf_nocol}", "no known dataset shape"),
        ("one-class", "hf:{hf_oneclass}", "fewer than 2 classes"),
        ("one-class-columns", "hf:{hf_oneclass}:text:label", "fewer than 2 classes"),
        ("boolq-one-answer", "hf:{hf_boolq_one}", "fewer than 2 classes"),
        ("empty-split", "hf:{hf_emptysplit}", "split 'test' has no rows"),
        ("empty-dataset", "hf:{hf_empty}", "has no rows"),
        ("split-without-column", "hf:{hf_splitcols}", "split 'test' has no column 'text'"),
        ("not-saved-folder", "hf:{hf_notsaved}", "not a saved dataset"),
        ("empty-folder", "hf:{hf_emptydir}", "not a saved dataset"),
        ("a-file", "hf:{afile}", "not a saved dataset"),
        ("damaged-arrow", "hf:{hf_arrow}", "cannot load"),
        ("binary-state", "hf:{hf_state}", "cannot load"),
        ("missing", "hf:{t}/nope", "does not exist"),
        ("nothing-after-prefix", "hf:", "hf:"),
        ("one-column-named", "hf:{hf_ok}:text", "only one column"),
        ("empty-column-name", "hf:{hf_ok}::label", "empty column name"),
    ):
        cases.append((f"hf-{name}", ["w2s", "--task", task], needle))
    # lm-eval harness folders
    for name, needle in (("trunc", "is not valid JSON"), ("stray", "samples_hellaswag"),
                         ("binsamples", "is not UTF-8"), ("binresults", "is not valid JSON")):
        cases.append((f"harness-{name}", ["correlate", f"{{harness_{name}}}", "--out", "{t}/harness.html"], needle))
    # EFT prompt files
    for name, path, needle in (("empty", "{prompts_empty_txt}", "holds no prompt"),
                               ("blank", "{prompts_blank_txt}", "holds no prompt"),
                               ("binary", "{prompts_binary_txt}", "binary file"),
                               ("latin1", "{prompts_latin1_txt}", "not UTF-8"),
                               ("10mb-line", "{prompts_huge_txt}", "longer than the models' context"),
                               ("folder", "{prompts_adir}", "is a folder"),
                               ("missing", "{t}/prompts/nope.txt", "does not exist")):
        cases.append((f"eft-prompts-{name}", ["eft", "generate", *EFT_MODELS, "--prompts-file", path,
                                              "--max-new-tokens", "2", "--report", "{t}/eft.html"], needle))
    # zoo build on a zoo whose manifest cannot be read
    for name in ("notjson", "list", "latin1", "binary", "trunc", "dir"):
        cases.append((f"zoo-build-manifest-{name}", ["zoo", "build", "--preset", "micro", "--out", f"{{zoo_{name}}}"],
                      "manifest"))
    # runs mirror where the mirror cannot be written
    for name, to, needle in (("file", "tensorboard", "is a file"), ("file", "mlflow", "is a file"),
                             ("tbfile", "tensorboard", "is a file"), ("db", "mlflow", "mlflow.db")):
        cases.append((f"mirror-{name}-{to}", ["runs", "mirror", "--to", to, "--store", f"{{mstore_{name}}}"], needle))
    cases.append(("mirror-store-under-file", ["runs", "mirror", "--to", "tensorboard", "--store", "{afile}/x"],
                  "afile"))
    cases.append(("repair-store-under-file", ["runs", "repair", "--store", "{afile}/x"], "afile"))
    return cases


# what a surface case may write: the built-in corpus cache that a part is selected from (it serves every build)
MAY_WRITE = {c[0]: ("runs/zoo/corpora/",) for c in surface_cases() if c[0].startswith("corpus-")}


def all_cases() -> list[tuple[str, list[str], str]]:
    return HAND + generated_cases() + surface_cases()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` -> (size, mtime): a command that writes or changes one shows."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root) + ("/" if name in dirs else "")] = (st.st_size if name in files else 0,
                                                                             st.st_mtime_ns if name in files else 0)
    return out


def _bookkeeping(rel: str) -> bool:
    """What opening a store or a run may touch without writing a result: the index and its journal files,
    run locks, a failed run's marking (checked by _unfinished_runs)."""
    name = rel.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith("index.sqlite") or name in (".lock", "summary.json")


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
    no_store = argv[:2] in (["eft", "generate"], ["eft", "score"])  # they read model folders, not the store
    if ("--store" not in argv and argv[0] != "zoo" or argv[:2] == ["zoo", "build"]) and not no_store:
        argv += ["--store", env["store"]]
    before = _files(Path(env["t"]))
    code, out, err = cli(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error"), (argv, err)
    assert needle.format(**env) in lines[0], (needle, lines[0])
    for root in (env["store"], *(v for k, v in env.items() if k.startswith("store_"))):
        assert not _unfinished_runs(Path(root)), (argv, _unfinished_runs(Path(root)))
    after = _files(Path(env["t"]))
    may = MAY_WRITE.get(case_id, ())  # and the folders above it
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                     and not k.startswith(may) and not any(m.startswith(k) for m in may) and not _bookkeeping(k))
    assert not changed, (argv, "half-written or changed:", changed[:10])


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


def test_runs_repair_on_junk_indexes_the_good_runs_and_names_each_damaged_one(cli, tmp_path):
    """Repair is the command for a damaged store: it succeeds, indexes what is sound, names each damaged run
    on its own line (its status `damaged` in `runs ls`), skips stray files and folders without a config, and
    changes none of them."""
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.studies.grokking.config import PRESETS as GROK_PRESETS
    from transferlab.studies.grokking.config import GrokConfig

    st = Store(tmp_path / "runs")
    runs = []
    for steps in range(10, 16):
        cfg = resolve(GrokConfig, presets=GROK_PRESETS, preset="default", overrides=["p=23", f"steps={steps}"])
        run = st.open_run("grokking", cfg)
        run.finish({"final_val_acc": 1.0})
        runs.append(run)
    good, not_yaml, not_mapping, binary_config, config_folder, binary_summary = runs
    (not_yaml.path / "config.yaml").write_text("p: [23\n")
    (not_mapping.path / "config.yaml").write_text("- p\n- 23\n")
    (binary_config.path / "config.yaml").write_bytes(bytes(range(256)))
    (config_folder.path / "config.yaml").unlink()
    (config_folder.path / "config.yaml").mkdir()
    binary_summary.summary_path.write_bytes(bytes(range(256)))
    root = st.root
    (root / "stray.txt").write_text("not a run")
    (root / "grokking" / "stray.bin").write_bytes(bytes(range(256)))
    (root / "grokking" / "noconfig").mkdir()
    (root / "grokking" / "noconfig" / "summary.json").write_text('{"status": "done"}')
    (root / "emptystudy" / "emptyrun").mkdir(parents=True)
    (root / "afile_study").write_text("a file where a study folder goes")
    (root / "index.sqlite").write_bytes(b"not a database" * 50)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "index.sqlite" not in p.name
              and p.name != ".lock"}

    code, out, err = cli(["runs", "repair", "--store", str(root), "--json"])
    assert code == 0 and "Traceback" not in err, err
    res = json.loads(out)
    damaged = {r.id for r in runs[1:]}
    assert res["runs"] == 6 and res["broken_index_kept_at"]
    assert len(res["damaged"]) == 5 and {line.split(":")[0].removeprefix("run ") for line in res["damaged"]} == damaged
    assert all("\n" not in line and ("config.yaml" in line or "summary.json" in line) for line in res["damaged"])
    assert before == {p: p.read_bytes() for p in before}, "repair changed a file it should only read"
    code, out, err = cli(["runs", "ls", "--store", str(root), "--json"])
    assert code == 0, err
    status = {r["id"]: r["status"] for r in json.loads(out)}
    assert status == {good.id: "done", **{i: "damaged" for i in damaged}}
    code, out, err = cli(["runs", "show", not_mapping.id, "--store", str(root)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a mapping" in err, err
