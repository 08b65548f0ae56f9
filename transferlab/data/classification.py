"""Classification task datasets with known gold labels.

- synthetic tasks for the two weak-to-strong regimes (a noisy weak view, a feature-subset weak view);
- real text from the running interpreter's standard library, labelled programmatically from its
  source code with :mod:`ast` (nothing is imported or executed);
- scikit-learn's bundled tabular datasets;
- a user's CSV or JSONL file with a ``text`` or ``features`` column (or ``f0, f1, ...`` columns) and
  a ``label`` column.
- a Hugging Face dataset saved on disk, ``hf:PATH[:TEXT_COLUMN:LABEL_COLUMN]`` (:mod:`.hf_tasks`).

Every loader returns a :class:`ClassificationData`; bad input raises :class:`DataError` in one line.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.core.config import read_text_file
from transferlab.core.errors import ConfigError, DataError


@dataclass
class ClassificationData:
    """Examples with gold labels 0..K-1, as texts and/or feature matrices.

    ``views`` holds named feature matrices (e.g. ``strong``, ``weak``, ladder rungs) for tasks that
    come with their own features; text tasks get theirs from an encoder.
    """

    name: str
    classes: list[str]
    labels: np.ndarray
    texts: list[str] | None = None
    views: dict[str, np.ndarray] = field(default_factory=dict)
    ladder: list[str] = field(default_factory=list)  # view names from weakest to strongest
    description: str = ""

    def __post_init__(self) -> None:
        self.labels = validate_labels(self.labels, len(self.classes), where=self.name)
        n = len(self.labels)
        if self.texts is not None and len(self.texts) != n:
            raise DataError(
                f"{len(self.texts)} texts but {n} labels", where=self.name, fix="pass one per example"
            )
        for k, v in self.views.items():
            if v.shape[0] != n:
                raise DataError(
                    f"view '{k}' has {v.shape[0]} rows but there are {n} labels",
                    where=self.name,
                    fix="pass one feature row per example",
                )

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def validate_labels(labels, n_classes: int, where: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise DataError(
            f"labels must be a non-empty 1-D array, got shape {y.shape}",
            where=where,
            fix="pass one integer class per example",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError("labels must be integer class ids", where=where, fix="map class names to 0..K-1")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        vals = sorted(set(y[bad].tolist()))[:5]
        raise DataError(
            f"labels {vals} are outside the class set 0..{n_classes - 1}",
            where=where,
            fix="fix the labels or declare every class",
        )
    return y.astype(np.int64)


# --------------------------------------------------------------------------- synthetic
def _linear_truth(
    rng: np.random.Generator, n: int, d: int, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    y = (x @ w > margin).astype(np.int64)
    return x, y


def synthetic_noisy(n: int = 4000, d: int = 20, noise: float = 1.0, seed: int = 0) -> ClassificationData:
    """y = 1[w.x > 0]; the weak model sees x + noise * eps (eps fresh per example, independent of x).

    The weak model's errors come from eps, which no function of x can reproduce, so a strong student
    on the clean x cannot imitate them: it averages them out and PGR is clearly above 0.
    """
    rng = np.random.default_rng(seed)
    x, y = _linear_truth(rng, n, d)
    eps = rng.normal(size=x.shape)
    views = {"strong": x, "weak": x + noise * eps, "mid": x + 0.5 * noise * eps}
    return ClassificationData(
        "synthetic-noisy",
        ["neg", "pos"],
        y,
        views=views,
        ladder=["weak", "mid", "strong"],
        description=f"linear truth in {d}-d; weak view = x + {noise:g} N(0, I)",
    )


def synthetic_subset(n: int = 4000, d: int = 20, k: int = 10, seed: int = 0) -> ClassificationData:
    """y = 1[w.x > 0]; the weak model sees only the first ``k`` coordinates of x.

    The weak model's predictions are a linear function of x, so a linear student on x can fit them
    exactly, errors included: the student imitates its supervisor and PGR is about 0.
    """
    rng = np.random.default_rng(seed)
    x, y = _linear_truth(rng, n, d)
    views = {"strong": x, "weak": x[:, :k], "mid": x[:, : min(d, 2 * k)]}
    return ClassificationData(
        "synthetic-subset",
        ["neg", "pos"],
        y,
        views=views,
        ladder=["weak", "mid", "strong"],
        description=f"linear truth in {d}-d; weak view = the first {k} coordinates",
    )


# --------------------------------------------------------------------------- stdlib text
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "turtledemo",
    "__pycache__",
    "ensurepip",
    "pydoc_data",
}


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part in _SKIP_DIRS or part.startswith("test") for part in rel[:-1]):
            continue
        if rel[-1].startswith("test_"):
            continue
        out.append(p)
    return out


def _clean_doc(doc: str, max_chars: int = 400) -> str:
    doc = " ".join(doc.split())
    return doc[:max_chars]


def _raises(node: ast.AST) -> bool:
    """Whether a function's own body contains a ``raise`` (nested defs and classes excluded)."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Raise):
            return True
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return False


