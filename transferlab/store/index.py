"""index.sqlite: one row per run, for `transferlab runs ls` and sweep bookkeeping.

Many processes share one store (``transfer`` with ``workers=2``, Ray trials, two terminals), so the
index is written under contention as a matter of course. Three rules keep that honest:

- **Contention is waited out, never called damage.** Every statement runs in a short transaction;
  a writer takes the write lock up front (``BEGIN IMMEDIATE``, so SQLite's busy handler applies and
  no read-to-write upgrade can fail), and an ``SQLITE_BUSY`` / "database is locked" answer is retried
  with a growing pause, for at most ``WAIT_S`` seconds in all. A wait longer than ``NOTE_S`` is noted
  once on stderr; a wait past ``WAIT_S`` is a :class:`IndexBusy` error that says so.
- **Only a file that is not a run index is "damaged"**: not a SQLite database, malformed, or a
  database without the ``runs`` table's columns. A read-only or full disk gets its own message.
- **Set-up happens once.** Journal mode (WAL, which lets readers run beside a writer) is persistent
  in the database file and the schema is ``IF NOT EXISTS``, so both are done once per process and
  index file, not on every connection. Every connection is closed when its statement is done.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
COLUMNS = frozenset({"id", "study", "sweep", "config_hash", "status", "created", "updated", "path", "summary"})

WAIT_S = 300.0  # the longest a statement waits for other processes in all
NOTE_S = 10.0  # a wait longer than this is noted on stderr (once per statement)
BUSY_TIMEOUT_S = 5.0  # SQLite's own busy handler, inside each try

_READY: set[tuple[str, int]] = set()  # (index path, pid) set up by this process

T = TypeVar("T")

_BUSY = ("database is locked", "database table is locked", "database is busy", "locking protocol")
_READONLY = ("readonly database", "read-only", "attempt to write a readonly")
_FULL = ("database or disk is full", "disk is full")


class IndexBusy(StoreError):
    """Other processes held the index for longer than the bounded wait."""


def _free_bytes(folder: Path) -> int:
    """Bytes free to this user where ``folder`` lives (SQLite reports a full disk in the WAL as an I/O error)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


class _Missing(Exception):
    """The runs table is gone: the file was replaced after this process set it up."""


def _is_busy(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PROTOCOL):
        return True
    msg = str(err).lower()
    return any(s in msg for s in _BUSY)


class Index:
    def __init__(self, root: Path):
        self.path = root / "index.sqlite"

    # ---- errors -------------------------------------------------------------
    def _damaged(self, why: str) -> StoreError:
        return StoreError(f"{self.path} is damaged or not a run index ({why})",
                          fix="rebuild it from the run folders with `transferlab runs repair`")

    def _error(self, err: sqlite3.Error) -> StoreError:
        """The one-line error for a non-contention SQLite failure."""
        msg = str(err)
        low = msg.lower()
        if any(s in low for s in _READONLY) or "unable to open" in low:
            return StoreError(f"cannot write the run index {self.path} ({msg})",
                              fix="make the store writable (the folder and index.sqlite) or pass another --store")
        if any(s in low for s in _FULL) or ("disk i/o error" in low and _free_bytes(self.path.parent) < 1 << 20):
            return StoreError(f"the disk is full: could not write the run index {self.path} ({msg})",
                              fix="free some space; the run folders are intact, and `transferlab runs repair` "
                                  "brings the index up to date afterwards")
        if "disk i/o error" in low:
            return StoreError(f"reading or writing {self.path} failed ({msg})",
                              fix="check the disk and free space, then `transferlab runs repair`")
        return self._damaged(msg)

    # ---- connections --------------------------------------------------------
    def _attempt(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            if not write:
                return work(con)
            con.execute("BEGIN IMMEDIATE")
            try:
                out = work(con)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            return out
        finally:
            con.close()

    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``work`` in one short transaction, waiting out other processes for at most ``WAIT_S``."""
        self._ensure()
        try:
            return self._retry(lambda: self._attempt(work, write))
        except _Missing:  # the file was replaced since this process set it up (a repair, a deletion)
            self.forget_setup()
            self._ensure()
            return self._retry(lambda: self._attempt(work, write))

    def _retry(self, attempt: Callable[[], T]) -> T:
        t0 = time.monotonic()
        pause, noted = 0.01, False
        while True:
            try:
                return attempt()
            except sqlite3.Error as err:
                if "no such table: runs" in str(err):
                    raise _Missing() from None
                if not _is_busy(err):
                    raise self._error(err) from None
                waited = time.monotonic() - t0
                if waited >= WAIT_S:
                    raise IndexBusy(
                        f"the run index {self.path} stayed locked by other processes for {waited:.0f} s",
                        fix="another process holds it in a long transaction: find it (`fuser index.sqlite`) "
                            "or retry when it is done; nothing was lost",
                    ) from None
                if waited >= NOTE_S and not noted:
                    print(f"note: waiting for other processes to release the run index {self.path} "
                          f"({waited:.0f} s so far; at most {WAIT_S:.0f} s)", file=sys.stderr)
                    noted = True
                time.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 1.0)

    def _ensure(self) -> None:
        """Journal mode and schema, once per process and index file."""
        key = (str(self.path.absolute()), os.getpid())
        if key in _READY:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the store folder {self.path.parent} ({err.strerror})",
                             fix="make it writable or pass another --store") from None

        def setup() -> None:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")  # persistent: the next connections find it set
                cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                if not cols:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        for statement in SCHEMA.split(";"):
                            if statement.strip():
                                con.execute(statement)
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                elif not COLUMNS <= cols:
                    raise self._damaged(f"its runs table lacks {', '.join(sorted(COLUMNS - cols))}")
            finally:
                con.close()

        self._retry(setup)
        _READY.add(key)

    # ---- queries ------------------------------------------------------------
    def _query(self, q: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        rows = self._run(lambda con: [dict(r) for r in con.execute(q, args)], write=False)
        for r in rows:
            try:
                r["summary"] = json.loads(r["summary"]) if r["summary"] else None
            except json.JSONDecodeError:
                r["summary"] = None
        return rows

    def delete(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        self._run(lambda con: con.executemany("DELETE FROM runs WHERE id=?", [(i,) for i in run_ids]),
                  write=True)

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
        row = (run_id, study, sweep, config_hash, status, now, now, path,
               None if summary is None else json.dumps(summary, default=str))
        self._run(lambda con: con.execute(
            """INSERT INTO runs(id, study, sweep, config_hash, status, created, updated, path, summary)
               VALUES(?,?,?,?,?,?,?,?,?)
               ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated=excluded.updated,
                   sweep=COALESCE(excluded.sweep, runs.sweep),
                   summary=COALESCE(excluded.summary, runs.summary)""", row), write=True)

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

    def forget_setup(self) -> None:
        """Set the index up again on next use (after ``runs repair`` moved a damaged one aside)."""
        _READY.discard((str(self.path.absolute()), os.getpid()))
