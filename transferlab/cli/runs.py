"""`transferlab runs ls | show ID | report ID | mirror | repair`: what is in the store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from transferlab.cli.common import JsonOpt, StoreOpt, begin, emit_json, store_path
from transferlab.core.errors import TransferlabError
from transferlab.store import Store

runs_app = typer.Typer(help="List, inspect and report runs in the store.", no_args_is_help=True,
                        rich_markup_mode="markdown")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def child_studies() -> set[str]:
    """Runs that studies make for their own use (zoo models, cached features, baselines), as each Study declares
    them: hidden unless --all."""
    from transferlab.studies.registry import get_study, study_names

    return {c for n in study_names() for c in get_study(n).child_studies}


def stored_study(name: str | None) -> str | None:
    """The folder a study's runs are stored under, from any of its names (the registry: ``grok`` -> the
    ``name`` of its Study class); a name no study has (``lm``, ``w2s-baseline``, ...) is taken as stored."""
    from transferlab.core.errors import ConfigError
    from transferlab.studies.registry import stored_name

    if name is None:
        return None
    try:
        return stored_name(name)
    except ConfigError:
        return name


@runs_app.command("ls")
def ls(
    study: Optional[str] = typer.Option(None, "--study", help="Only runs of this study (its command or stored "
                                        "name: grok or grokking, w2s, ...)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Only runs of this sweep."),
    all_runs: bool = typer.Option(False, "--all", help="Also the runs studies make for themselves (zoo models, "
                                  "cached features, baselines)."),
    store: Optional[Path] = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """One line per run: id, study, status, updated, sweep (with a header)."""
    from transferlab.store import lock

    begin(json_out)
    st = Store(store_path(store))
    study = stored_study(study)
    rows = st.index.rows(study=study, sweep=sweep)
    for r in rows:  # a run whose process was killed still says running in the index
        if r["status"] == "running" and not lock.held_elsewhere(Path(r["path"])):
            r["status"] = "interrupted"
    if not rows and st.run_folders() and not (study or sweep):
        from transferlab.core.errors import StoreError

        raise StoreError(f"the index of {st.root} lists no runs but {len(st.run_folders())} run folders exist",
                         where=str(st.index.path), fix="rebuild it with `transferlab runs repair`")
    if not (all_runs or study):
        hidden = child_studies()
        rows = [r for r in rows if r["study"] not in hidden]
    if json_out:
        emit_json([{k: r[k] for k in ("id", "study", "sweep", "status", "created", "updated", "path")}
                   for r in rows])
        return
    if rows:
        typer.echo(f"{'id':16s}  {'study':13s} {'status':11s} {'updated':16s}  sweep")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["updated"]).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{r['id']}  {r['study']:13s} {r['status']:11s} {when}  {r['sweep'] or ''}")


@runs_app.command("show")
def show(run_id: str, store: Optional[Path] = StoreOpt, json_out: bool = JsonOpt) -> None:
    """The run's config and summary."""
    begin(json_out)
    run = Store(store_path(store)).find(run_id)
    out = {"id": run.id, "study": run.study, "path": str(run.path), "status": run.status,
           "config": run.config(), "summary": run.summary()}
    if json_out:
        emit_json(out)
    else:
        typer.echo(json.dumps(out, indent=2, default=str))


@runs_app.command("report")
def report(run_id: str, store: Optional[Path] = StoreOpt, json_out: bool = JsonOpt) -> None:
    """(Re)write the run's HTML report and print its path."""
    from transferlab.core.errors import StoreError
    from transferlab.studies.registry import get_study

    begin(json_out)
    st = Store(store_path(store))
    run = st.find(run_id)
    try:
        study = get_study(run.study)
    except TransferlabError:
        raise StoreError(f"run {run.id} is a '{run.study}' run, which a study makes for its own use and which has "
                         "no report of its own", fix=f"open {run.path}") from None
    path = study.write_run_report(run, st)
    if json_out:
        emit_json({"report": str(path)})
    else:
        typer.echo(str(path))


@runs_app.command("mirror")
def mirror(
    run_ids: Optional[list[str]] = typer.Argument(None, help="Run ids (or unique prefixes); all runs when left out."),
    to: list[str] = typer.Option(..., "--to", help="tensorboard or mlflow (repeatable)."),
    study: Optional[str] = typer.Option(None, "--study", help="Only runs of this study."),
    store: Optional[Path] = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Copy runs from the store into TensorBoard or MLflow (inside the store), replacing earlier copies."""
    from transferlab.store.mirrors import export_run, make_mirrors

    begin(json_out)
    st = Store(store_path(store))
    study = stored_study(study)
    runs = [st.find(r) for r in run_ids] if run_ids else [st.find(r["id"]) for r in st.index.rows(study=study)]
    runs = [r for r in runs if study is None or r.study == study]
    mirrors = make_mirrors(to, st.root, "--to")  # bad ids, names or missing packages fail before any write
    for run in runs:
        for m in mirrors:
            export_run(run, m)
    out = {"runs": [r.id for r in runs], "mirrors": {m.name: m.location for m in mirrors}}
    if json_out:
        emit_json(out)
    else:
        typer.echo(f"mirrored {len(runs)} run(s): " + ", ".join(f"{k} -> {v}" for k, v in out["mirrors"].items()))


@runs_app.command("repair")
def repair(store: Optional[Path] = StoreOpt, json_out: bool = JsonOpt) -> None:
    """Rebuild index.sqlite from the run folders (a lost or damaged index hides runs from `runs ls`)."""
    begin(json_out)
    out = Store(store_path(store)).repair()
    if json_out:
        emit_json(out)
        return
    typer.echo(f"indexed {out['runs']} run(s) in {out['index']}"
               + (f"; removed {len(out['removed'])} entries without a folder" if out["removed"] else ""))
    if out["broken_index_kept_at"]:
        typer.echo(f"the damaged index was kept at {out['broken_index_kept_at']}")
    for line in out["damaged"]:
        typer.echo(f"damaged: {line}")
