"""index.sqlite: one row per run, for `transferlab runs ls` and sweep bookkeeping."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

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
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(SCHEMA)
        return con

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
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            out = [dict(r) for r in con.execute(q, args)]
        for r in out:
            r["summary"] = json.loads(r["summary"]) if r["summary"] else None
        return out

    def get(self, run_id: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute("SELECT * FROM runs WHERE id LIKE ?", (run_id + "%",))]
        if len(rows) != 1:
            return None
        r = rows[0]
        r["summary"] = json.loads(r["summary"]) if r["summary"] else None
        return r
