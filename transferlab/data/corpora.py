"""Text corpora that need no download, plus the user's own text files or a saved HF dataset.

Built-in corpora are made from the Python source that exists wherever the project is installed:

1. the running interpreter's standard library (``sysconfig``'s ``stdlib`` folder), and
2. the ``.py`` files of the installed distributions the project depends on: the closure of
   transferlab's requirements with its ``hf`` extra (torch, transformers, numpy, scipy, pandas,
   scikit-learn, sympy, ... and what they require), as far as they are installed.

- ``prose``: English prose, i.e. every docstring (``ast.get_docstring``) and every comment (``#`` stripped;
  shebang, ``coding:``, ``noqa``/``type:`` pragmas and rulers dropped), in source order, one file per document.
- ``code``: the same files with docstrings and comments stripped: docstrings are removed from the AST and
  the module is re-emitted with ``ast.unparse`` (which drops comments and normalizes formatting).
- ``source``: the same files (the same selection and deduplication) as they are, one document each: prose and
  code interleaved, in the original formatting. No model trained on ``prose`` and ``code`` has seen a docstring
  under its ``def`` or a comment beside its line; the EFT demo fine-tunes on this format.

Selection (deterministic): the stdlib's files in sorted order of their relative POSIX path, then each
distribution in sorted order of its normalized name, its files in sorted order (from its RECORD). Skipped:
test suites (``test``, ``tests``, ``idle_test``, ``testing``, ``test_*.py``), ``site-packages`` inside the
stdlib, ``__pycache__``, vendored copies (``_vendor``, ``vendor``, ``vendored``, ``_vendored``, ``extern``,
``_extern``, ``third_party``), and any file whose bytes equal an earlier file's (deduplication by sha256).
Files that do not parse are skipped and counted. Train/validation split by file: a file is in
validation when ``int(sha256(key), 16) % 100 < val_percent``, where the key is ``stdlib/<path>`` or
``<distribution>/<path>``, so the split never depends on the file order or the machine.

The corpus therefore depends on the Python version and on the installed versions of those
distributions: :func:`source_manifest` lists them, the corpus key hashes that list, and the
corpus's ``info`` records it with a content fingerprint. The same installed versions give the same
corpus bit for bit. Extraction takes minutes for the full corpus (2 processes), so the extracted
text is cached (``cache_dir``, the zoo's ``corpora/`` folder).

Part of a built-in corpus by source: ``code[sympy]`` is the code of the ``sympy`` distribution only,
``code[^sympy]`` everything else, ``prose[stdlib,numpy]`` the prose of the stdlib and numpy (sources are
``stdlib`` and the normalized distribution names, as in the documents' keys ``stdlib/<path>`` and
``<distribution>/<path>``). A part keeps each file's train/validation split. The EFT demo pretrains on
``prose+code[^sympy]`` and fine-tunes on ``code[sympy]``: a code domain the bases have never seen.

Users bring ``files:GLOB`` (text files, split the same way by their path relative to the
glob's fixed prefix) or ``hf:PATH[:COLUMN]`` (a dataset saved with ``save_to_disk``; its
``train``/``validation`` splits when it has them, else split by row index hash).
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.core.errors import DataError

BUILTIN = ("prose", "code")  # extracted together, from one parse of every file
SOURCE = "source"  # the same files as they are: docstrings and comments inside the code
PROCESSING_VERSION = "v2"
SKIP_PARTS = {"test", "tests", "idle_test", "testing", "site-packages", "dist-packages", "__pycache__"}
VENDORED_PARTS = {"_vendor", "vendor", "vendored", "_vendored", "extern", "_extern", "third_party"}
_PRAGMAS = ("noqa", "type:", "pragma", "fmt:", "pylint:")
# the project's own distribution; its requirements (with the ``hf`` extra) seed the corpus
ROOT_DISTRIBUTION = "transferlab"
CORPUS_EXTRAS = ("hf",)


@dataclass
class Corpus:
    """A corpus split into documents: ``train`` and ``val`` lists of strings."""

    name: str
    train: list[str]
    val: list[str]
    fingerprint: str  # identity of the content (changes when the source or its processing changes)
    info: dict[str, Any] = field(default_factory=dict)
    # the built-in corpora's per-document keys (``stdlib/<path>`` / ``<distribution>/<path>``), train and val
    keys: tuple[list[str], list[str]] | None = field(default=None, repr=False)

    def chars(self) -> tuple[int, int]:
        return sum(map(len, self.train)), sum(map(len, self.val))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def in_val(key: str, val_percent: float) -> bool:
    """The split rule: sha256 of the key (a relative path or row id) mod 100 < val_percent."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100 < val_percent


