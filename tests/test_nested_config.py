"""Configs in parts (issue 24, item 3): the grokking and w2s configs nest, every key keeps its flat name in every
place people type one, an ambiguous name is refused with one line, and no run id changed."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from transferlab.core.config import ConfigPart, StudyConfig, canonical_key, config_keys, flat_as, resolve
from transferlab.core.errors import ConfigError
from transferlab.studies.grokking.config import PRESETS as GROK_PRESETS
from transferlab.studies.grokking.config import GrokConfig
from transferlab.studies.registry import get_study
from transferlab.studies.w2s.config import W2SConfig

# Every grokking and w2s preset's run id as main wrote them before the nesting (8466349), and the w2s
# floor-and-ceiling key: a changed id would orphan the runs of every store (tests/test_old_store.py holds an
# older store, d4cf43a's).
PRESET_IDS = {
    "grok:default": "7e41935dd48f6042", "grok:grokfast-mlp": "22d4a78b531ae1cf",
    "grok:grokfast-mlp-baseline": "fb426e4bbc87c7dd", "grok:grokfast2024": "aab538277be2ec48",
    "grok:grokfast2024-baseline": "87c8bf11f527ad0e", "grok:grokfast2024-ma": "743a58e3db12a9a8",
    "grok:gromov2023": "c4e116a2387bdc4c", "grok:mini": "adba927ced5a1c60", "grok:nanda2023": "74456dd7c6731003",
    "grok:power2022": "611dc78c5d9b8ce0", "grok:prieto2025-orthograd": "ab1f13fd7d6706a9",
    "grok:prieto2025-stablemax": "669abd24b215e74b", "w2s:mini": "6476afe6f9ec858f",
    "w2s:paper": "2fc28bc85e682795", "w2s:quick": "fe176608c6e02583", "w2s:refine": "b9542facdbb916f6",
}
BASELINE_IDS = {"mini": "93003a0b61a5f934", "paper": "2de84e01ecd004a9", "quick": "ae05dce3350b9be9",
                "refine": "2de84e01ecd004a9"}


def test_every_preset_keeps_its_run_id():
    from transferlab.studies.w2s.run import baseline_config

    got = {key: get_study(key.split(":")[0]).make_config(key.split(":")[1]).config_hash() for key in PRESET_IDS}
    assert got == PRESET_IDS
    w2s = get_study("w2s")
    assert {p: baseline_config(w2s.make_config(p), {"a": 1}, ["weak", "strong"]).config_hash()
            for p in BASELINE_IDS} == BASELINE_IDS


def test_a_sweep_plan_keeps_its_trial_ids():
    from transferlab.sweep.runner import combine, sweep_name, trial_configs

    study = get_study("grok")
    plan = study.sweep_plans["delay-law"]
    base = study.make_config(plan.preset, [f"{k}={v}" for k, v in plan.overrides.items()])
    trials = trial_configs(study, base, combine(plan.grid, None), plan.seeds)
    assert [t.config_hash() for t in trials[:3]] == ["715c7421ecf8340c", "b5b05fc48bee3dcb", "2043ec1a3b27cdc2"]
    assert sweep_name(study, base, plan.grid, plan.seeds) == "sweep-fc5e94ced6"


@pytest.mark.parametrize("cls", [GrokConfig, W2SConfig])
def test_every_spelling_of_a_key_is_the_same_config(cls, tmp_path):
    flat = {GrokConfig: {"lr": 0.02, "steps": 100, "model": "transformer", "monitor_every": 0},
            W2SConfig: {"lr": 0.02, "ft_steps": 7, "weak_ft_lr": 1e-3, "task": "sst",
                        "student_early_stop": "last"}}[cls]
    dotted = {canonical_key_path(cls, k): v for k, v in flat.items()}
    nested: dict = {}
    for k, v in dotted.items():
        part, leaf = k.split(".")
        nested.setdefault(part, {})[leaf] = v
    a = cls(**flat)
    b = resolve(cls, overrides=[f"{k}={v}" for k, v in dotted.items()])
    f = tmp_path / "c.yaml"
    f.write_text(json.dumps(nested))  # JSON is YAML
    c = resolve(cls, config_file=f)
    d = build_from_stored(cls, a.flat())  # a config.yaml written before the nesting: flat
    assert a == b == c == d and a.config_hash() == b.config_hash() == c.config_hash()
    assert {k: a.value(k) for k in flat} == flat == {k: a.value(v) for k, v in zip(flat, dotted)}


def canonical_key_path(cls, key: str) -> str:
    from transferlab.core.config import key_path

    return ".".join(key_path(cls, key))


def build_from_stored(cls, values):
    from transferlab.core.config import build

    return build(cls, values)


def test_layers_merge_field_by_field_inside_a_part(tmp_path):
    """A YAML file that sets one optimizer field keeps the preset's other optimizer fields."""
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  weight_decay: 0.5\n")
    cfg = resolve(GrokConfig, presets=GROK_PRESETS, preset="nanda2023", config_file=f, overrides=["beta2=0.99"])
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.beta2) == (1e-3, 0.5, 0.99)
    assert cfg.model.kind == "transformer" and cfg.loss.dtype == "float64"


