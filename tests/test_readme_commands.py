"""Every `transferlab ...` command in the README still runs (issue 24). Commands that answer at once run as
written; commands that train, build or extract (a study, a sweep, `zoo build`) run in their `--print-config`
form, which validates every key and value without training; placeholders the README leaves to the reader
(ID, runs.csv, ROOT) are filled with real ones; commands whose placeholders need models we do not have here
(`--base big`, `weak_model=PATH`), commands only named in prose (`transferlab fit chinchilla` in the table) and
the corpus extraction (minutes) run in their `--help` form."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
HARNESS = Path(__file__).parent / "data" / "lm_eval_tiny"


def readme_commands() -> list[str]:
    text = README.read_text()
    found: list[str] = []
    block, pending = False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            block = not block
            continue
        if not block:
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("transferlab "):
            found.append(line)
    found += re.findall(r"`(transferlab [^`]+)`", text)
    out: list[str] = []
    for cmd in found:
        cmd = cmd.split("  #")[0].split(" # ")[0].strip()
        for part in cmd.split(" ; "):
            part = re.sub(r"\s*\[[^\]]*\]", "", part).strip()  # optional parts: [--backend ray], [ID ...]
            if part not in out:
                out.append(part)
    return out


def _words(cmd: str) -> list[str]:
    """The command words after `transferlab` (up to the first option or argument that is not a word)."""
    from transferlab.studies.registry import get_study, study_names

    args = shlex.split(cmd)[1:]
    for name in study_names():
        words = get_study(name).cli_words()
        if args[: len(words)] == words:
            return words
    return args[:2] if args and args[0] in ("sweep", "runs", "zoo", "fit", "eft") else args[:1]


def _needs_arguments(words: list[str]) -> bool:
    """Whether the command has a required argument or option (then its bare name cannot run as it is)."""
    import typer

    from transferlab.cli.main import app
    from transferlab.cli.studies import sync

    sync(app)
    cmd = typer.main.get_command(app)
    for w in words:
        cmd = cmd.commands[w]  # type: ignore[attr-defined]
    if getattr(cmd, "commands", None):
        return True  # a group: it needs a subcommand
    return any(p.required for p in cmd.params) or cmd.name == "correlate"  # correlate: PATH, checked by the study


def plan(cmd: str, run_id: str, csv: str) -> tuple[list[str], str]:
    """(argv, form) for one README command: form is 'as written', 'print-config' or 'help'."""
    from transferlab.studies.registry import get_study, study_names

    args = shlex.split(cmd)[1:]
    words = _words(cmd)
    args = [{"ID": run_id, "runs.csv": csv, "ROOT": str(HARNESS)}.get(a, a) for a in args]
    study_words = {tuple(get_study(n).cli_words()) for n in study_names()}
    needs_models = any(a in ("big", "small-chat", "small", "prompts.txt") or "=PATH" in a for a in args)
    bare = args == words and _needs_arguments(words)  # named in prose (the README's table), not a command line
    if needs_models or bare or words[:2] == ["zoo", "corpus"]:
        return [*words, "--help"], "help"
    answers_at_once = {"--print-config", "--print-plan", "--list-presets", "--help", "--explain"} & set(args)
    if words[:1] == ["tour"] and not answers_at_once:  # runs every study: its plan validates every config
        return [*args, "--print-plan"], "print-config"
    trains = tuple(words) in study_words or words[0] == "sweep" or words[:2] == ["zoo", "build"]
    if trains and not answers_at_once:
        return [*args, "--print-config"], "print-config"
    return args, "as written"


def test_the_readme_names_the_commands_this_test_covers():
    cmds = readme_commands()
    assert len(cmds) >= 25
    assert {"transferlab grok", "transferlab runs ls", "transferlab zoo ls"} <= set(cmds)


def test_every_readme_command_runs(cli, tmp_path, monkeypatch):
    from transferlab.studies.registry import study_names

    monkeypatch.setenv("TRANSFERLAB_HOME", str(tmp_path / "runs"))
    code, out, err = cli(["grok", "--set", "p=23", "--set", "width=16", "--set", "steps=20", "--set",
                          "eval_every=10", "--json"])
    assert code == 0, err
    import json

    run_id = json.loads(out)["run_id"]
    csv = str(Path(__file__).resolve().parent.parent / "transferlab" / "data" / "reference"
              / "chinchilla_svg_extracted.csv")
    forms: dict[str, int] = {}
    failed = []
    for cmd in readme_commands():
        argv, form = plan(cmd, run_id, csv)
        forms[form] = forms.get(form, 0) + 1
        code, out, err = cli(argv)
        if code != 0 or "Traceback" in err:
            failed.append(f"{cmd!r} as {argv}: exit {code}: {err.strip()[-300:]}")
    assert not failed, "README commands that no longer run:\n" + "\n".join(failed)
    assert forms["as written"] >= 6 and forms["print-config"] >= 10, forms
    assert len(study_names()) >= 5


@pytest.mark.parametrize("cmd, form", [("transferlab grok --preset mini", "print-config"),
                                       ("transferlab fit chinchilla", "help"),
                                       ("transferlab runs ls", "as written"),
                                       ("transferlab zoo corpus prose --json", "help"),
                                       ("transferlab sweep grok --plan delay-law --json", "print-config"),
                                       ("transferlab tour", "print-config")])
def test_the_plan_of_a_command(cmd, form):
    assert plan(cmd, "abc", "x.csv")[1] == form
