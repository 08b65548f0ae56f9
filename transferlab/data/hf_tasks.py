"""Classification tasks from a Hugging Face dataset saved on disk (``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk``); ``datasets`` is an optional dependency, imported only here.

``hf:PATH:TEXT_COLUMN:LABEL_COLUMN`` names the text and the label column (labels may be ints, bools,
strings or a ``ClassLabel``). ``hf:PATH`` alone recognises these shapes by their columns:

- ``sciq`` (``question``, ``correct_answer``, ``distractor1``..``distractor3``; ``support`` is not used):
  each question gives one binary example, as in openai's weak-to-strong datasets: by a seeded coin flip,
  ``"Q: <question>\\nA: <answer>"`` with the correct answer (label 1) or with one distractor drawn by the
  same RNG (label 0). One example per question keeps a question out of two splits at once;
- ``boolq`` (``question``, ``passage``, ``answer`` a bool or 0/1): ``"<passage>\\n<question>"``, label =
  the answer, classes ``["false", "true"]``;
- ``anthropic_hh`` (``chosen``, ``rejected``): each row gives one example, by a seeded coin flip the
  chosen text (label 1) or the rejected one (label 0);
- ``text-label`` (``text``, ``label``): the generic form with those two columns.

Every split of a ``DatasetDict`` is used (train, validation, test, then any other, concatenated): the
weak-to-strong study makes its own splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferlab.core.errors import DataError
from transferlab.data.classification import ClassificationData

PREFIX = "hf:"
SPLIT_ORDER = ("train", "validation", "test")
SHAPES: dict[str, tuple[str, ...]] = {
    "sciq": ("question", "correct_answer", "distractor1", "distractor2", "distractor3"),
    "boolq": ("question", "passage", "answer"),
    "anthropic_hh": ("chosen", "rejected"),
    "text-label": ("text", "label"),
}
COLUMNS_FIX = "or name the columns: hf:PATH:TEXT_COLUMN:LABEL_COLUMN"


def is_hf_task(task: str) -> bool:
    return task.startswith(PREFIX)


def parse_hf_task(task: str) -> tuple[str, str | None, str | None]:
    """``hf:PATH[:TEXT:LABEL]`` -> (path, text column, label column); a path that exists as given wins."""
    rest = task[len(PREFIX):]
    if not rest:
        raise DataError("no dataset folder after 'hf:'", where="task",
                        fix="pass hf:PATH or hf:PATH:TEXT_COLUMN:LABEL_COLUMN")
    if Path(rest).exists():
        return rest, None, None
    parts = rest.rsplit(":", 2)
    if len(parts) == 3 and Path(parts[0]).exists():
        path, text, label = parts
        if not text or not label:
            raise DataError(f"an empty column name in '{task}'", where=task,
                            fix="name both columns: hf:PATH:TEXT_COLUMN:LABEL_COLUMN")
        return path, text, label
    head, _, one = rest.rpartition(":")
    if head and Path(head).exists():
        raise DataError(f"only one column named ('{one}')", where=task,
                        fix="name both columns: hf:PATH:TEXT_COLUMN:LABEL_COLUMN (or none, for a known shape)")
    return (parts[0] if len(parts) == 3 else rest), None, None


def _import_datasets(where: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "the Hugging Face `datasets` package is not installed",
            where=where,
            fix="install it with `pip install datasets` (it is optional)",
        ) from None
    return datasets


def _load_splits(path: str, where: str) -> list[tuple[str, Any]]:
    datasets = _import_datasets(where)
    if not Path(path).exists():
        raise DataError(f"dataset folder {path} does not exist", where=where,
                        fix="pass a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk")
    fix = "pass a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk"
    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError as err:  # a file, or a folder without a saved dataset's state/info files
        raise DataError(f"{path} is not a saved dataset ({err})", where=where, fix=fix) from None
    except (OSError, ValueError, IndexError, KeyError, TypeError) as err:  # damaged arrow files, ...
        empty = _empty_splits(Path(path))
        if empty:  # datasets saves a split without rows as no data file, then cannot load it
            what = "the dataset" if empty[0] == "all" else f"split '{empty[0]}'"
            raise DataError(f"{what} has no rows (saved without a data file, which datasets cannot load)",
                            where=where, fix="drop the empty split before save_to_disk, or give it examples") from None
        raise DataError(f"cannot load the saved dataset {path} ({type(err).__name__}: {err})", where=where,
                        fix=fix) from None
    if not isinstance(ds, datasets.DatasetDict):
        return [("all", ds)]
    names = [s for s in SPLIT_ORDER if s in ds] + [s for s in ds if s not in SPLIT_ORDER]
    return [(s, ds[s]) for s in names]


def _empty_splits(path: Path) -> list[str]:
    """The splits of a saved dataset whose ``state.json`` lists no data file (``all`` for a lone Dataset)."""
    import json

    out = []
    for state in sorted([path / "state.json", *path.glob("*/state.json")]):
        try:
            files = json.loads(state.read_text(encoding="utf-8")).get("_data_files")
        except (OSError, ValueError, AttributeError):
            continue
        if files == []:
            out.append("all" if state.parent == path else state.parent.name)
    return out


def _column(splits: list[tuple[str, Any]], col: str, where: str) -> list[Any]:
    out: list[Any] = []
    for name, d in splits:
        if col not in d.column_names:
            label = "" if name == "all" else f"split '{name}' has "
            raise DataError(f"{label}no column '{col}' (columns: {', '.join(d.column_names)})", where=where,
                            fix="name an existing column: hf:PATH:TEXT_COLUMN:LABEL_COLUMN")
        out += list(d[col])
    return out


def _texts(values: list[Any], col: str, where: str) -> list[str]:
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"row {i + 1} has no value in column '{col}'", where=where,
                            fix="drop or fill the empty rows")
    return [str(v) for v in values]


def _name_key(s: str) -> tuple:
    num = s.lstrip("-").isdigit()
    return (not num, int(s) if num else 0, s)


def _label_names(values: list[Any], where: str) -> tuple[list[Any], list[str]]:
    """Raw labels -> (keys, default class names): bools -> false/true, ints sorted, else sorted strings."""
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"row {i + 1} has no label", where=where, fix="drop or label the empty rows")
        if isinstance(v, float):
            if not v.is_integer():
                raise DataError(f"row {i + 1} has label {v}, not a class", where=where,
                                fix="labels must be ints, bools or strings")
        elif not isinstance(v, (bool, int, np.integer, str)):
            raise DataError(f"row {i + 1} has a label of type {type(v).__name__}", where=where,
                            fix="labels must be ints, bools or strings")
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [int(v) for v in values], ["false", "true"]
    if all(isinstance(v, (int, float, np.integer)) and not isinstance(v, bool) for v in values):
        keys = [int(v) for v in values]
        return keys, [str(k) for k in sorted(set(keys))]
    keys = [v.strip() if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(int(v))
            for v in values]
    return keys, sorted(set(keys), key=_name_key)


def _encode_labels(values: list[Any], feature: Any, classes: list[str] | None, where: str
                   ) -> tuple[np.ndarray, list[str]]:
    names_of = getattr(feature, "names", None)  # a ClassLabel: ints with declared names
    if names_of is not None:
        bad = [i for i, v in enumerate(values) if v is None or not 0 <= int(v) < len(names_of)]
        if bad:
            raise DataError(f"row {bad[0] + 1} has no label (ClassLabel id {values[bad[0]]})", where=where,
                            fix="drop or label the empty rows")
        values = [names_of[int(v)] for v in values]
        default = list(names_of)
        keys = values
    else:
        keys, default = _label_names(values, where)
    names = default if classes is None else [str(c) for c in classes]
    lookup = {c: i for i, c in enumerate(names)}
    lower = {c.lower(): i for i, c in enumerate(names)}
    raw_bool = names_of is None and default == ["false", "true"] and classes is not None
    ids = []
    for i, (k, v) in enumerate(zip(keys, values)):
        if str(k) in lookup:
            ids.append(lookup[str(k)])
        elif raw_bool and str(bool(v)).lower() in lower:
            ids.append(lower[str(bool(v)).lower()])
        elif isinstance(k, int) and 0 <= k < len(names):  # by index into the declared classes
            ids.append(k)
        else:
            raise DataError(f"row {i + 1} has label '{v}' outside the class set {names}", where=where,
                            fix="fix the label or declare every class (config: classes)")
    y = np.asarray(ids, dtype=np.int64)
    if len(names) < 2 or len(set(ids)) < 2:
        present = sorted({names[j] for j in ids})
        raise DataError(f"fewer than 2 classes (labels present: {present})", where=where,
                        fix="a classification task needs at least two classes with examples")
    return y, names


def _shape(columns: list[str]) -> str | None:
    for name, cols in SHAPES.items():
        if all(c in columns for c in cols):
            return name
    return None


def _binary(answers: list[Any], where: str) -> np.ndarray:
    out = []
    for i, a in enumerate(answers):
        if isinstance(a, (bool, np.bool_)) or (isinstance(a, (int, np.integer)) and a in (0, 1)):
            out.append(int(a))
        elif isinstance(a, str) and a.strip().lower() in {"true", "false"}:
            out.append(int(a.strip().lower() == "true"))
        else:
            raise DataError(f"row {i + 1} has answer {a!r}, not a bool", where=where,
                            fix="boolq answers must be true/false (or 0/1)")
    return np.asarray(out, dtype=np.int64)


def load_hf_task(task: str, classes: list[str] | None = None, seed: int = 0, noise: float | None = None
                 ) -> ClassificationData:
    """``hf:PATH[:TEXT:LABEL]`` as a text task. ``seed`` draws sciq's distractors and anthropic_hh's
    chosen/rejected coin flips; ``classes`` declares the generic form's class set; ``noise`` is ignored
    (a text task gets its weak view from the encoder)."""
    del noise
    path, text_col, label_col = parse_hf_task(task)
    where = task
    splits = _load_splits(path, where)
    if sum(len(d) for _, d in splits) == 0:
        raise DataError("the dataset has no rows", where=where, fix="save a dataset with examples")
    columns = list(splits[0][1].column_names)
    stem = Path(path).name or "dataset"
    if text_col is None:
        shape = _shape(columns)
        if shape is None:
            known = "; ".join(f"{k} ({', '.join(v)})" for k, v in SHAPES.items())
            raise DataError(f"no known dataset shape in columns {columns}", where=where,
                            fix=f"known shapes: {known}; {COLUMNS_FIX}")
        if shape == "text-label":
            text_col, label_col = "text", "label"
    else:
        shape = "columns"
    rng = np.random.default_rng(seed)
    if shape in ("columns", "text-label"):
        assert text_col is not None and label_col is not None
        texts = _texts(_column(splits, text_col, where), text_col, where)
        y, names = _encode_labels(_column(splits, label_col, where), splits[0][1].features.get(label_col),
                                  classes, where)
        desc = f"HF dataset {path}: text '{text_col}', label '{label_col}'"
        return ClassificationData(f"hf-{stem}", names, y, texts=texts, description=desc)
    if shape == "sciq":
        q = _texts(_column(splits, "question", where), "question", where)
        right = _texts(_column(splits, "correct_answer", where), "correct_answer", where)
        wrong = [_texts(_column(splits, f"distractor{k}", where), f"distractor{k}", where) for k in (1, 2, 3)]
        pick = rng.integers(0, 3, size=len(q))
        labels = (rng.random(len(q)) < 0.5).astype(np.int64)
        if len(set(labels.tolist())) < 2:
            raise DataError(f"fewer than 2 classes ({len(q)} question(s) gave one label)", where=where,
                            fix="use a dataset with more questions")
        texts = [f"Q: {question}\nA: {right[i] if labels[i] else wrong[pick[i]][i]}" for i, question in enumerate(q)]
        desc = (f"HF dataset {path} (sciq): 'Q: question\\nA: answer', by a seeded coin flip the correct answer (1) "
                "or a distractor (0)")
        return ClassificationData(f"hf-{stem}", ["wrong", "right"], np.asarray(labels), texts=texts,
                                  description=desc)
    if shape == "boolq":
        q = _texts(_column(splits, "question", where), "question", where)
        passage = _texts(_column(splits, "passage", where), "passage", where)
        y = _binary(_column(splits, "answer", where), where)
        if len(set(y.tolist())) < 2:
            raise DataError(f"fewer than 2 classes (every answer is {bool(y[0])})", where=where,
                            fix="a classification task needs both true and false answers")
        texts = [f"{p}\n{question}" for p, question in zip(passage, q)]
        return ClassificationData(f"hf-{stem}", ["false", "true"], y, texts=texts,
                                  description=f"HF dataset {path} (boolq): passage + question -> answer")
    chosen = _texts(_column(splits, "chosen", where), "chosen", where)
    rejected = _texts(_column(splits, "rejected", where), "rejected", where)
    y = (rng.random(len(chosen)) < 0.5).astype(np.int64)
    if len(set(y.tolist())) < 2:
        raise DataError(f"fewer than 2 classes ({len(chosen)} row(s) gave one label)", where=where,
                        fix="use a dataset with more rows")
    texts = [c if lab else r for c, r, lab in zip(chosen, rejected, y)]
    return ClassificationData(f"hf-{stem}", ["rejected", "chosen"], y, texts=texts,
                              description=f"HF dataset {path} (anthropic_hh): chosen (1) or rejected (0), seeded")
