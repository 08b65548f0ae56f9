"""docs/ARCHITECTURE.md's layer table is the architecture: every module lies under one of its rows, and every
import of one transferlab module by another points to a lower layer or stays in its own row."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_import_contract import ROOT, _imports

DOC = ROOT.parent / "docs" / "ARCHITECTURE.md"


def layer_table() -> dict[str, int]:
    """Row path (relative to the repository, a folder ending in / or a file) -> layer number."""
    return {path: layer for path, (layer, _) in table_rows().items()}


def table_rows() -> dict[str, tuple[int, int]]:
    """Row path -> (layer number, which line of the table): paths named in one row are one unit."""
    rows: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(DOC.read_text().splitlines()):
        m = re.match(r"^\| (\d+) \| (.+?) \| ", line)
        if not m:
            continue
        folder = ""
        for path in re.findall(r"`([^`]+)`", m.group(2)):
            if not path.startswith("transferlab/"):
                path = folder + path  # `studies/base.py`, `registry.py`: the second is beside the first
            folder = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
            rows[path] = (int(m.group(1)), number)
    return rows


def row_of(rel: str, rows: dict[str, int]) -> str | None:
    """The most specific row a file lies under (``transferlab/eft/`` and ``transferlab/studies/eft/`` differ)."""
    hits = [r for r in rows if rel == r or (r.endswith("/") and rel.startswith(r))]
    return max(hits, key=len) if hits else None


def module_file(module: str) -> str | None:
    base = ROOT.parent / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return str(cand.relative_to(ROOT.parent))
    return None


def test_the_table_has_the_layers_it_promises():
    rows = layer_table()
    assert rows["transferlab/core/"] == 1 and rows["transferlab/cli/"] == max(rows.values())
    assert rows["transferlab/studies/base.py"] == rows["transferlab/studies/registry.py"]
    assert rows["transferlab/studies/grokking/"] > rows["transferlab/studies/base.py"]


def test_every_module_is_in_the_table_and_every_import_points_down():
    rows = layer_table()
    line_of = {path: number for path, (_, number) in table_rows().items()}
    unplaced, upward = [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT.parent))
        if rel in ("transferlab/__init__.py", "transferlab/studies/__init__.py"):
            continue  # package markers: the version, and the studies namespace
        own = row_of(rel, rows)
        if own is None:
            unplaced.append(rel)
            continue
        for line, module, names in _imports(path):
            if not module.startswith("transferlab"):
                continue
            targets = [module_file(f"{module}.{n}") for n in names] if names else []
            targets = [t for t in targets if t] or [module_file(module)]
            for target in targets:
                if target is None or target == "transferlab/__init__.py":
                    continue
                other = row_of(target, rows)
                if other is None:
                    unplaced.append(target)
                elif line_of[other] != line_of[own] and rows[other] >= rows[own]:
                    upward.append(f"{rel}:{line} (layer {rows[own]}) imports {module} ({other}, layer {rows[other]})")
    assert not unplaced, "modules under no row of docs/ARCHITECTURE.md's table:\n" + "\n".join(sorted(set(unplaced)))
    assert not upward, "imports that do not point down the layers of docs/ARCHITECTURE.md:\n" + "\n".join(upward)