def _documented(path: Path, min_chars: int) -> list[tuple[ast.AST, str]]:
    """(node, cleaned docstring) of every function and class in one source file with a docstring of at least
    ``min_chars`` characters; [] when the file does not parse."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node)
            text = _clean_doc(doc) if doc else ""
            if len(text) >= min_chars:
                out.append((node, text))
    return out


_DOC_CACHE: list[dict] | None = None


def stdlib_docstrings(min_chars: int = 40) -> list[dict]:
    """Every function/class docstring in the stdlib source: {'text', 'kind', 'package', 'raises'}.

    Deterministic for a given interpreter; duplicates (same text) are dropped.
    """
    global _DOC_CACHE
    if _DOC_CACHE is not None:
        return _DOC_CACHE
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    rows: list[dict] = []
    for path in _stdlib_files():
        package = path.relative_to(root).parts[0].removesuffix(".py")
        for node, text in _documented(path, min_chars):
            if text in seen:
                continue
            seen.add(text)
            is_class = isinstance(node, ast.ClassDef)
            rows.append(
                {
                    "text": text,
                    "kind": "class" if is_class else "function",
                    "package": package,
                    "raises": (not is_class) and _raises(node),
                }
            )
    _DOC_CACHE = rows
    return rows


def _balanced_pick(
    rng: np.random.Generator, groups: dict[int, list[str]], per_class: int
) -> tuple[list, list]:
    texts, labels = [], []
    for label, items in sorted(groups.items()):
        idx = rng.permutation(len(items))[:per_class]
        texts += [items[i] for i in idx]
        labels += [label] * len(idx)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], [labels[i] for i in order]


def stdlib_kind(n_per_class: int = 600, seed: int = 0) -> ClassificationData:
    """Binary: does this docstring belong to a function or to a class?"""
    rows = stdlib_docstrings()
    groups = {
        0: [r["text"] for r in rows if r["kind"] == "function"],
        1: [r["text"] for r in rows if r["kind"] == "class"],
    }
    texts, labels = _balanced_pick(np.random.default_rng(seed), groups, n_per_class)
    return ClassificationData(
        "stdlib-kind",
        ["function", "class"],
        np.array(labels),
        texts=texts,
        description="docstring of a function (0) or a class (1), stdlib source via ast",
    )


def stdlib_raises(n_per_class: int = 600, seed: int = 0) -> ClassificationData:
    """Binary: does the documented function contain a ``raise`` statement in its own body?"""
    rows = [r for r in stdlib_docstrings() if r["kind"] == "function"]
    groups = {0: [r["text"] for r in rows if not r["raises"]], 1: [r["text"] for r in rows if r["raises"]]}
    texts, labels = _balanced_pick(np.random.default_rng(seed), groups, n_per_class)
    return ClassificationData(
        "stdlib-raises",
        ["no-raise", "raises"],
        np.array(labels),
        texts=texts,
        description="function docstring -> does its body raise? (ast)",
    )


STDLIB_PACKAGES = ["asyncio", "email", "importlib", "logging", "xml", "multiprocessing"]


def stdlib_package(n_per_class: int = 250, seed: int = 0) -> ClassificationData:
    """Multi-class: which top-level stdlib package does this docstring come from?"""
    rows = stdlib_docstrings()
    present = [p for p in STDLIB_PACKAGES if sum(r["package"] == p for r in rows) >= 30]
    groups = {i: [r["text"] for r in rows if r["package"] == p] for i, p in enumerate(present)}
    texts, labels = _balanced_pick(np.random.default_rng(seed), groups, n_per_class)
    return ClassificationData(
        "stdlib-package",
        present,
        np.array(labels),
        texts=texts,
        description=f"docstring -> top-level package among {', '.join(present)}",
    )


# libraries installed wherever transferlab is (its requirements and theirs), each with thousands of docstrings
DOCS_LIBRARIES = ["matplotlib", "networkx", "pandas", "scipy", "sympy", "torch"]
_LIB_DOC_CACHE: dict[tuple[str, int], list[str]] = {}


def library_docstrings(name: str, limit: int, min_chars: int = 40) -> list[str]:
    """Up to ``limit`` distinct function/class docstrings of an installed library, from its files taken in the
    order of ``sha256(path)`` (spread over the package, the same on every machine with the same version)."""
    import hashlib

    from transferlab.data.corpora import distribution_files

    key = (name, limit)
    if key in _LIB_DOC_CACHE:
        return _LIB_DOC_CACHE[key]
    files = sorted(distribution_files(name), key=lambda t: hashlib.sha256(t[0].encode()).hexdigest())
    seen: set[str] = set()
    out: list[str] = []
    for _, path in files:
        for _, text in _documented(path, min_chars):
            if text not in seen:
                seen.add(text)
                out.append(text)
        if len(out) >= limit:
            break
    _LIB_DOC_CACHE[key] = out[:limit]
    return _LIB_DOC_CACHE[key]


def docs_library(n_per_class: int = 400, seed: int = 0) -> ClassificationData:
    """Multi-class: which installed library (torch, sympy, pandas, ...) is this docstring from?

    A knowledge task: the zoo's prose corpus holds these libraries' docstrings, so a model that learned more
    of them in pretraining separates the libraries' vocabularies and conventions better. A docstring that
    appears in two libraries is dropped from both."""
    docs = {lib: library_docstrings(lib, 3 * n_per_class) for lib in DOCS_LIBRARIES}
    present = [lib for lib in DOCS_LIBRARIES if len(docs[lib]) >= 30]
    if len(present) < 2:
        raise DataError("fewer than 2 of the docs-library libraries are installed with docstrings",
                        where="docs-library", fix=f"install {', '.join(DOCS_LIBRARIES)} or use another task")
    count: dict[str, int] = {}
    for lib in present:
        for t in docs[lib]:
            count[t] = count.get(t, 0) + 1
    groups = {i: [t for t in docs[lib] if count[t] == 1] for i, lib in enumerate(present)}
    texts, labels = _balanced_pick(np.random.default_rng(seed), groups, n_per_class)
    return ClassificationData(
        "docs-library", present, np.array(labels), texts=texts,
        description=f"docstring -> the library it is from, among {', '.join(present)}",
    )


# --------------------------------------------------------------------------- sklearn tabular
def _noisy_ladder(x: np.ndarray, noise: float, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    eps = np.random.default_rng(seed + 1).normal(size=z.shape)
    return {"strong": z, "weak": z + noise * eps, "mid": z + 0.5 * noise * eps}, ["weak", "mid", "strong"]


def sklearn_task(name: str, noise: float = 2.0, seed: int = 0) -> ClassificationData:
    """scikit-learn's bundled datasets (no download): breast_cancer, digits, wine, iris.

    Strong view: the standardized features; weak view: the same plus fixed Gaussian noise.
    """
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise DataError(f"unknown sklearn dataset '{name}'", fix=f"choose from: {', '.join(loaders)}")
    b = loaders[name]()
    x = np.asarray(b.data, dtype=np.float64)
    views, ladder = _noisy_ladder(x, noise, seed)
    classes = [str(c) for c in getattr(b, "target_names", range(int(b.target.max()) + 1))]
    return ClassificationData(
        f"sklearn-{name}",
        classes,
        np.asarray(b.target, dtype=np.int64),
        views=views,
        ladder=ladder,
        description=f"sklearn {name}; weak view = standardized + {noise:g} N(0,1)",
    )


# --------------------------------------------------------------------------- user files
def load_user_file(
    path: str | Path, classes: list[str] | None = None, noise: float = 2.0, seed: int = 0
) -> ClassificationData:
    """A CSV or JSONL file: a ``label`` column plus ``text``, ``features`` (a list) or f0, f1, ...

    With ``classes`` given, every label must be one of them (by name, or by index); without, the
    sorted distinct labels become the class set.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}", fix="pass an existing .csv or .jsonl file")
    suffix = p.suffix.lower()
    if suffix not in {".csv", ".jsonl", ".ndjson"}:
        raise DataError(f"unsupported file type '{suffix}'", where=str(p), fix="use .csv or .jsonl")
    try:
        text = read_text_file(p, "data file")  # UTF-8, byte-order mark dropped
    except ConfigError as err:
        raise DataError(err.what, fix=err.fix) from None
    rows: list[dict] = []
    if suffix == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as err:
            raise DataError(f"cannot be read as CSV ({err})", where=str(p),
                            fix="write a CSV with a header row") from None
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(
                        f"line {i} is not valid JSON", where=str(p), fix="one JSON object per line"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"line {i} is a JSON {type(row).__name__}, not an object", where=str(p),
                                    fix='one object per line, e.g. {"text": "...", "label": "pos"}')
                rows.append(row)
    if not rows:
        raise DataError("the file has no rows", where=str(p), fix="add examples")
    if "label" not in rows[0]:
        raise DataError(
            f"no 'label' column (columns: {', '.join(rows[0])})",
            where=str(p),
            fix="name the gold label column 'label'",
        )
    raw = [str(r["label"]).strip() for r in rows]
    if classes is None:
        names = sorted(
            set(raw), key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s)
        )
    else:
        names = [str(c) for c in classes]
    lookup = {c: i for i, c in enumerate(names)}
    labels = []
    for i, lab in enumerate(raw):
        if lab in lookup:
            labels.append(lookup[lab])
        else:
            raise DataError(
                f"row {i + 1} has label '{lab}' outside the class set {names}",
                where=str(p),
                fix="fix the label or add it to the declared classes",
            )
    y = np.asarray(labels, dtype=np.int64)
    name = f"file-{p.stem}"
    if "text" in rows[0]:
        texts = [str(r["text"]) for r in rows]
        return ClassificationData(name, names, y, texts=texts, description=f"user file {p.name} (text)")
    feat_cols = [c for c in rows[0] if c.startswith("f") and c[1:].isdigit()]
    try:
        if "features" in rows[0]:
            x = np.asarray(
                [
                    r["features"] if isinstance(r["features"], list) else json.loads(r["features"])
                    for r in rows
                ],
                dtype=np.float64,
            )
        elif feat_cols:
            x = np.asarray([[float(r[c]) for c in feat_cols] for r in rows], dtype=np.float64)
        else:
            raise DataError(
                "no 'text', 'features' or f0, f1, ... columns",
                where=str(p),
                fix="add a text column or numeric feature columns",
            )
    except (ValueError, TypeError):
        raise DataError(
            "features are not all numbers of one length", where=str(p), fix="check the feature columns"
        ) from None
    if x.ndim != 2:
        raise DataError("features are not all of one length", where=str(p), fix="check the feature columns")
    views, ladder = _noisy_ladder(x, noise, seed)
    return ClassificationData(
        name, names, y, views=views, ladder=ladder, description=f"user file {p.name} (features)"
    )


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # synthetic | text | tabular
    description: str
    build: Callable[..., ClassificationData]