def _skipped(parts: tuple[str, ...]) -> bool:
    dirs = set(parts[:-1])
    return bool(SKIP_PARTS & dirs or VENDORED_PARTS & dirs) or parts[-1].startswith("test_")


def stdlib_files(root: Path | None = None, max_files: int | None = None) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of the stdlib's ``*.py`` files, sorted, test suites skipped."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise DataError(f"standard library folder {root} not found", fix="pass root= an existing folder")
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if _skipped(rel.parts) or not p.is_file():
            continue
        out.append((rel.as_posix(), p))
    out.sort(key=lambda t: t[0])
    return out[:max_files] if max_files else out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def corpus_distributions() -> list[tuple[str, str]]:
    """(normalized name, version) of the installed distributions that feed the built-in corpora: the
    closure of transferlab's requirements with the ``hf`` extra, sorted by name (transferlab itself is
    left out: its source changes with every commit)."""
    import importlib.metadata as md

    from packaging.requirements import InvalidRequirement, Requirement

    dists: dict[str, Any] = {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if name:
            dists.setdefault(_norm(name), d)
    seen: set[str] = set()
    if ROOT_DISTRIBUTION not in dists:
        return []
    todo = [(ROOT_DISTRIBUTION, CORPUS_EXTRAS)]
    while todo:
        name, extras = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for r in dists[name].requires or []:
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((_norm(req.name), tuple(req.extras)))
    seen.discard(ROOT_DISTRIBUTION)
    return sorted((n, dists[n].version) for n in seen)


def distribution_files(name: str) -> list[tuple[str, Path]]:
    """(``<name>/<path>``, path) of one installed distribution's ``.py`` files, sorted, skips applied."""
    import importlib.metadata as md

    for d in md.distributions():
        if d.metadata["Name"] and _norm(d.metadata["Name"]) == name:
            break
    else:
        return []
    out = []
    for f in d.files or []:
        parts = f.parts
        if not f.name.endswith(".py") or ".." in parts or _skipped(tuple(parts)):
            continue
        p = Path(d.locate_file(f))
        if p.is_file():
            out.append((f"{name}/{f.as_posix()}", p))
    out.sort(key=lambda t: t[0])
    return out


def source_manifest(max_files: int | None = None) -> dict[str, Any]:
    """What feeds the built-in corpora: Python version, stdlib folder, distributions and versions."""
    return {
        "python": sys.version.split()[0],
        "stdlib": str(stdlib_root()),
        "distributions": [] if max_files else [f"{n}=={v}" for n, v in corpus_distributions()],
        "max_files": max_files,
        "processing": PROCESSING_VERSION,
    }


def source_files(max_files: int | None = None, root: Path | None = None) -> list[tuple[str, Path]]:
    """Every file of the built-in corpora in order: the stdlib, then the distributions. ``max_files`` keeps
    the first files of the stdlib only (for tests); ``root`` replaces the stdlib folder and drops the
    distributions (for tests)."""
    files = [(f"stdlib/{rel}", p) for rel, p in stdlib_files(root)]
    if max_files:
        return files[:max_files]
    if root is None:
        for name, _ in corpus_distributions():
            files.extend(distribution_files(name))
    return files


def _docstring_nodes(tree: ast.AST) -> list[ast.AST]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def _has_docstring(node: Any) -> bool:
    body = getattr(node, "body", None)
    return (
        bool(body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


# One pass over a source finds its string literals and its comments, so a '#' inside a string is never
# taken for a comment (the same comments as ``tokenize`` on the project's test files, 2.2x faster on torch).
_STRING_OR_COMMENT = re.compile(
    r"""(?P<s>[rRbBuUfFtT]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))"""
    r"|(?P<c>\#[^\r\n]*)",
    re.S,
)


def comments_of(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment, ``#`` kept."""
    out: list[tuple[int, str]] = []
    line, pos = 1, 0
    for m in _STRING_OR_COMMENT.finditer(source):
        if m.lastgroup == "c":
            line += source.count("\n", pos, m.start())
            pos = m.start()
            out.append((line, m.group()))
    return out


def _prose_from(tree: ast.AST, source: str) -> str:
    items: list[tuple[int, str]] = []
    for node in _docstring_nodes(tree):
        if _has_docstring(node):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                items.append((node.body[0].lineno, doc.strip() + "\n"))  # type: ignore[attr-defined]
    for lineno, raw in comments_of(source):
        text = raw.lstrip("#").strip()
        if (
            not text
            or raw.startswith("#!")
            or "coding" in text[:12]
            and ":" in text
            or text.startswith(_PRAGMAS)
            or set(text) <= set("-=#*~_ ")
        ):
            continue
        items.append((lineno, text))
    items.sort(key=lambda t: t[0])
    return "\n".join(t for _, t in items).strip()


def _code_from(tree: ast.AST) -> str:
    for node in _docstring_nodes(tree):
        if _has_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.unparse(tree).strip()


def prose_of(source: str) -> str:
    """Docstrings and comments of one Python source, in source order."""
    return _prose_from(ast.parse(source), source)


def code_of(source: str) -> str:
    """The source with docstrings removed (from the AST) and comments dropped (by ``ast.unparse``)."""
    return _code_from(ast.parse(source))


def extract(path: str | Path) -> tuple[str, str] | None:
    """(prose, code) of one file from a single parse, or None when it does not parse."""
    try:
        source = Path(path).read_bytes().decode("utf-8")
        tree = ast.parse(source)
        prose = _prose_from(tree, source)
        return prose, _code_from(tree)
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError, OSError):
        return None


def _extract_many(paths: list[str]) -> list[tuple[str, str] | None]:
    return [extract(p) for p in paths]


def _extract_parallel(paths: list[str], n: int) -> list[tuple[str, str] | None]:
    """``_extract_many`` in ``n`` worker processes (fresh interpreters: no fork of a process that runs
    torch's threads), each taking every n-th file; the results come back in the files' order."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tl-corpus-") as tmp:
        procs = []
        for i in range(n):
            src, dst = Path(tmp) / f"in{i}.json", Path(tmp) / f"out{i}.jsonl"
            src.write_text(json.dumps(paths[i::n]))
            code = "import sys; from transferlab.data.corpora import _worker; _worker(*sys.argv[1:])"
            cmd = [sys.executable, "-c", code, str(src), str(dst)]
            procs.append((subprocess.Popen(cmd), dst))
        parts = []
        for proc, dst in procs:
            if proc.wait() != 0:
                raise DataError("a corpus extraction worker failed", fix="run again; the corpus is rebuilt")
            with open(dst, encoding="utf-8") as f:
                parts.append([json.loads(line) for line in f])
    out: list[tuple[str, str] | None] = [None] * len(paths)
    for i, part in enumerate(parts):
        for j, r in enumerate(part):
            out[i + j * n] = None if r is None else (r[0], r[1])
    return out


def _worker(src: str, dst: str) -> None:
    with open(dst, "w", encoding="utf-8") as f:
        for p in json.loads(Path(src).read_text()):
            f.write(json.dumps(extract(p)) + "\n")


def builtin_key(val_percent: float, max_files: int | None, root: Path | None = None) -> str:
    """Identity of the built-in corpora before extracting anything: what feeds them and how."""
    blob = json.dumps(["builtin-v2", source_manifest(max_files), str(root or ""), val_percent], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_paths(cache_dir: Path, key: str) -> dict[str, Path]:
    return {k: cache_dir / key / f"{k}.jsonl" for k in BUILTIN} | {"info": cache_dir / key / "info.json"}


def builtin_corpora(
    *, val_percent: float = 10.0, max_files: int | None = None, root: Path | None = None,
    cache_dir: Path | None = None, workers: int | None = None,
) -> dict[str, Corpus]:
    """Both built-in corpora (``prose`` and ``code``), extracted from one parse of every file, and cached
    in ``cache_dir`` when given (see the module docstring)."""
    _check_percent(val_percent)
    key = builtin_key(val_percent, max_files, root)
    if cache_dir is not None:
        cached = _load_cached(Path(cache_dir), key)
        if cached is not None:
            return cached
    unique, n_files, duplicates = unique_source_files(max_files, root)
    paths = [str(p) for _, p in unique]
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, 2)
    results = _extract_parallel(paths, n_workers) if n_workers > 1 and len(paths) > 200 else _extract_many(paths)
    docs: dict[str, tuple[list[str], list[str]]] = {k: ([], []) for k in BUILTIN}
    hashes = {k: hashlib.sha256(f"{k}|{key}|{PROCESSING_VERSION}".encode()) for k in BUILTIN}
    keys: dict[str, tuple[list[str], list[str]]] = {k: ([], []) for k in BUILTIN}
    skipped = 0
    for (fkey, _), res in zip(unique, results):
        if res is None:
            skipped += 1
            continue
        for kind, text in zip(BUILTIN, res):
            if not text:
                continue
            split = 1 if in_val(fkey, val_percent) else 0
            docs[kind][split].append(text)
            keys[kind][split].append(fkey)
            hashes[kind].update(fkey.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    manifest = source_manifest(max_files)
    out = {}
    for kind in BUILTIN:
        train, val = docs[kind]
        if not train:
            raise DataError(
                f"the '{kind}' corpus has no training text",
                where=str(root or stdlib_root()),
                fix="lower val_percent or point root at a folder with Python files",
            )
        info = {
            "source": "stdlib + installed distributions" if not max_files and root is None else str(
                root or stdlib_root()),
            **manifest,
            "files": n_files,
            "duplicates_skipped": duplicates,
            "skipped_unparsable": skipped,
            "val_percent": val_percent,
            "processing": "docstrings (ast) + comments" if kind == "prose"
            else "docstrings removed, comments dropped via ast.unparse",
        }
        out[kind] = Corpus(kind, train, val, hashes[kind].hexdigest()[:16], info, keys=keys[kind])
    if cache_dir is not None:
        _save_cached(Path(cache_dir), key, out, keys)
    return out


def _save_cached(cache_dir: Path, key: str, corpora: dict[str, Corpus],
                 keys: dict[str, tuple[list[str], list[str]]]) -> None:
    from transferlab.store.atomic import write_json

    paths = _cache_paths(cache_dir, key)
    paths["info"].parent.mkdir(parents=True, exist_ok=True)
    for kind, c in corpora.items():
        tmp = paths[kind].with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for split, docs in ((0, c.train), (1, c.val)):
                for k, text in zip(keys[kind][split], docs):
                    f.write(json.dumps({"k": k, "v": split, "t": text}) + "\n")
        tmp.replace(paths[kind])
    write_json(paths["info"], {k: {"fingerprint": c.fingerprint, "info": c.info} for k, c in corpora.items()})


def _load_cached(cache_dir: Path, key: str) -> dict[str, Corpus] | None:
    paths = _cache_paths(cache_dir, key)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        meta = json.loads(paths["info"].read_text())
        out = {}
        for kind in BUILTIN:
            train, val, ktrain, kval = [], [], [], []
            with open(paths[kind], encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    (val if row["v"] else train).append(row["t"])
                    (kval if row["v"] else ktrain).append(row["k"])
            out[kind] = Corpus(kind, train, val, meta[kind]["fingerprint"], meta[kind]["info"], keys=(ktrain, kval))
        return out
    except (json.JSONDecodeError, KeyError, OSError):
        return None  # a damaged cache is rebuilt


def stdlib_corpus(
    kind: str, *, val_percent: float = 10.0, root: Path | None = None, max_files: int | None = None,
    cache_dir: Path | None = None,
) -> Corpus:
    """The built-in ``prose`` or ``code`` corpus (see the module docstring)."""
    if kind not in BUILTIN:
        raise DataError(f"unknown built-in corpus '{kind}'", fix=f"choose one of {', '.join(BUILTIN)}")
    return builtin_corpora(val_percent=val_percent, root=root, max_files=max_files, cache_dir=cache_dir)[kind]


_PART = re.compile(r"^(prose|code|source)\[(\^?)([^\[\]]+)\]$")


def builtin_part(spec: str) -> tuple[str, bool, list[str]] | None:
    """``code[sympy]`` -> ("code", False, ["sympy"]); ``code[^a,b]`` -> ("code", True, ["a", "b"]); else None."""
    m = _PART.match(spec)
    if m is None:
        if "+" not in spec and re.match(r"^(prose|code|source)\[", spec):  # code[ or code[] or code[a]]
            raise DataError(f"corpus '{spec}' is not a part of a built-in corpus", where="--corpus",
                            fix="name its sources between one [ and one ], e.g. code[sympy] or code[^stdlib,numpy]")
        return None
    names = [_norm(n.strip()) if n.strip() != "stdlib" else "stdlib" for n in m.group(3).split(",")]
    if any(not n for n in names):
        raise DataError(f"bad source list in corpus '{spec}'", where="--corpus",
                        fix="name sources with commas, e.g. code[sympy] or code[^stdlib,numpy]")
    return m.group(1), m.group(2) == "^", sorted(set(names))


def _source_of(key: str) -> str:
    return key.split("/", 1)[0]


def check_part_sources(spec: str, *, max_files: int | None = None, root: Path | None = None) -> None:
    """Refuse a part (``code[nosuch]``) that names a source the built-in corpora do not have, from the
    installed distributions' names, before anything is extracted (that takes minutes on a full install)."""
    part = builtin_part(spec)
    if part is None:
        return
    known = ["stdlib"] + ([] if max_files or root is not None else [n for n, _ in corpus_distributions()])
    unknown = [n for n in part[2] if n not in known]
    if unknown:
        raise DataError(f"unknown source(s) {', '.join(unknown)} in corpus '{spec}'", where="--corpus",
                        fix=f"choose among: {', '.join(known)}" + (" (max_files keeps the stdlib only)"
                                                                 if max_files else ""))


def select_sources(corpus: Corpus, spec: str) -> Corpus:
    """The documents of a built-in corpus whose source is (or, with ``^``, is not) in ``spec``'s list."""
    part = builtin_part(spec)
    if part is None or corpus.keys is None:
        raise DataError(f"corpus '{spec}' is not a part of a built-in corpus", where="--corpus",
                        fix="use prose[SOURCES] or code[SOURCES], e.g. code[sympy]")
    _, exclude, names = part
    have = sorted({_source_of(k) for ks in corpus.keys for k in ks})
    unknown = [n for n in names if n not in have]
    if unknown:
        raise DataError(f"unknown source(s) {', '.join(unknown)} in corpus '{spec}'", where="--corpus",
                        fix=f"choose among: {', '.join(have)}")
    keep = [[(_source_of(k) in names) != exclude for k in ks] for ks in corpus.keys]
    train = [d for d, ok in zip(corpus.train, keep[0]) if ok]
    val = [d for d, ok in zip(corpus.val, keep[1]) if ok]
    if not train and not val:
        raise DataError(f"corpus '{spec}' leaves no document", where="--corpus",
                        fix=f"select among the sources it has: {', '.join(have)}")
    if not train or not val:
        raise DataError(f"corpus '{spec}' has no {'training' if not train else 'validation'} documents",
                        where="--corpus", fix="select more sources or lower/raise val_percent")
    h = hashlib.sha256(f"part|{corpus.fingerprint}|{spec}".encode()).hexdigest()[:16]
    keys = ([k for k, ok in zip(corpus.keys[0], keep[0]) if ok], [k for k, ok in zip(corpus.keys[1], keep[1]) if ok])
    return Corpus(spec, train, val, h, {**corpus.info, "sources": names, "exclude": exclude}, keys=keys)


def unique_source_files(max_files: int | None = None, root: Path | None = None
                        ) -> tuple[list[tuple[str, Path]], int, int]:
    """(key, path) of the built-in corpora's files after deduplication by content, the number of files
    listed, and the number of duplicates skipped."""
    files = source_files(max_files, root)
    seen: set[bytes] = set()
    unique: list[tuple[str, Path]] = []
    duplicates = 0
    for k, p in files:
        try:
            digest = hashlib.sha256(p.read_bytes()).digest()
        except OSError:
            continue
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        unique.append((k, p))
    return unique, len(files), duplicates


def source_corpus(*, val_percent: float = 10.0, max_files: int | None = None, root: Path | None = None,
                  cache_dir: Path | None = None) -> Corpus:
    """The ``source`` corpus: every file of the built-in corpora as it is (see the module docstring); cached
    beside them in ``cache_dir`` as ``source.jsonl`` (the prose/code cache is not touched)."""
    _check_percent(val_percent)
    key = builtin_key(val_percent, max_files, root)
    path = None if cache_dir is None else Path(cache_dir) / key / "source.jsonl"
    rows: list[dict[str, Any]] = []
    if path is not None and path.is_file():
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
    else:
        unique, _, _ = unique_source_files(max_files, root)
        for k, p in unique:
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if text.strip():
                rows.append({"k": k, "v": int(in_val(k, val_percent)), "t": text})
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            tmp.replace(path)
    h = hashlib.sha256(f"source|{key}|{PROCESSING_VERSION}".encode())
    for r in rows:
        h.update(r["k"].encode() + b"\0" + hashlib.sha256(r["t"].encode()).digest())
    train = [r for r in rows if not r["v"]]
    val = [r for r in rows if r["v"]]
    if not train:
        raise DataError("the 'source' corpus has no training text", where=str(root or stdlib_root()),
                        fix="lower val_percent or point root at a folder with Python files")
    info = {"source": "stdlib + installed distributions", **source_manifest(max_files), "val_percent": val_percent,
            "processing": "the files as they are"}
    return Corpus(SOURCE, [r["t"] for r in train], [r["t"] for r in val], h.hexdigest()[:16], info,
                  keys=([r["k"] for r in train], [r["k"] for r in val]))


def _check_percent(val_percent: float) -> None:
    if not 0 < val_percent < 100:
        raise DataError(f"val_percent must be in (0, 100), got {val_percent}", fix="e.g. 10")


def _glob_base(pattern: str) -> Path:
    """The folder before the first glob character: paths are made relative to it for the split."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    base = Path(*fixed) if fixed else Path(".")
    return base if base.is_dir() else base.parent


def files_corpus(pattern: str, *, val_percent: float = 10.0) -> Corpus:
    """Text files matching ``pattern`` (``**`` allowed), sorted, split by relative-path hash."""
    _check_percent(val_percent)
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not paths:
        raise DataError(
            f"the glob '{pattern}' matches no files",
            where="corpus files:",
            fix="check the pattern (quote it so the shell does not expand it; use ** for subfolders)",
        )
    base = _glob_base(os.path.expanduser(pattern))
    train, val = [], []
    h = hashlib.sha256(f"files|{val_percent}".encode())
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{p} is not UTF-8 text", where="corpus files:", fix="narrow the glob to text files"
            ) from None
        rel = Path(os.path.relpath(p, base)).as_posix()
        (val if in_val(rel, val_percent) else train).append(text)
        h.update(rel.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    if not train or not val:
        raise DataError(
            f"the glob '{pattern}' gives {len(train)} training and {len(val)} validation files",
            where="corpus files:",
            fix="match more files or change val_percent",
        )
    return Corpus(
        f"files:{pattern}",
        train,
        val,
        h.hexdigest()[:16],
        {"source": pattern, "files": len(paths), "val_percent": val_percent},
    )


def hf_corpus(path: str, column: str = "text", *, val_percent: float = 10.0) -> Corpus:
    """A Hugging Face dataset saved with ``save_to_disk`` (``datasets`` is imported only here)."""
    _check_percent(val_percent)
    try:
        import datasets
    except ImportError:
        raise DataError(
            "the Hugging Face `datasets` package is not installed",
            where=f"hf:{path}",
            fix="install it with `pip install datasets` (it is optional)",
        ) from None
    if not Path(path).exists():
        raise DataError(
            f"dataset folder {path} does not exist",
            where=f"hf:{path}",
            fix="pass a folder written by Dataset.save_to_disk",
        )
    try:
        ds = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(
            f"cannot load a dataset from {path} ({err})",
            where=f"hf:{path}",
            fix="pass a folder written by Dataset.save_to_disk",
        ) from None
    splits = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"all": ds}

    def texts(d: Any) -> list[str]:
        if column not in d.column_names:
            raise DataError(
                f"no column '{column}' (columns: {', '.join(d.column_names)})",
                where=f"hf:{path}",
                fix="name the text column: hf:PATH:COLUMN",
            )
        return [str(t) for t in d[column]]

    if "train" in splits and ("validation" in splits or "test" in splits):
        train = texts(splits["train"])
        val = texts(splits.get("validation") or splits["test"])
    else:
        rows = texts(next(iter(splits.values())))
        train = [t for i, t in enumerate(rows) if not in_val(str(i), val_percent)]
        val = [t for i, t in enumerate(rows) if in_val(str(i), val_percent)]
    h = hashlib.sha256(f"hf|{column}|{val_percent}".encode())
    for t in train + ["\0val\0"] + val:
        h.update(hashlib.sha256(t.encode()).digest())
    return Corpus(f"hf:{path}", train, val, h.hexdigest()[:16], {"source": path, "column": column})


def load_corpus(
    spec: str, *, val_percent: float = 10.0, max_files: int | None = None, root: Path | None = None,
    cache_dir: Path | None = None,
) -> Corpus:
    """``prose`` | ``code`` | ``source`` | ``code[SOURCES]`` / ``code[^SOURCES]`` | ``files:GLOB`` |
    ``hf:PATH[:COLUMN]``, or
    several joined by ``+`` (a mixture)."""
    if "+" in spec and not spec.startswith(("files:", "hf:")):
        return mixture([load_corpus(part, val_percent=val_percent, max_files=max_files, root=root,
                                    cache_dir=cache_dir) for part in mixture_parts(spec)])
    if spec in BUILTIN:
        return stdlib_corpus(spec, val_percent=val_percent, root=root, max_files=max_files, cache_dir=cache_dir)
    if spec == SOURCE:
        return source_corpus(val_percent=val_percent, root=root, max_files=max_files, cache_dir=cache_dir)
    part = builtin_part(spec)
    if part is not None:
        check_part_sources(spec, max_files=max_files, root=root)
        whole = load_corpus(part[0], val_percent=val_percent, root=root, max_files=max_files, cache_dir=cache_dir)
        return select_sources(whole, spec)
    if spec.startswith("files:"):
        return files_corpus(spec[len("files:") :], val_percent=val_percent)
    if spec.startswith("hf:"):
        rest = spec[len("hf:") :]
        path, _, column = rest.partition(":") if not Path(rest).exists() else (rest, "", "")
        return hf_corpus(path, column or "text", val_percent=val_percent)
    raise DataError(
        f"unknown corpus '{spec}'", where="--corpus",
        fix="use prose, code, source, a part such as code[sympy], files:GLOB or hf:PATH[:COLUMN], or a mixture such as "
            "prose+code"
    )


def mixture_parts(spec: str) -> list[str]:
    parts = spec.split("+")
    if any(not p for p in parts) or len(set(parts)) != len(parts):
        raise DataError(f"bad corpus mixture '{spec}'", where="--corpus",
                        fix="join distinct corpora with '+', e.g. prose+code")
    return parts


def mixture(parts: list[Corpus]) -> Corpus:
    """All documents of several corpora, in order (training windows are shuffled later); the split of
    each part is kept, so a file held out of one part is held out of the mixture."""
    h = hashlib.sha256(b"mixture|v1")
    for c in parts:
        h.update(c.fingerprint.encode() + b"\0")
    return Corpus(
        "+".join(c.name for c in parts),
        [d for c in parts for d in c.train],
        [d for c in parts for d in c.val],
        h.hexdigest()[:16],
        {"mixture": [{"name": c.name, "train_chars": c.chars()[0], **c.info} for c in parts]},
    )