def test_an_ambiguous_name_is_refused_with_the_keys_to_write(cli):
    with pytest.raises(ConfigError, match=r"'model' is ambiguous: it is weak.model and strong.model — write "
                                          r"weak.model=\.\.\. or strong.model=\.\.\."):
        W2SConfig(model="zoo:xs")
    code, out, err = cli(["w2s", "--set", "model=zoo:xs", "--print-config"])
    assert code == 2 and err.count("\n") == 1 and "weak.model=..." in err, err
    code, out, err = cli(["sweep", "w2s", "--grid", "model=a,b", "--print-config"])
    assert code == 2 and "strong.model=..." in err, err


def test_a_rule_of_one_part_names_that_part(cli):
    code, out, err = cli(["grok", "--set", "eq_output=true", "--print-config"])
    assert code == 2 and err.count("\n") == 1 and "GrokConfig.model: eq_output" in err and "model=transformer" in err
    code, out, err = cli(["grok", "--set", "operation=x/y", "--set", "p=91", "--print-config"])
    assert code == 2 and "GrokConfig.task" in err and "not prime" in err, err
    code, out, err = cli(["grok", "--set", "optimizer.lrr=1", "--print-config"])
    assert code == 2 and "unknown config key 'optimizer.lrr'" in err and "optimizer.lr," in err, err


def test_a_sweep_takes_flat_and_dotted_keys_as_one(cli):
    code, out, err = cli(["sweep", "grok", "--grid", "optimizer.lr=1e-3,3e-3", "--grid", "weight_decay=0.5",
                          "--seeds", "2", "--print-config", "--json"])
    assert code == 0, err
    plan = json.loads(out)
    assert plan["base"]["optimizer"]["lr"] == 3e-3 and plan["base"]["schedule"]["steps"] == 3000
    assert plan["trials"][0] == {"lr": 1e-3, "weight_decay": 0.5, "seed": 0}
    code, out, err = cli(["sweep", "grok", "--grid", "lr=1e-3,3e-3", "--grid", "optimizer.lr=1e-2",
                          "--print-config"])
    assert code == 2 and "names 'lr' twice" in err, err
    code, out, err = cli(["sweep", "grok", "--grid", "lr=1e-3,3e-3", "--set", "optimizer.lr=1e-2", "--print-config"])
    assert code == 2 and "'lr' is set both by --set and by the sweep" in err, err


def test_explain_lists_each_part_field_with_its_flat_name(cli):
    code, out, err = cli(["w2s", "--explain", "--json"])
    assert code == 0, err
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["finetune.steps"]["flat"] == "ft_steps" and rows["weak.lr"]["flat"] == "weak_ft_lr"
    assert all(r["description"] for r in rows.values())
    assert "flat" not in rows["seeds"]


def test_a_part_is_a_class_and_a_field_and_a_new_field_is_one_line():
    class Opt(ConfigPart):
        lr: float = Field(1e-3, description="the learning rate")
        momentum: float = Field(0.9, description="new: one line", json_schema_extra=flat_as("opt_momentum"))

    class Sched(ConfigPart):
        lr: float = Field(0.0, description="the schedule's floor", json_schema_extra=flat_as("min_lr"))
        steps: int = Field(10, description="steps")

    class Toy(StudyConfig):
        seed: int = Field(0, description="seed")
        opt: Opt = Field(default_factory=Opt, description="optimizer")
        sched: Sched = Field(default_factory=Sched, description="schedule")

    keys = config_keys(Toy)
    assert keys.paths == {"seed": ("seed",), "lr": ("opt", "lr"), "opt_momentum": ("opt", "momentum"),
                          "min_lr": ("sched", "lr"), "steps": ("sched", "steps")}
    t = Toy(lr=0.1, momentum=0.5, min_lr=0.01, steps=3)  # a part's field name works where one part has it
    assert (t.opt.lr, t.opt.momentum, t.sched.lr, t.sched.steps) == (0.1, 0.5, 0.01, 3)
    assert t.flat() == {"seed": 0, "lr": 0.1, "opt_momentum": 0.5, "min_lr": 0.01, "steps": 3}
    assert canonical_key(Toy, "sched.lr") == "min_lr" and canonical_key(Toy, "opt.lr") == "lr"
    assert t.updated(min_lr=0.02).sched.lr == 0.02 and t.model_copy(update={"steps": 4}).sched.steps == 4

    class Clash(StudyConfig):
        a: Opt = Field(default_factory=Opt, description="one")
        b: Opt = Field(default_factory=Opt, description="two")

    with pytest.raises(TypeError, match="the flat key 'lr' is both a.lr and b.lr"):
        config_keys(Clash)
