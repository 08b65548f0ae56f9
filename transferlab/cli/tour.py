"""`transferlab tour`: every section of the chapter, run at one scale, on one offline page."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from transferlab.cli.common import JsonOpt, StoreOpt, begin, check_paths, emit_json, say, show, store_path


def register(app: typer.Typer) -> None:
    from transferlab.tour.sections import SECTIONS, scales

    listing = "; ".join(f"{s.name} ({s.title})" for s in SECTIONS)
    choices = ", ".join(scales())

    @app.command("tour")
    def tour(
        sections: Optional[List[str]] = typer.Option(
            None, "--sections", help=f"Run only these sections (repeatable or comma-separated): {listing}."),
        scale: str = typer.Option("mini", "--scale", help=f"The presets every study runs at: {choices} (mini: the "
                                  "ones to run first: 8 min on 2 cores from an empty store, measured; micro: "
                                  "test-sized)."),
        out: Optional[Path] = typer.Option(None, "--out", help="The page's path (default: "
                                           "STORE/tour/tour-SCALE.html)."),
        zoo: Optional[Path] = typer.Option(None, "--zoo", help="Zoo folder (default: STORE/zoo)."),
        print_plan: bool = typer.Option(False, "--print-plan", help="Print what the tour would run (each "
                                        "section's commands, their configs validated, and which the store already "
                                        "holds done), then exit without running or writing anything."),
        store: Optional[Path] = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Run every study's mini preset and write one offline page that reads like the chapter on transfer
        learning and generalization. What the store holds is reused; an interrupted tour resumes. A failing
        section does not lose the others: it is shown with its rerun command, and the tour exits 1."""
        begin(json_out)
        from transferlab.tour.run import check_scale, check_sections, run_tour

        check_sections(sections)
        check_scale(scale)
        if print_plan:
            from rich.markup import escape

            from transferlab.tour.run import plan_tour

            plan = plan_tour(store_path(store), sections=sections, scale=scale)
            if json_out:
                emit_json(plan)
                return
            for sec in plan["sections"]:
                show(f"[bold]{sec['name']}[/bold] ({sec['title']}, ~{sec['expected_s']:.0f} s from an empty store)")
                for st in sec["steps"]:
                    mark = {True: "done", False: "to run", None: ""}[st["done"]]
                    show(f"  {mark:<7} {escape(st['command'])}")
            show(f"scale {plan['scale']}: ~{plan['expected_s']:.0f} s on 2 cores from an empty store")
            return
        check_paths(store, out, "--out")
        res = run_tour(store_path(store), sections=sections, scale=scale, out=out, zoo_root=zoo)
        if json_out:
            emit_json(res)
        else:
            for r in res["sections"]:
                mark = "[green]done[/green]" if r["status"] == "done" else "[red]failed[/red]"
                show(f"{r['name']:<13} {mark} {r['seconds']:7.1f} s")
            show(f"page: {res['page']}  ({res['wall_s']:.0f} s)")
        for r in res["sections"]:
            if r["status"] != "done":
                say(f"[red]section {r['name']} failed:[/red] {r.get('error')}\n  rerun: {r.get('rerun')}")
        if res["failed"]:
            raise typer.Exit(1)
