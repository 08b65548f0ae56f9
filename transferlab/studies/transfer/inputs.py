"""Reading and validating the users' CSV files of runs. Every refusal names the file, column or row.

Rows are numbered as in a spreadsheet of the data: "row 1" is the first line after the header
(line 2 of the file).

``fit chinchilla``: columns ``N`` (parameters), ``D`` (training tokens) and ``loss``; ``C``
(training FLOPs) may replace ``D``, and then ``D = C / (6 N)``. Epoch AI's names are accepted too:
``Model Size`` for N, ``Training FLOP`` for C, ``Training Tokens`` for D. Other columns are ignored.

``fit transfer``: columns ``kind`` (``scratch`` or ``finetune``, any case), ``N``, ``D`` (examples or
tokens seen on the target; D_F for fine-tuning rows) and ``loss`` (held-out target loss).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.core.errors import DataError

ALIASES = {
    "N": ("N", "Model Size"),
    "D": ("D", "Training Tokens"),
    "C": ("C", "Training FLOP"),
    "loss": ("loss",),
    "kind": ("kind",),
}
KINDS = {"scratch": "scratch", "finetune": "finetune", "fine-tune": "finetune", "fine_tune": "finetune"}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_table(path: str | Path) -> pd.DataFrame:
    """The CSV as a DataFrame of strings-or-numbers, or a DataError saying why it is not one."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", where=str(p), fix="pass the path of an existing CSV file")
    if not p.is_file():
        raise DataError("not a file", where=str(p), fix="pass a CSV file, not a folder")
    head = p.read_bytes()[:4096]
    if b"\x00" in head:
        raise DataError(
            "not a CSV file (it contains binary data)",
            where=str(p),
            fix="pass a comma-separated text file with a header row",
        )
    try:
        df = pd.read_csv(p, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            "the file is empty", where=str(p), fix="add a header row and one row per run"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"not a readable CSV file ({msg})",
            where=str(p),
            fix="pass a comma-separated text file with a header row",
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _column(df: pd.DataFrame, key: str) -> str | None:
    for name in ALIASES[key]:
        if name in df.columns:
            return name
    return None


def _missing(path: str | Path, df: pd.DataFrame, needed: list[str], extra_hint: str = "") -> DataError:
    found = ", ".join(repr(c) for c in df.columns) or "none"
    return DataError(
        f"missing column(s) {', '.join(needed)} (found {found})",
        where=str(path),
        fix=f"add the columns{extra_hint}; the header must be the first line",
    )


def _numbers(path: str | Path, df: pd.DataFrame, col: str, label: str, rows: np.ndarray) -> np.ndarray:
    """Column as floats; refuses non-numbers and values that are not finite and > 0, naming the row."""
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    for i in range(len(vals)):
        v = vals[i]
        if not np.isfinite(v) or v <= 0:
            shown = raw.iloc[i]
            if np.isfinite(v):
                what = f"{_show(shown)} must be > 0"
            elif _is_inf(shown):
                what = f"{_show(shown)} must be finite"
            elif pd.isna(shown):
                what = "is empty"
            else:
                what = f"{_show(shown)} is not a number"
            raise DataError(
                f"row {rows[i]} (line {rows[i] + 1}), column '{col}' ({label}) {what}",
                where=str(path),
                fix="correct or remove that row",
            )
    return vals


def _show(x: object) -> str:
    if isinstance(x, (int, float, np.integer, np.floating)):
        return f"{float(x):g}"
    return repr(str(x))


def _is_inf(x: object) -> bool:
    try:
        return bool(np.isinf(float(x)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@dataclass
class ChinchillaData:
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    rows: np.ndarray  # 1-based data row of every point
    D_from: str  # "D" or "C" (then D = C / 6N)
    columns: dict[str, str]  # role -> column name used
    C: np.ndarray | None = None

    @property
    def compute(self) -> np.ndarray:
        return 6.0 * self.N * self.D if self.C is None else self.C


def read_chinchilla(path: str | Path) -> ChinchillaData:
    df = read_table(path)
    cn, cd, cc, cl = (_column(df, k) for k in ("N", "D", "C", "loss"))
    missing = [k for k, c in (("N", cn), ("loss", cl)) if c is None]
    if cd is None and cc is None:
        missing.insert(1, "D (or C)")
    if missing:
        raise _missing(path, df, missing, " N, D (training tokens) or C (training FLOPs), and loss")
    if len(df) == 0:
        raise DataError("the file has a header but no rows", where=str(path), fix="add one row per run")
    rows = np.arange(1, len(df) + 1)
    N = _numbers(path, df, cn, "parameters N", rows)
    L = _numbers(path, df, cl, "loss", rows)
    C = None
    if cd is not None:
        D = _numbers(path, df, cd, "tokens D", rows)
        used = {"N": cn, "D": cd, "loss": cl}
        src = "D"
    else:
        C = _numbers(path, df, cc, "training FLOPs C", rows)
        D = C / (6.0 * N)
        used = {"N": cn, "C": cc, "loss": cl}
        src = "C"
    return ChinchillaData(N=N, D=D, loss=L, rows=rows, D_from=src, columns=used, C=C)


@dataclass
class TransferData:
    scratch_N: np.ndarray
    scratch_D: np.ndarray
    scratch_loss: np.ndarray
    scratch_rows: np.ndarray
    N: np.ndarray
    D_F: np.ndarray
    loss: np.ndarray
    rows: np.ndarray  # 1-based data rows of the fine-tuning runs


def read_transfer(path: str | Path) -> TransferData:
    df = read_table(path)
    cols = {k: _column(df, k) for k in ("kind", "N", "D", "loss")}
    missing = [k for k, c in cols.items() if c is None]
    if missing:
        raise _missing(path, df, missing, " kind (scratch|finetune), N, D and loss")
    if len(df) == 0:
        raise DataError("the file has a header but no rows", where=str(path), fix="add one row per run")
    rows = np.arange(1, len(df) + 1)
    kinds = []
    for i, raw in enumerate(df[cols["kind"]]):
        k = KINDS.get(str(raw).strip().lower())
        if k is None:
            raise DataError(
                f"row {rows[i]} (line {rows[i] + 1}), column 'kind': {raw!r} is not scratch or finetune",
                where=str(path),
                fix="write scratch or finetune in every row",
            )
        kinds.append(k)
    kind = np.array(kinds)
    N = _numbers(path, df, cols["N"], "parameters N", rows)
    D = _numbers(path, df, cols["D"], "target data D", rows)
    L = _numbers(path, df, cols["loss"], "loss", rows)
    s, f = kind == "scratch", kind == "finetune"
    if not s.any():
        raise DataError(
            "no scratch rows: the from-scratch law L(N, D) cannot be fitted",
            where=str(path),
            fix="add runs with kind=scratch (models trained from scratch on the target)",
        )
    if not f.any():
        raise DataError(
            "no finetune rows: there is nothing to measure transfer on",
            where=str(path),
            fix="add runs with kind=finetune (pretrained models fine-tuned on the target)",
        )
    return TransferData(
        scratch_N=N[s],
        scratch_D=D[s],
        scratch_loss=L[s],
        scratch_rows=rows[s],
        N=N[f],
        D_F=D[f],
        loss=L[f],
        rows=rows[f],
    )
