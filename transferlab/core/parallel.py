"""Independent jobs on several CPU cores: one process per core, one thread per process.

Small models (the zoo's xxs..m) do not scale over threads: a step is too little work to split, so two
threads on two cores run barely faster than one (docs/RESULTS.md, zoo throughput). Two processes of one
thread each finish two independent runs in about the time of one. :func:`run_parallel` is that, with
the standard library's process pool (``spawn``, so no forked torch state), longest job first.

The jobs must be top-level functions with picklable arguments, and safe to run at the same time: the
store's runs are locked one owner each (:mod:`transferlab.store.lock`), the zoo's manifest is updated
under a file lock.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int) -> int:
    """``0``: one per core; otherwise as given (at least 1)."""
    return cpu_cores() if workers == 0 else max(1, workers)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_parallel(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], workers: int,
                 cost: Sequence[float] | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in that order, on ``workers`` processes of one thread each.

    ``cost`` (one number a job, e.g. parameters x steps) starts the longest first, so the last job to
    finish is a short one. With one worker or one job it runs in this process, nothing spawned. An
    exception in a job is raised here once the jobs already started have ended.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -(cost[i] if cost is not None else 0.0))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(1,)) as pool:
        futures = {i: pool.submit(fn, *jobs[i]) for i in order}
        try:
            return [futures[i].result() for i in range(len(jobs))]
        except BaseException:
            for f in futures.values():
                f.cancel()  # the jobs not yet started never start
            raise
