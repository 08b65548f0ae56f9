"""Text corpora that need no download, plus the user's own text files or a saved HF dataset.

Built-in corpora come from the running interpreter's standard library (``sysconfig``'s
``stdlib`` folder), so they exist wherever Python does:

- ``prose``: English prose, i.e. every docstring (``ast.get_docstring``) and every comment
  (``tokenize`` COMMENT tokens, ``#`` stripped; shebang, ``coding:``, ``noqa``/``type:``
  pragmas dropped), in source order, one file per document.
- ``code``: the same files with docstrings and comments stripped: docstrings are removed
  from the AST and the module is re-emitted with ``ast.unparse`` (which drops comments and
  normalizes formatting), one file per document.

Files: ``*.py`` under the stdlib folder in sorted order of their relative POSIX path, skipping
test suites (``test``, ``tests``, ``idle_test``, ``test_*.py``), ``site-packages``,
``dist-packages`` and ``__pycache__``; files that do not parse are skipped (and counted).
Train/validation split by file: a file is in validation when
``int(sha256(relative path), 16) % 100 < val_percent``, so the split never depends on the
file order or the machine.

Users bring ``files:GLOB`` (text files, split the same way by their path relative to the
glob's fixed prefix) or ``hf:PATH[:COLUMN]`` (a dataset saved with ``save_to_disk``; its
``train``/``validation`` splits when it has them, else split by row index hash).
"""

from __future__ import annotations

import ast
import glob
import hashlib
import io
import os
import sys
import sysconfig
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.core.errors import DataError

BUILTIN = ("prose", "code")
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_PRAGMAS = ("noqa", "type:", "pragma", "fmt:", "pylint:")


@dataclass
class Corpus:
    """A corpus split into documents: ``train`` and ``val`` lists of strings."""

    name: str
    train: list[str]
    val: list[str]
    fingerprint: str  # identity of the content (changes when the source or its processing changes)
    info: dict[str, Any] = field(default_factory=dict)

    def chars(self) -> tuple[int, int]:
        return sum(map(len, self.train)), sum(map(len, self.val))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def in_val(key: str, val_percent: float) -> bool:
    """The split rule: sha256 of the key (a relative path or row id) mod 100 < val_percent."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100 < val_percent


def stdlib_files(root: Path | None = None, max_files: int | None = None) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of the stdlib's ``*.py`` files, sorted, test suites skipped."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise DataError(f"standard library folder {root} not found", fix="pass root= an existing folder")
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if SKIP_PARTS & set(rel.parts[:-1]) or rel.name.startswith("test_") or not p.is_file():
            continue
        out.append((rel.as_posix(), p))
    out.sort(key=lambda t: t[0])
    return out[:max_files] if max_files else out


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


def prose_of(source: str) -> str:
    """Docstrings and comments of one Python source, in source order."""
    tree = ast.parse(source)
    items: list[tuple[int, str]] = []
    for node in _docstring_nodes(tree):
        if _has_docstring(node):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                items.append((node.body[0].lineno, doc.strip() + "\n"))  # type: ignore[attr-defined]
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#").strip()
            if (
                not text
                or tok.string.startswith("#!")
                or "coding" in text[:12]
                and ":" in text
                or text.startswith(_PRAGMAS)
                or set(text) <= set("-=#*~_ ")
            ):
                continue
            items.append((tok.start[0], text))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    items.sort(key=lambda t: t[0])
    return "\n".join(t for _, t in items).strip()


def code_of(source: str) -> str:
    """The source with docstrings removed (from the AST) and comments dropped (by ``ast.unparse``)."""
    tree = ast.parse(source)
    for node in _docstring_nodes(tree):
        if _has_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.unparse(tree).strip()


def stdlib_corpus(
    kind: str, *, val_percent: float = 10.0, root: Path | None = None, max_files: int | None = None
) -> Corpus:
    """The built-in ``prose`` or ``code`` corpus (see the module docstring)."""
    if kind not in BUILTIN:
        raise DataError(f"unknown built-in corpus '{kind}'", fix=f"choose one of {', '.join(BUILTIN)}")
    _check_percent(val_percent)
    files = stdlib_files(root, max_files)
    extract = prose_of if kind == "prose" else code_of
    train, val, skipped = [], [], 0
    h = hashlib.sha256(f"{kind}|{sys.version_info[:3]}|{val_percent}|v1".encode())
    for rel, p in files:
        try:
            text = extract(p.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
            skipped += 1
            continue
        if not text:
            continue
        (val if in_val(rel, val_percent) else train).append(text)
        h.update(rel.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    if not train:
        raise DataError(
            f"the '{kind}' corpus has no training text",
            where=str(root or stdlib_root()),
            fix="lower val_percent or point root at a folder with Python files",
        )
    info = {
        "source": str(root or stdlib_root()),
        "python": sys.version.split()[0],
        "files": len(files),
        "skipped_unparsable": skipped,
        "val_percent": val_percent,
        "processing": "docstrings (ast) + comments (tokenize)"
        if kind == "prose"
        else "docstrings removed, comments dropped via ast.unparse",
    }
    return Corpus(kind, train, val, h.hexdigest()[:16], info)


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
    spec: str, *, val_percent: float = 10.0, max_files: int | None = None, root: Path | None = None
) -> Corpus:
    """``prose`` | ``code`` | ``files:GLOB`` | ``hf:PATH[:COLUMN]``, or several joined by ``+`` (a mixture)."""
    if "+" in spec and not spec.startswith(("files:", "hf:")):
        return mixture([load_corpus(part, val_percent=val_percent, max_files=max_files, root=root)
                        for part in _mixture_parts(spec)])
    if spec in BUILTIN:
        return stdlib_corpus(spec, val_percent=val_percent, root=root, max_files=max_files)
    if spec.startswith("files:"):
        return files_corpus(spec[len("files:") :], val_percent=val_percent)
    if spec.startswith("hf:"):
        rest = spec[len("hf:") :]
        path, _, column = rest.partition(":") if not Path(rest).exists() else (rest, "", "")
        return hf_corpus(path, column or "text", val_percent=val_percent)
    raise DataError(
        f"unknown corpus '{spec}'", where="--corpus",
        fix="use prose, code, files:GLOB or hf:PATH[:COLUMN], or a mixture such as prose+code"
    )


def _mixture_parts(spec: str) -> list[str]:
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
