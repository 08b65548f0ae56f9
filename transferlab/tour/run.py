"""Run the tour: every selected section's study runs (reused from the store when done, resumed when interrupted),
one offline page, and the ``--json`` contract. A failing section is recorded with its error and rerun command;
the others go on."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

from transferlab.core.errors import ConfigError, TransferlabError
from transferlab.core.progress import progress_group, say
from transferlab.store import Store
from transferlab.tour.sections import SECTIONS, Context, Section, Step, scales, section_names


def check_sections(names: list[str] | None) -> list[Section]:
    """The sections asked for, in the chapter's order; one ConfigError with a suggestion for an unknown name."""
    import difflib

    if not names:
        return list(SECTIONS)
    known = section_names()
    wanted: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"unknown section '{name}'", where="--sections",
                                  fix=f"{hint}choose from: {', '.join(known)}")
            wanted.append(name)
    return [s for s in SECTIONS if s.name in wanted]


def check_scale(scale: str) -> str:
    import difflib

    choices = scales()
    if scale not in choices:
        close = difflib.get_close_matches(scale, choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown scale '{scale}'", where="--scale", fix=f"{hint}choose from: {', '.join(choices)}")
    return scale


def run_step(step: Step, ctx: Context) -> dict[str, Any]:
    """One study run or sweep through the registry and the study's own run cache."""
    from transferlab.store.run import Run
    from transferlab.studies.registry import get_study

    study = get_study(step.study)
    cfg = study.make_config(step.preset_for(ctx.scale), step.overrides_for(ctx.scale))
    out: dict[str, Any] = {"study": study.command, "command": step.command(ctx.scale), "why": step.why}
    if step.grid:
        from transferlab.sweep.runner import run_sweep

        res = run_sweep(cfg, {k: list(v) for k, v in step.grid.items()}, ctx.store, seeds=step.seeds, study=study)
        if not study.sweep_report(res, ctx.store, list(step.grid)):  # the study's own sweep page, as the CLI's
            from transferlab.sweep.report import write_generic_sweep_report

            res["report"] = str(write_generic_sweep_report(res, ctx.store, list(step.grid), study.name))
        out.update(sweep=res, report=res.get("report"))
        return out
    values: dict[str, Any] = {"report": True}
    if ctx.zoo_root is not None and "zoo_root" in study.options_cls.model_fields:
        values["zoo_root"] = ctx.zoo_root
    result = study.run(cfg, ctx.store, study.options(**values))
    out.update(summary=result.data, view=result.to_json(), report=result.report, run_id=result.run_id,
               config=cfg.to_dict())
    if result.run_id is not None:
        out["records"] = Run(ctx.store, study.name, result.run_id).metrics()
    return out


def run_section(section: Section, ctx: Context) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for step in section.steps:
        data[step.key] = run_step(step, ctx)
    if section.extra is not None:
        data.update(section.extra(ctx))
    return data


class _Ticker:
    """Moves the section's bar (and the tour's) along its expected seconds, so rich shows an ETA for each."""

    def __init__(self, prog: Any, task: Any, total_task: Any, base: float, expected: float):
        self.prog, self.task, self.total_task, self.base, self.expected = prog, task, total_task, base, expected
        self.t0 = time.perf_counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            done = min(time.perf_counter() - self.t0, 0.99 * self.expected)
            self.prog.update(self.task, completed=done)
            self.prog.update(self.total_task, completed=self.base + done)

    def __enter__(self) -> _Ticker:
        if self.prog is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.prog is not None:
            self.thread.join()


def run_tour(store: Store | str | Path, sections: list[str] | None = None, scale: str = "mini",
             out: str | Path | None = None, zoo_root: str | Path | None = None) -> dict[str, Any]:
    """Run the selected sections at ``scale`` and write the page. Returns the ``--json`` contract: ``page``,
    ``wall_s``, ``sections`` (``name``, ``status`` done | failed, ``seconds``, and for a failed one its
    ``error`` and ``rerun`` command), ``scale``, ``failed`` (names)."""
    from transferlab.store.run import abandon_open_runs
    from transferlab.tour.page import write_page

    chosen = check_sections(sections)
    check_scale(scale)
    store = store if isinstance(store, Store) else Store(store)
    page = Path(out) if out is not None else store.root / "tour" / f"tour-{scale}.html"
    ctx = Context(store, scale, Path(zoo_root) if zoo_root is not None else None)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    expected = {s.name: float(s.expected_s.get(scale, 60.0)) for s in chosen}
    with progress_group() as prog:
        total_task = prog.add_task("tour", total=sum(expected.values()), info="") if prog is not None else None
        base = 0.0
        for i, sec in enumerate(chosen, 1):
            label = f"[{i}/{len(chosen)}] {sec.title}"
            task = prog.add_task(label, total=expected[sec.name], info=f"~{expected[sec.name]:.0f} s") \
                if prog is not None else None
            ts = time.perf_counter()
            row: dict[str, Any] = {"name": sec.name, "title": sec.title}
            try:
                with _Ticker(prog, task, total_task, base, expected[sec.name]):
                    results[sec.name] = run_section(sec, ctx)
                row["status"] = "done"
            except KeyboardInterrupt:
                raise
            except Exception as err:  # a failing section is recorded; the others go on
                line = err.one_line() if isinstance(err, TransferlabError) else " ".join(
                    f"{type(err).__name__}: {err}".split())[:400]
                abandon_open_runs(f"tour section {sec.name}: {line}")
                row.update(status="failed", error=line, traceback=traceback.format_exc(limit=6),
                           rerun=rerun_command(sec.name, scale, store.root, page if out is not None else None))
                say(f"[red]tour: section {sec.name} failed[/red]: {line}")
            row["seconds"] = time.perf_counter() - ts
            base += expected[sec.name]
            if prog is not None:
                prog.update(task, completed=expected[sec.name], info=f"{row['status']} in {row['seconds']:.0f} s")
                prog.update(total_task, completed=base)
            rows.append(row)
    path = write_page(page, chosen, results, rows, scale, store)
    wall = time.perf_counter() - t0
    return {"page": str(path), "wall_s": wall, "scale": scale,
            "sections": [{k: r[k] for k in ("name", "status", "seconds", "error", "rerun") if k in r} for r in rows],
            "failed": [r["name"] for r in rows if r["status"] == "failed"]}


def plan_tour(store: str | Path, sections: list[str] | None = None, scale: str = "mini") -> dict[str, Any]:
    """What ``tour`` would run, without running or writing anything: per section, each step's command (its
    config validated) and whether the store already holds it done (sweeps and the extra computations are
    reported as commands only). ``tour --print-plan``."""
    chosen = check_sections(sections)
    check_scale(scale)
    root = Path(store)
    st = Store(root) if (root / "index.sqlite").is_file() else None  # an empty store is not created
    out = []
    for sec in chosen:
        steps = []
        for step in sec.steps:
            from transferlab.studies.registry import get_study

            study = get_study(step.study)
            cfg = study.make_config(step.preset_for(scale), step.overrides_for(scale))
            done = None if step.grid else (st is not None and st.done(study.name, cfg) is not None)
            steps.append({"command": step.command(scale), "why": step.why, "done": done})
        if sec.extra_command is not None:
            steps.append({"command": sec.extra_command(scale), "why": "computed by the tour", "done": None})
        out.append({"name": sec.name, "title": sec.title, "expected_s": float(sec.expected_s.get(scale, 60.0)),
                    "steps": steps})
    return {"scale": scale, "store": str(root), "sections": out,
            "expected_s": sum(s["expected_s"] for s in out)}


def rerun_command(name: str, scale: str, store: Path, out: Path | None = None) -> str:
    import shlex

    cmd = f"transferlab tour --sections {name} --scale {scale} --store {shlex.quote(str(store))}"
    return cmd + (f" --out {shlex.quote(str(out))}" if out is not None else "")
