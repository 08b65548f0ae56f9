"""Ray backend: each group of trials is one Ray Tune trial (one CPU); Tune's ASHA scheduler stops unpromising
trials of a study that reports intermediate results. Local Ray by default, or --address for a cluster."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from transferlab.core.errors import ConfigError


def run_on_tune(command: str, store_root: str, groups: list[list[dict[str, Any]]], sweep: str,
                address: str | None, mirrors: tuple[str, ...] = (), scheduler: str | None = None
                ) -> list[dict[str, Any]]:
    """Each group is one Ray Tune trial (one CPU). With ``scheduler`` (``asha``) each trial is one config that
    reports the study's intermediate metric, and Tune stops the unpromising ones early; their runs are
    recorded as ``stopped``. Returns the trials' metric rows."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("the Ray backend needs Ray Tune installed", fix="pip install 'transferlab[ray]'") from None
    started_here = not ray.is_initialized()
    # Ray's driver prints worker and raylet messages on stdout; keep stdout for --json.
    with contextlib.redirect_stdout(sys.stderr):
        if started_here:
            _init(ray, address)
        try:
            return _tune(tune, command, store_root, groups, sweep, mirrors, scheduler)
        finally:
            if started_here:
                ray.shutdown()


def _init(ray: Any, address: str | None) -> None:
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
        check_reachable(address)
    else:
        kwargs["num_cpus"] = int(os.environ.get("TRANSFERLAB_RAY_CPUS", os.cpu_count() or 1))
        # A local instance leaves out-of-memory handling to the OS instead of killing and retrying
        # tasks whenever the whole machine is busy.
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - ray raises several types for an unreachable cluster
        msg = " ".join(str(err).split())[:200]
        raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''} ({msg})",
                          where="--address" if address else "--backend ray",
                          fix="check the address (ray status on the head node), or drop --address for "
                              "local Ray") from None


def _tune(tune: Any, command: str, store_root: str, groups: list[list[dict[str, Any]]], sweep: str,
          mirrors: tuple[str, ...], scheduler: str | None) -> list[dict[str, Any]]:
    from pathlib import Path

    from transferlab.studies.registry import get_study

    if not groups:
        return []
    study = get_study(command)
    sched, metric, mode = None, None, None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        metric, mode = study.intermediate_metric, "max"
        sched = ASHAScheduler(time_attr="step", max_t=10**9, grace_period=int(os.environ.get(
            "TRANSFERLAB_ASHA_GRACE", "200")), reduction_factor=3)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, command=command, store_root=store_root, groups=groups, sweep=sweep,
                             mirrors=mirrors, report_intermediate=sched is not None),
        {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={"group": tune.grid_search(list(range(len(groups))))},
        tune_config=tune.TuneConfig(scheduler=sched, metric=metric, mode=mode),
        run_config=tune.RunConfig(name=sweep, storage_path=str(Path(store_root).resolve() / "mirrors" / "ray"),
                                  verbose=0),
    )
    results = tuner.fit()
    rows: list[dict[str, Any]] = []
    for res in results:
        m = res.metrics or {}
        if m.get("rows_json"):
            import json

            rows += json.loads(m["rows_json"])
    return rows  # a trial the scheduler stopped recorded itself as stopped in the store


def _trial(config: dict[str, Any], command: str, store_root: str, groups: list[list[dict[str, Any]]],
           sweep: str, mirrors: tuple[str, ...], report_intermediate: bool) -> None:
    """One Tune trial: run its group through the study, report intermediate results (for a scheduler) and, at
    the end, the rows of trial metrics."""
    import json

    import torch
    from ray import tune

    from transferlab.core import progress
    from transferlab.sweep.runner import execute_group

    torch.set_num_threads(1)
    progress.set_quiet(True)

    last: dict[str, Any] = {}

    def reporter(metrics: dict[str, Any]) -> bool:
        """Report to Tune; True when its scheduler has stopped this trial (Tune's report then exits the
        thread, which is caught here so the study can end the run and record it as stopped)."""
        last.update({k: v for k, v in metrics.items() if v is not None})
        try:
            tune.report(dict(last))
        except SystemExit:
            return True
        return False

    rows = execute_group(command, store_root, groups[int(config["group"])], sweep, mirrors,
                         reporter=reporter if report_intermediate else None)
    # the last intermediate metrics ride along: a scheduler checks its metric in every result
    try:
        tune.report({**last, "rows_json": json.dumps(rows, default=str), "trial_done": 1})
    except SystemExit:
        pass  # stopped: the driver reads this trial's rows from the store


def check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail in seconds, with one line, when a Ray head's port does not answer (ray.init would retry for
    minutes). ``auto`` and ``local`` are left to Ray. Timeout: TRANSFERLAB_RAY_CONNECT_TIMEOUT (5 s)."""
    import socket

    if address in ("auto", "local"):
        return
    rest = address.removeprefix("ray://")
    host, sep, port_s = rest.rpartition(":")
    if not sep:
        host, port_s = rest, ("10001" if address.startswith("ray://") else "6379")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"--address {address!r} has no valid port", where="--address",
                          fix="write it as HOST:PORT, e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001") from None
    wait = timeout if timeout is not None else float(os.environ.get("TRANSFERLAB_RAY_CONNECT_TIMEOUT", "5"))
    try:
        socket.create_connection((host.strip("[]"), port), timeout=wait).close()
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at {address} ({err.strerror or type(err).__name__})",
                          where="--address",
                          fix="check the address (`ray status` on the head node), or drop --address for "
                              "local Ray") from None
