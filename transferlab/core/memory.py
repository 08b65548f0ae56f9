"""The C allocator and training loops: reuse freed memory while training, give it back when asked.

**Reuse** (``reuse_freed_memory``): a training step allocates and frees the same few megabyte-sized
activations every step. With glibc's defaults, blocks that large are fresh ``mmap``s (or heap that is
trimmed back to the system), so every step page-faults them in again: ~1,000 minor faults per step of
the default grok model, 5.9 ms per step instead of 4.7 ms (2 threads; for 16 members about 10 of
~90 ms per step). A fixed mmap threshold of 32 MiB (glibc's largest) and a 256 MiB trim threshold keep those
blocks in the heap: ~0 faults per step.

**Give back** (``release_freed_memory``): loops that allocate and free many large, same-sized tensors
(say a [batch, T, vocab] log-softmax per batch of held-out windows) can make glibc's allocator keep
gigabytes of freed, fragmented heap: its mmap threshold grows after the first large free, later tensors
come from the heap, and resident memory climbs until the process is killed (measured: the EFT zoo demo's
scoring reached 23 GB). ``malloc_trim(0)`` returns the free pages; on other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024


@functools.cache
def _libc_function(name: str):  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the heap for reuse (once per process); True when glibc took
    the setting. A no-op elsewhere."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_freed_memory() -> bool:
    """Ask the C allocator to return freed memory; True when it could be asked."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


# ---- memory bounds: refuse sizes that cannot fit, before anything is allocated ------------------------
#
# Each study estimates the bytes its config needs (a lower bound: the tensors it must hold at once) and
# calls ``check_fits``. The cap is the machine's physical memory (MemTotal in /proc/meminfo, else
# os.sysconf), or TRANSFERLAB_MAX_MEMORY_GB when set (to allow swap, or to keep a shared machine safe).

MEMORY_ENV = "TRANSFERLAB_MAX_MEMORY_GB"
GB = 1e9


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None when it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_cap_bytes() -> tuple[float | None, str]:
    """(cap in bytes, where it comes from)."""
    raw = os.environ.get(MEMORY_ENV)
    if raw:
        try:
            gb = float(raw)
            if not gb > 0 or gb != gb or gb == float("inf"):
                raise ValueError
        except ValueError:
            from transferlab.core.errors import ConfigError

            raise ConfigError(f"{MEMORY_ENV}={raw!r} is not a positive number of GB",
                              fix=f"e.g. export {MEMORY_ENV}=64") from None
        return gb * GB, f"{MEMORY_ENV}={raw}"
    total = machine_memory_bytes()
    return (None, "unknown") if total is None else (float(total), "this machine's memory")


def check_fits(nbytes: float, what: str, fix: str) -> None:
    """Raise ValueError (pydantic turns it into the field's error) when ``nbytes`` exceeds the cap."""
    cap, source = memory_cap_bytes()
    if cap is None or nbytes <= cap:
        return
    raise ValueError(
        f"{what} needs about {nbytes / GB:,.1f} GB, more than the {cap / GB:,.1f} GB of {source}; {fix} "
        f"(or raise the cap with {MEMORY_ENV})"
    )


def max_runs() -> int:
    """How many run folders one command may create (TRANSFERLAB_MAX_RUNS, default 1,000)."""
    raw = os.environ.get("TRANSFERLAB_MAX_RUNS", "1000")
    try:
        n = int(raw)
    except ValueError:
        n = 1000
    return max(n, 1)
