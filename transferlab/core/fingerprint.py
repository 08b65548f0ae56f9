"""Content fingerprints of the files a run reads, so that a run keys on what it read, not on where it was.

``fingerprint(path)`` is the sha256 of a file's bytes, or for a folder the sha256 of every file's relative name
and sha256 (hidden files left out). Hashing is paid once per file and process: a file's hash is kept in memory
with its size and ``mtime_ns`` and recomputed when either changes (re-saving data at the same path changes its
mtime, so it is hashed again; a file changed in place within the same nanosecond and size is the one case not
seen, as for make and rsync).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MISSING = "missing"

_CACHE: dict[str, tuple[int, int, str]] = {}  # absolute path -> (size, mtime_ns, sha256)


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = str(path.absolute())
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    sha = h.hexdigest()
    _CACHE[key] = (st.st_size, st.st_mtime_ns, sha)
    return sha


def fingerprint(path: str | Path) -> str:
    """The sha256 of a file's content, or of a folder's files (names relative to it, and their sha256);
    ``"missing"`` when nothing is there (the run that reads it will say so)."""
    p = Path(path)
    if p.is_file():
        return _file_sha256(p)
    if not p.is_dir():
        return MISSING
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            f = Path(root) / name
            if f.is_file():
                h.update(f"{f.relative_to(p).as_posix()}\0{_file_sha256(f)}\n".encode())
    return h.hexdigest()
