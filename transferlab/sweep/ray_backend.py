"""Ray backend: each ensemble group is one Ray task (one CPU). Local Ray by default, or --address."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from transferlab.core.errors import ConfigError


def run_on_ray(store_root: str, groups: list[list[dict[str, Any]]], sweep: str, address: str | None,
               mirrors: tuple[str, ...] = ()) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray backend needs ray installed", fix="pip install 'transferlab[ray]'") from None
    from transferlab.sweep.runner import execute_group

    started_here = not ray.is_initialized()
    # Ray's driver prints worker and raylet messages on stdout; keep stdout for --json.
    with contextlib.redirect_stdout(sys.stderr):
        _run(ray, started_here, store_root, groups, sweep, address, mirrors)
    _ = execute_group  # imported so a missing module fails here, before tasks are sent


def _run(ray: Any, started_here: bool, store_root: str, groups: list[list[dict[str, Any]]], sweep: str,
         address: str | None, mirrors: tuple[str, ...]) -> None:
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = int(os.environ.get("TRANSFERLAB_RAY_CPUS", os.cpu_count() or 1))
            # A local instance leaves out-of-memory handling to the OS instead of killing and retrying
            # tasks whenever the whole machine is busy.
            os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        if address:
            check_reachable(address)
        try:
            ray.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - ray raises several types for an unreachable cluster
            msg = " ".join(str(err).split())[:200]
            raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''} ({msg})",
                              where="--address" if address else "--backend ray",
                              fix="check the address (ray status on the head node), or drop --address for "
                                  "local Ray") from None
    try:
        task = ray.remote(num_cpus=1)(_execute_in_worker)
        refs = [task.remote(store_root, g, sweep, mirrors) for g in groups]
        ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()


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


def _execute_in_worker(store_root: str, group: list[dict[str, Any]], sweep: str,
                       mirrors: tuple[str, ...]) -> list[str]:
    import torch

    from transferlab.core import progress
    from transferlab.sweep.runner import execute_group

    torch.set_num_threads(1)
    progress.set_quiet(True)
    return execute_group(store_root, group, sweep, mirrors)
