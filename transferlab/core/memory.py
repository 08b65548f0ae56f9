"""Give freed heap memory back to the operating system.

Loops that allocate and free many large, same-sized tensors (say a [batch, T, vocab] log-softmax per
batch of held-out windows) can make glibc's allocator keep gigabytes of freed, fragmented heap: its
mmap threshold grows after the first large free, later tensors come from the heap, and resident
memory climbs until the process is killed (measured: the EFT zoo demo's scoring reached 23 GB).
``malloc_trim(0)`` returns the free pages; on other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Ask the C allocator to return freed memory; True when it could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
