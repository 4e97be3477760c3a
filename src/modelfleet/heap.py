"""Tell glibc's allocator when to give memory back to the OS and when to keep it (Linux only; no-ops elsewhere)."""

from __future__ import annotations

import contextlib
import ctypes
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_free_heap() -> None:
    """Give pages that were freed but are still mapped back to the OS (after a one-off burst of allocation)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


def keep_freed_memory(max_block_bytes: int = 64 << 20) -> None:
    """Keep freed memory mapped so that the next allocation of the same size reuses it.

    By default glibc serves blocks of 128 KiB and more with a fresh mmap and unmaps them when freed, and
    trims the heap's top whenever 128 KiB are free; every reuse then faults its pages in again (several
    microseconds a page on a virtual machine). A numpy temporary the size of an HDR histogram's
    counters costs ~50 faults that way, and a loop doing such work every second stalls for milliseconds.
    Blocks up to ``max_block_bytes`` now come from the heap, and freed heap is not trimmed.
    """
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(max_block_bytes))
            libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2 * max_block_bytes))
