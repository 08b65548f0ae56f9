"""One declaration, everything derived (issue 24): a study registered at run time, with no other edit, gets its
command (`transferlab toy`, its own typed option from its RunOptions), `transferlab sweep toy` and
`transferlab runs report ID`; every study's command is built by one function from the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Line, RunOptions, Study, StudyResult
from transferlab.studies.registry import get_study, register, study_names, unregister


class ToyConfig(StudyConfig):
    x: float = Field(1.0, description="The number the toy doubles.")


TOY_PRESETS = PresetRegistry()
TOY_PRESETS.add("default", "x = 1")
TOY_PRESETS.add("big", "x = 10", x=10.0)


class ToyOptions(RunOptions):
    label: str = Field("y", description="The name the result is printed under (a run option of the toy's own).")


def _page(run: Run, y: float) -> Path:
    run.report_path.write_text(f"<html>toy y={y}</html>")
    return run.report_path


class ToyStudy(Study[ToyConfig, ToyOptions]):
    command = "toy"
    name = "toy_study"
    summary = "doubles a number (a study registered by a test)"
    config_cls = ToyConfig
    options_cls = ToyOptions
    presets = TOY_PRESETS

    def run(self, cfg: ToyConfig, store: Store, options: ToyOptions | None = None) -> StudyResult:
        o = self.options(options)
        done = store.done(self.name, cfg)
        if done is None:
            run = store.open_run(self.name, cfg)
            run.start()
            run.finish({"y": 2 * cfg.x})
            if o.report:
                _page(run, 2 * cfg.x)
            done = run.summary() or {}
        return self.result(done, contract={"label": o.label, **done})

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        return [f"{result.to_json()['label']} = {result['y']:g}", Line("[bold]made by a toy[/bold]", note=True)]

    def report_from_run(self, cfg: ToyConfig, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        return _page(run, summary["y"]) if "y" in summary else None


@pytest.fixture
def toy(cli):
    register(ToyStudy)
    try:
        yield get_study("toy")
    finally:
        unregister("toy")
        cli(["--version"])  # the CLI drops the command of a study no longer registered


def test_a_study_registered_at_run_time_gets_its_command_sweep_and_report(toy, cli, tmp_path):
    store = str(tmp_path / "runs")
    code, out, err = cli(["toy", "--json", "--store", store])
    assert code == 0, err
    assert json.loads(out)["y"] == 2.0
    code, out, err = cli(["toy", "--preset", "big", "--set", "x=3", "--label", "z", "--store", store])
    assert code == 0 and out.strip() == "z = 6" and "made by a toy" in err, err
    code, out, _ = cli(["toy", "--explain"])
    assert code == 0 and "The number the toy doubles." in out
    code, out, _ = cli(["toy", "--list-presets", "--json"])
    assert code == 0 and set(json.loads(out)) == {"default", "big"}

    code, out, err = cli(["sweep", "toy", "--grid", "x=1,2,5", "--json", "--store", store])
    assert code == 0, err
    trials = json.loads(out)["trials"]
    assert sorted(t["y"] for t in trials) == [2.0, 4.0, 10.0] and {t["status"] for t in trials} == {"done"}

    run_id = next(t["run_id"] for t in trials if t["y"] == 10.0)
    (Path(store) / toy.name / run_id / "report.html").unlink(missing_ok=True)
    code, out, err = cli(["runs", "report", run_id, "--json", "--store", store])
    assert code == 0, err
    assert Path(json.loads(out)["report"]).read_text() == "<html>toy y=10.0</html>"


def test_a_study_option_is_a_typed_flag_with_its_description(toy, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(["toy", "--help"])
    line = next(line for line in out.splitlines() if "--label" in line)
    assert code == 0 and "The name the result is printed under" in line
    for flag in ("--preset", "--set", "--config", "--print-config", "--list-presets", "--explain", "--json",
                 "--store"):
        assert flag in out, flag
    code, _, err = cli(["toy", "--label"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--label" in err


def test_an_unregistered_study_has_no_command(cli):
    assert "toy" not in study_names()
    code, _, err = cli(["toy", "--json"])
    assert code == 2 and "toy" in err


def test_every_study_command_is_built_by_the_factory(cli, monkeypatch):
    """The shared options and each study's own (from its options_cls and flags_cls) on every study command."""
    monkeypatch.setenv("COLUMNS", "400")
    for command in study_names():
        study = get_study(command)
        code, out, _ = cli([*study.cli_words(), "--help"])
        assert code == 0, command
        for flag in ("--preset", "--set", "--config", "--print-config", "--list-presets", "--explain", "--json",
                     "--store"):
            assert flag in out, (command, flag)
        for model in (study.options_cls, study.flags_cls):
            for name, field in (model.model_fields if model is not None else {}).items():
                extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
                if extra.get("cli") is False or extra.get("argument"):
                    continue
                flag = (extra.get("flags") or [f"--{name.replace('_', '-')}"])[0]
                assert flag in out, (command, flag)
