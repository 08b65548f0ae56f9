"""One call per CLI command: read a user's CSV -> fit -> report, recorded as a run in the store.

    from transferlab.studies.transfer import ChinchillaFitConfig, fit_chinchilla_csv
    summary = fit_chinchilla_csv(ChinchillaFitConfig(file="runs.csv"), store="runs")

Bad input raises a DataError / FitError naming the file (and column or row) before anything is
written. Everything is recomputed on every call (seconds); the run folder keyed by the config
(which includes the file's content hash) holds the latest summary.json and report.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.core.errors import TransferlabError
from transferlab.store import Store
from transferlab.store.run import report_target
from transferlab.studies.transfer import analysis, inputs, report
from transferlab.studies.transfer.config import ChinchillaFitConfig, TransferFitConfig

STUDY = "fit"


def _located(err: TransferlabError, path: str) -> TransferlabError:
    """The same error, naming the file when it does not already."""
    if err.where is None:
        return type(err)(err.what, where=path, fix=err.fix)
    return err


def _finish(
    cfg: Any,
    result_summary: dict[str, Any],
    write,
    store: Store | str | Path | None,
    out: str | Path | None,
    kind: str,
) -> dict[str, Any]:
    run_, path = report_target(store, STUDY, cfg, out, Path(cfg.file).with_suffix(f".{kind}.html"))
    write(path)
    summary = {**result_summary, "file": cfg.file, "report": str(path)}
    if run_ is not None:
        summary["run_id"] = run_.id
        run_.finish(summary)
    return summary


def fit_chinchilla_csv(
    cfg: ChinchillaFitConfig, store: Store | str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """``transferlab fit chinchilla``: the JSON summary, with ``report`` (and ``run_id`` with a store)."""
    data = inputs.read_chinchilla(cfg.file)
    cfg = cfg.model_copy(update={"file_sha256": inputs.sha256(cfg.file)})
    try:
        result = analysis.analyze_chinchilla(data.N, data.D, data.loss, data.rows, cfg)
    except TransferlabError as err:
        raise _located(err, cfg.file) from None
    summary = {**result.summary, "columns": data.columns, "D_from": data.D_from}
    return _finish(
        cfg, summary, lambda p: report.write_chinchilla(result, p, cfg.file), store, out, "chinchilla"
    )


def fit_transfer_csv(
    cfg: TransferFitConfig, store: Store | str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """``transferlab fit transfer``: the JSON summary, with ``report`` (and ``run_id`` with a store)."""
    data = inputs.read_transfer(cfg.file)
    cfg = cfg.model_copy(update={"file_sha256": inputs.sha256(cfg.file)})
    try:
        result = analysis.analyze_transfer(
            data.scratch_N, data.scratch_D, data.scratch_loss, data.N, data.D_F, data.loss, data.rows, cfg
        )
    except TransferlabError as err:
        raise _located(err, cfg.file) from None
    return _finish(
        cfg, result.summary, lambda p: report.write_transfer(result, p, cfg.file), store, out, "transfer"
    )
