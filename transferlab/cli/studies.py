"""Every study's command, built from its declaration in the registry by one function (``study_command``).

`transferlab <command>` (or the words of ``Study.cli``: `transferlab eft demo`) takes the options every study
command shares (``--preset``, ``--set``, ``--config``, ``--print-config``, ``--list-presets``, ``--explain``,
``--json``, ``--store``), ``--mirror`` where the study's runs log live, and the fields of the study's
``options_cls`` (run options) and ``flags_cls`` (shortcuts for config keys) as typed flags whose help is the
field's description. It prints ``study.result_lines(result)`` (or ``result.to_json()`` with ``--json``) and exits 1
when ``study.failure(result)`` says why. ``sync`` adds the commands of studies registered since the last call.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

from transferlab.cli.common import (
    ConfigOpt,
    ExplainOpt,
    JsonOpt,
    ListPresetsOpt,
    MirrorOpt,
    PrintConfigOpt,
    SetOpt,
    StoreOpt,
    begin,
    config_or_listing,
    emit_json,
    preset_option,
    say,
    show,
    store_path,
)
from transferlab.core.config import describe
from transferlab.studies.base import Line, Study

_SYNCED: dict[str, list[tuple[typer.Typer, Any]]] = {}  # study -> (app or group, its CommandInfo) it added


def sync(app: typer.Typer) -> None:
    """(Re)build the command and the `sweep` subcommand of every registered study, so that they follow the
    declarations as they are now: a study registered or dropped since, or a registry a help text lists (a w2s
    loss defined by its class). Building them is a few milliseconds."""
    from transferlab.cli.sweep import add_sweep, sweep_app
    from transferlab.studies.registry import get_study, study_names

    names = study_names()
    for key in list(_SYNCED):
        for target, info in _SYNCED.pop(key):
            target.registered_commands.remove(info)
    for key in names:
        study = get_study(key)
        *group, word = study.cli_words()
        target = _group(app, group[0]) if group else app
        target.command(word)(study_command(study))
        add_sweep(key)
        _SYNCED[key] = [(target, target.registered_commands[-1]), (sweep_app, sweep_app.registered_commands[-1])]


def _group(app: typer.Typer, name: str) -> typer.Typer:
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    raise RuntimeError(f"a study's command lies under `transferlab {name}`, which no cli/ module registers")


def _param(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _field_params(model: type[BaseModel] | None) -> list[inspect.Parameter]:
    """A Typer option (or argument) per field of a pydantic model: its name, type, default and description."""
    params = []
    for name, field in (model.model_fields if model is not None else {}).items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        if extra.get("argument"):
            info = typer.Argument(field.default, help=describe(field), show_default=False)
        else:
            flags = [str(f) for f in extra.get("flags") or [f"--{name.replace('_', '-')}"]]  # type: ignore[union-attr]
            info = typer.Option(field.default, *flags, help=describe(field))
        params.append(_param(name, info, field.annotation))
    return params


def _names(model: type[BaseModel] | None) -> list[str]:
    return [p.name for p in _field_params(model)]


def study_command(study: Study[Any, Any]) -> Any:
    """The Typer command of one study, derived from its declaration."""
    common = [
        _param("preset", preset_option(study), str | None),
        _param("config", ConfigOpt, Path | None),
        _param("set_", SetOpt, list[str] | None),
        _param("store", StoreOpt, Path | None),
        *([_param("mirror", MirrorOpt, list[str] | None)] if study.live_mirrors else []),
        _param("json_out", JsonOpt, bool),
        _param("print_config", PrintConfigOpt, bool),
        _param("list_presets", ListPresetsOpt, bool),
        _param("explain", ExplainOpt, bool),
    ]
    own = [*_field_params(study.flags_cls), *_field_params(study.options_cls)]
    clash = {p.name for p in common} & {p.name for p in own}
    if clash or len({p.name for p in own}) < len(own):
        raise RuntimeError(f"{type(study).__name__}: a flag named twice ({', '.join(sorted(clash)) or 'own'})")

    def command(**kw: Any) -> None:
        run_study(study, kw)

    params = [*own, *common]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = study.cli_help or study.summary
    command.__name__ = study.command.replace("-", "_")
    return command


def run_study(study: Study[Any, Any], kw: dict[str, Any]) -> None:
    """parse -> config -> study.run -> print: the body of every study command."""
    from transferlab.core.paths import check_output_file
    from transferlab.store import Store

    json_out = kw["json_out"]
    begin(json_out)
    extra = None
    if study.flags_cls is not None:
        flags = study.flags_cls(**{k: kw[k] for k in _names(study.flags_cls)})
        listed = study.answer(flags)
        if listed is not None:
            emit_json(listed[0]) if json_out else _print(listed[1])
            return
        extra = study.config_values(flags, listing=kw["list_presets"] or kw["explain"])
    cfg = config_or_listing(study, preset=kw["preset"], config=kw["config"], overrides=kw["set_"],
                            list_presets=kw["list_presets"], print_config=kw["print_config"],
                            explain=kw["explain"], json_out=json_out, extra=extra)
    if cfg is None:
        return
    options = study.options(**{k: kw[k] for k in _names(study.options_cls)})
    store = Store(store_path(kw["store"]), mirrors=kw.get("mirror") or ())
    for name, field in study.options_cls.model_fields.items():  # output paths are checked before any work
        extra_f = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = str((extra_f.get("flags") or [f"--{name}"])[0])  # type: ignore[index]
        if extra_f.get("output_file") and getattr(options, name) is not None:
            check_output_file(getattr(options, name), flag)
    result = study.run(cfg, store, options)
    if json_out:
        emit_json(result.to_json())
    else:
        _print(study.result_lines(result))
    why = study.failure(result)
    if why:
        typer.echo(f"error: {why}", err=True)
        raise typer.Exit(1)


def _print(lines: list[str | Line]) -> None:
    for line in lines:
        if not isinstance(line, Line):
            typer.echo(line)
        elif line.note:
            say(line.text)
        elif line.markup:
            show(line.text)
        else:
            typer.echo(line.text)
