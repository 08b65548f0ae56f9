"""`transferlab grok`, `runs` and the contract scripts rely on; bad input gets one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import render

SMALL = ["--set", "p=31", "--set", "train_fraction=0.5", "--set", "width=128", "--set", "steps=2500",
         "--set", "stop_after_generalized=100"]
TINY = ["--set", "p=23", "--set", "width=16", "--set", "steps=30", "--set", "eval_every=10"]


def test_grok_memorizes_first_generalizes_later_and_reports(cli, tmp_path):
    code, out, err = cli(["grok", *SMALL, "--store", str(tmp_path), "--json"])
    assert code == 0, err
    res = json.loads(out)
    for key in ("steps_to_memorize", "steps_to_generalize", "final_val_acc", "wall_seconds", "report"):
        assert key in res
    assert res["final_val_acc"] >= 0.99
    assert res["steps_to_memorize"] < res["steps_to_generalize"]
    assert res["steps_to_generalize"] >= 3 * res["steps_to_memorize"]  # clearly later, not together
    page = render(Path(res["report"]))
    assert page["figures"] >= 4 and page["rendered"] == page["figures"] and page["errors"] == ""
    assert Path(res["report"]).with_name("report_phases.png").stat().st_size > 10_000
    # runs ls / show / report see the same run
    code, out, _ = cli(["runs", "ls", "--store", str(tmp_path), "--json"])
    assert code == 0 and [r["id"] for r in json.loads(out)] == [res["run_id"]]
    code, out, _ = cli(["runs", "show", res["run_id"][:8], "--store", str(tmp_path), "--json"])
    shown = json.loads(out)
    assert shown["summary"]["steps_to_generalize"] == res["steps_to_generalize"]
    assert shown["config"]["task"]["p"] == 31
    code, out, _ = cli(["runs", "report", res["run_id"], "--store", str(tmp_path), "--json"])
    assert code == 0 and Path(json.loads(out)["report"]).exists()


def test_seeds_contract_lists_members_with_mean_and_interval(cli, tmp_path):
    code, out, err = cli(["grok", *TINY, "--seeds", "3", "--store", str(tmp_path), "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert [m["seed"] for m in res["members"]] == [0, 1, 2]
    assert len({m["run_id"] for m in res["members"]}) == 3
    for k in ("steps_to_memorize", "steps_to_generalize", "final_val_acc"):
        assert k in res["mean"] and len(res["ci95"][k]) == 2
    accs = [m["final_val_acc"] for m in res["members"]]
    assert res["mean"]["final_val_acc"] == pytest.approx(sum(accs) / 3)
    assert res["ci95"]["final_val_acc"][0] <= res["mean"]["final_val_acc"] <= res["ci95"]["final_val_acc"][1]


def test_list_presets_and_print_config(cli):
    code, out, _ = cli(["grok", "--list-presets"])
    assert code == 0
    for name in ("default", "power2022", "nanda2023", "gromov2023", "grokfast2024", "grokfast2024-ma",
                 "grokfast2024-baseline", "prieto2025-stablemax", "prieto2025-orthograd"):
        assert name in out
    code, out, _ = cli(["grok", "--preset", "nanda2023", "--set", "lr=0.002", "--print-config"])
    assert code == 0 and "p: 113" in out and "lr: 0.002" in out


@pytest.mark.parametrize("args,needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--set", "colour=red"], "unknown config key 'colour'"),
    (["--set", "operation=x/y", "--set", "p=12"], "not prime"),
    (["--set", "train_fraction=1.5"], "train_fraction"),
    (["--set", "train_fraction=0"], "train_fraction"),
    (["--set", "lr"], "no '='"),
    (["--set", "eq_output=true"], "needs model=transformer"),
    (["--set", "model=power_transformer", "--set", "layer_norm=true"], "always post-LN"),
    (["--set", "model=transformer", "--set", "init=gromov"], "MLP option"),
    (["--set", "ensemble_mode=threads"], "ensemble_mode"),
    (["--set", "split_style=numpy"], "split_style"),
])
def test_bad_input_gets_one_line_and_exit_2_and_writes_nothing(cli, tmp_path, args, needle):
    store = tmp_path / "store"
    code, out, err = cli(["grok", *args, "--store", str(store)])
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err
    assert not (store / "grokking").exists()


def test_store_path_that_is_a_file(cli, tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    code, _, err = cli(["grok", *TINY, "--store", str(f)])
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_reported_not_crashed(cli, tmp_path):
    from transferlab.store import Store

    code, out, _ = cli(["grok", *TINY, "--set", "checkpoint_every=10", "--store", str(tmp_path), "--json"])
    run_id = json.loads(out)["run_id"]
    run = Store(tmp_path).find(run_id)
    run.summary_path.unlink()  # pretend it was interrupted
    for f in run.ckpt_dir.glob("step-*/tensors.safetensors"):
        f.write_bytes(b"\x00" * 10)
    before = run.metrics_path.read_text()
    code, _, err = cli(["grok", *TINY, "--set", "checkpoint_every=10", "--store", str(tmp_path)])
    assert code == 2 and "corrupt" in err and "delete" in err and len(err.strip().splitlines()) == 1
    assert run.metrics_path.read_text() == before  # nothing already written is lost


def test_nan_loss_is_a_clean_stop_with_exit_2(cli, tmp_path):
    code, _, err = cli(["grok", *TINY, "--set", "lr=1e30", "--set", "warmup_steps=0", "--store", str(tmp_path)])
    assert code == 2
    assert "NaN/Inf" in err and "last good checkpoint" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_are_one_line_exit_2(cli):
    code, _, err = cli(["grok", "--no-such-flag"])
    assert code == 2 and err.strip().startswith("error") and "no-such-flag" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = cli(["grok", "--seeds", "many"])
    assert code == 2 and "seeds" in err and len(err.strip().splitlines()) == 1


def test_version_and_runs_ls_vocabulary(cli, tmp_path):
    """`--version`; `runs ls` has a header, takes the CLI's study names, and hides the runs studies make for
    themselves (zoo models: study `lm`) unless --all."""
    from transferlab import __version__
    from transferlab.store import Store
    from transferlab.studies.grokking import GrokConfig
    from transferlab.zoo.build import PRESETS, ZooConfig

    code, out, _ = cli(["--version"])
    assert code == 0 and out.strip() == f"transferlab {__version__}"
    st = Store(tmp_path)
    grok = st.open_run("grokking", GrokConfig(p=23, width=8, steps=10))
    grok.finish({})
    child = st.open_run("lm", ZooConfig(**PRESETS.values("micro")))
    child.finish({})
    code, out, _ = cli(["runs", "ls", "--store", str(tmp_path)])
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:3] == ["id", "study", "status"]
    assert len(lines) == 2 and grok.id in lines[1] and child.id not in out
    code, out, _ = cli(["runs", "ls", "--all", "--store", str(tmp_path)])
    assert child.id in out and grok.id in out
    code, out, _ = cli(["runs", "ls", "--study", "grok", "--json", "--store", str(tmp_path)])
    assert code == 0 and [r["id"] for r in json.loads(out)] == [grok.id]


def test_explain_lists_every_key_with_a_description(cli):
    import json as _json

    from transferlab.cli.common import explain_fields
    from transferlab.core.config import config_keys
    from transferlab.studies.correlate.zoo_config import ZooPairsConfig
    from transferlab.studies.grokking import PRESETS, GrokConfig
    from transferlab.studies.registry import get_study, study_names
    from transferlab.zoo.build import ZooConfig

    # every registered study's config (nested sub-configs as dotted keys), and the zoo build's
    for cls in (*(get_study(n).config_cls for n in study_names()), ZooConfig):
        rows = explain_fields(cls)
        assert [r["key"] for r in rows if not r["description"]] == [], cls.__name__
        assert all(len(r["description"].split()) >= 3 for r in rows), cls.__name__  # a description, not a word
    code, out, _ = cli(["grok", "--explain", "--json"])
    rows = {r.get("flat", r["key"]): r for r in _json.loads(out)}  # a part's field also by its flat name
    assert code == 0 and set(rows) == set(config_keys(GrokConfig).paths) - {"preset"}
    assert rows["lr"]["key"] == "optimizer.lr"
    assert rows["lr"]["default"] == "0.003" and "learning rate" in rows["lr"]["description"]
    code, out, _ = cli(["zoo", "build", "--explain"])
    assert code == 0 and "train.lr" in out and "peak learning rate" in out  # nested keys, as --set takes them
    # the Python default is the CLI's default run
    from transferlab.core.config import resolve

    assert resolve(GrokConfig, presets=PRESETS, preset="default").config_hash() == GrokConfig().config_hash()
    from transferlab.studies.correlate.zoo_config import PRESETS as CZ

    assert resolve(ZooPairsConfig, presets=CZ, preset="default").config_hash() == ZooPairsConfig().config_hash()


def test_help_keeps_bracketed_text(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli(["grok", "--help"])
    assert code == 0 and "transferlab[tensorboard]" in out  # rich markup would have swallowed "[tensorboard]"