TASKS: dict[str, TaskSpec] = {
    "synthetic-noisy": TaskSpec(
        "synthetic-noisy", "synthetic", "weak sees a noisy view (PGR clearly > 0)", synthetic_noisy
    ),
    "synthetic-subset": TaskSpec(
        "synthetic-subset", "synthetic", "weak sees a feature subset (PGR ~ 0)", synthetic_subset
    ),
    "stdlib-kind": TaskSpec(
        "stdlib-kind", "text", "stdlib docstring: function vs class (binary)", stdlib_kind
    ),
    "stdlib-raises": TaskSpec(
        "stdlib-raises", "text", "stdlib function docstring: does it raise? (binary)", stdlib_raises
    ),
    "stdlib-package": TaskSpec(
        "stdlib-package", "text", "stdlib docstring: which package (6 classes)", stdlib_package
    ),
    "docs-library": TaskSpec(
        "docs-library", "text", "library docstring: which of 6 installed libraries (torch, sympy, ...)", docs_library
    ),
    "sklearn-breast_cancer": TaskSpec(
        "sklearn-breast_cancer",
        "tabular",
        "sklearn breast cancer (binary)",
        lambda **kw: sklearn_task("breast_cancer", **kw),
    ),
    "sklearn-digits": TaskSpec(
        "sklearn-digits", "tabular", "sklearn digits (10 classes)", lambda **kw: sklearn_task("digits", **kw)
    ),
    "sklearn-wine": TaskSpec(
        "sklearn-wine", "tabular", "sklearn wine (3 classes)", lambda **kw: sklearn_task("wine", **kw)
    ),
}


