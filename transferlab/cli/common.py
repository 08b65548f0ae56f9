"""What every CLI command shares: the option objects (--store, --json, --set, --config, ...), JSON output, the
front of a study command (``config_or_listing``), quiet progress."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from transferlab.core import progress
from transferlab.core.paths import default_store

StoreOpt = typer.Option(None, "--store", help="Run store folder (default: $TRANSFERLAB_HOME or ./runs).")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")
ConfigOpt = typer.Option(None, "--config", help="YAML file of config keys.")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set key=value (repeatable).")
MirrorOpt = typer.Option(None, "--mirror", help="Also log live to tensorboard or mlflow, inside the store "
                         "(repeatable; needs the package: pip install 'transferlab[tensorboard]' / '[mlflow]').")


def store_path(store: Optional[Path]) -> Path:
    return Path(store) if store is not None else default_store()


def begin(json_out: bool) -> None:
    """Machine-read output gets no progress bars mixed into the terminal."""
    progress.set_quiet(json_out or not sys.stderr.isatty())


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            return _clean(x.item())
        except (ValueError, AttributeError):
            pass
    return x


def emit_json(obj: Any) -> None:
    """Strict JSON on stdout (NaN/Inf become null)."""
    typer.echo(json.dumps(_clean(obj), indent=2, sort_keys=False))


def show(text: str) -> None:
    """A result line on standard output (rich markup allowed; user strings must be escaped). Progress and
    notes go to standard error through ``say``: results on stdout, everything else on stderr."""
    from rich.console import Console

    global _STDOUT
    if _STDOUT is None:
        _STDOUT = Console(highlight=False, soft_wrap=True)
    _STDOUT.print(text)


_STDOUT: Any = None


def say(text: str) -> None:
    progress.console.print(text)


EXPLAIN_HELP = "Print every config key with its type, default and description, and exit."
ExplainOpt = typer.Option(False, "--explain", help=EXPLAIN_HELP)
ListPresetsOpt = typer.Option(False, "--list-presets", help="List the presets and exit.")
PrintConfigOpt = typer.Option(False, "--print-config", help="Print the resolved config and exit.")


def preset_help(study: Any) -> str:
    """The presets of a study (or a PresetRegistry), from its registry, the default marked."""
    presets = getattr(study, "presets", study)
    default = getattr(study, "default_preset", None)
    names = [f"{n} (default)" if n == default and n != "default" else n for n in presets.names()]
    return f"{' | '.join(names)} (see --list-presets)."


def preset_option(study: Any) -> Any:
    """``--preset``, its help listing the study's presets from its PresetRegistry."""
    return typer.Option(None, "--preset", help="Named preset: " + preset_help(study))


def config_or_listing(
    cls: Any,
    presets: Any = None,
    *,
    preset: Optional[str],
    config: Optional[Path],
    overrides: Optional[list[str]],
    list_presets: bool,
    print_config: bool,
    json_out: bool,
    explain: bool = False,
    extra: dict[str, Any] | None = None,
    default_preset: Optional[str] = None,
) -> Any:
    """The shared front of a study command: answer --list-presets / --print-config / --explain, else return
    the resolved config (the default preset when the user named none; --set and files apply on top of it). Returns
    None when the command has already answered. ``cls`` is a study (``transferlab.studies.base.Study``: its config
    class, presets, default preset and ``make_config``) or a config class with ``presets`` and ``default_preset``;
    ``extra`` are values from the command's own flags, applied last."""
    from transferlab.core.config import resolve

    study = None
    if not isinstance(cls, type):
        study, cls, presets = cls, cls.config_cls, cls.presets

    if explain:
        rows = explain_fields(cls)
        if json_out:
            emit_json(rows)
        else:
            names = {r["key"]: r["key"] + (f" (or {r['flat']})" if "flat" in r else "") for r in rows}
            width = max(len(n) for n in names.values())
            for r in rows:
                typer.echo(f"{names[r['key']]:{width}s}  {r['type']}  (default: {r['default']})\n"
                           f"{'':{width}s}  {r['description']}")
        return None
    if list_presets:
        docs = {n: presets.doc(n) for n in presets.names()}
        if json_out:
            emit_json(docs)
        else:
            for n, d in docs.items():
                typer.echo(f"{n:24s} {d}")
        return None
    if study is not None:
        cfg = study.make_config(preset, overrides, config_file=config, values=extra)
    else:
        name = preset if preset is not None else default_preset
        cfg = resolve(cls, presets=presets, preset=name, config_file=config, overrides=overrides, extra=extra)
    if print_config:
        typer.echo(cfg.to_yaml())
        return None
    return cfg


def check_paths(store: Optional[Path] = None, out: Optional[Path] = None, out_flag: str = "--out") -> None:
    """Refuse a bad --store or --out/--report before any work, not after a long fit."""
    from transferlab.core.paths import check_output_file
    from transferlab.store import Store

    Store(store_path(store))
    if out is not None:
        check_output_file(out, out_flag)


def explain_fields(cls: Any, prefix: str = "") -> list[dict[str, str]]:
    """Every config key of a pydantic class (nested sub-configs as dotted keys, as --set takes them) with its
    type, default and description; a part's field also with its flat name (``optimizer.lr`` is also ``lr``)."""
    import typing

    from pydantic import BaseModel

    from transferlab.core.config import config_keys, describe

    flat = {path: name for name, path in config_keys(cls).paths.items() if len(path) == 2} if not prefix else {}
    rows: list[dict[str, str]] = []
    for name, f in cls.model_fields.items():
        if name == "preset":
            continue
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for row in explain_fields(ann, f"{prefix}{name}."):
                leaf = row["key"].removeprefix(f"{prefix}{name}.")
                if (name, leaf) in flat:
                    row["flat"] = flat[(name, leaf)]
                rows.append(row)
            continue
        default = f.get_default(call_default_factory=True)
        kind = getattr(ann, "__name__", None) if typing.get_origin(ann) is None else None
        rows.append({"key": prefix + name, "type": kind or str(ann).replace("typing.", ""),
                     "default": repr(default), "description": describe(f)})
    return rows
