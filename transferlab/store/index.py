"""index.sqlite: one row per run, for `transferlab runs ls` and sweep bookkeeping."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from transferlab.core.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    sweep TEXT,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    path TEXT NOT NULL,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep);
"""


class Index:
    def __init__(self, root: Path):
        self.path = root / "index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=60)
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is damaged or not a run index ({err})",
                             fix="rebuild it from the run folders with `transferlab runs repair`") from None
        return con

    def _query(self, q: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        try:
            with self._connect() as con:
                con.row_factory = sqlite3.Row
                rows = [dict(r) for r in con.execute(q, args)]
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is damaged or not a run index ({err})",
                             fix="rebuild it from the run folders with `transferlab runs repair`") from None
        for r in rows:
            try:
                r["summary"] = json.loads(r["summary"]) if r["summary"] else None
            except json.JSONDecodeError:
                r["summary"] = None
        return rows

    def delete(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        with self._connect() as con:
            con.executemany("DELETE FROM runs WHERE id=?", [(i,) for i in run_ids])

    def upsert(
        self,
        run_id: str,
        *,
        study: str,
        config_hash: str,
        status: str,
        path: str,
        sweep: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self._connect() as con:
            con.execute(
                """INSERT INTO runs(id, study, sweep, config_hash, status, created, updated, path, summary)
                   VALUES(?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated=excluded.updated,
                       sweep=COALESCE(excluded.sweep, runs.sweep),
                       summary=COALESCE(excluded.summary, runs.summary)""",
                (run_id, study, sweep, config_hash, status, now, now, path,
                 None if summary is None else json.dumps(summary, default=str)),
            )
        return None

    def rows(self, study: str | None = None, sweep: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        q, args = "SELECT * FROM runs WHERE 1=1", []
        if study:
            q += " AND study=?"
            args.append(study)
        if sweep:
            q += " AND sweep=?"
            args.append(sweep)
        q += " ORDER BY created"
        return self._query(q, args)

    def get(self, run_id: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        rows = self._query("SELECT * FROM runs WHERE id LIKE ?", (run_id.replace("%", "") + "%",))
        if len(rows) != 1:
            return None
        return rows[0]