def list_tasks() -> list[dict[str, str]]:
    return [{"name": t.name, "kind": t.kind, "description": t.description} for t in TASKS.values()]


def is_user_file(task: str) -> bool:
    """The user's own data: a .csv/.jsonl path or a saved Hugging Face dataset (``hf:PATH[:TEXT:LABEL]``)."""
    from transferlab.data.hf_tasks import is_hf_task

    return is_hf_task(task) or Path(task).suffix.lower() in {".csv", ".jsonl", ".ndjson"}


def load_task(task: str, **kwargs) -> ClassificationData:
    """A registered task by name (``kwargs`` go to its builder), a user's .csv/.jsonl path, or
    ``hf:PATH[:TEXT_COLUMN:LABEL_COLUMN]`` (a dataset saved with ``save_to_disk``; ``classes``, ``seed``)."""
    from transferlab.data.hf_tasks import is_hf_task, load_hf_task

    if is_hf_task(task):
        return load_hf_task(task, **kwargs)
    if is_user_file(task):
        return load_user_file(task, **kwargs)
    if task not in TASKS:
        raise DataError(
            f"unknown task '{task}'",
            where="task",
            fix=f"choose one of {', '.join(TASKS)}, pass a .csv/.jsonl path or hf:PATH (a saved Hugging Face "
            "dataset) (see --list-tasks)",
        )
    return TASKS[task].build(**kwargs)
