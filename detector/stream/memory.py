"""A long-running process's memory and pauses: what to settle before the first batch, and
the heap trim its loop calls every 10 s.

numpy keeps freed data buffers of fewer than 1,024 bytes in a cache of its own, up to
seven per byte size, and hands them out again instead of calling malloc: at most about
3.5 MB. A scoring loop whose batch sizes vary keeps meeting sizes it has not freed
before, so the cache fills over minutes to hours and the process's RSS creeps up by a
few MB before it levels off. To an operator that looks like a leak, and a memory limit
sized from the first minutes of a run is too tight. tracemalloc does not show it:
numpy stops tracing a buffer when it caches it (measured in the benchmark soak: glibc's
in-use bytes grew while tracemalloc's total and the object count stayed flat). Filling
the cache once costs those same few MB at once, in milliseconds, and leaves nothing to
creep.

Python's full (generation 2) garbage collection walks every tracked object: after the
imports of the model stack that is ~135,000 objects and took 70-80 ms here (33 ms in the
fetch process), a stall that showed as the p99 of alert latency. What start-up built
lives as long as the process, so it is frozen out of the collector's way.

glibc's malloc serves blocks of 128 kB and more from mmap, and gives them back to the
system when freed, but it raises that threshold to the size of each such block freed
(up to 32 MB). After the first backlog (the broker stalls, then a poll returns a full
fetch of about 1 MB per partition) the big fetch buffers and batches come from the heap,
which keeps its high-water mark and fragments: in a soak with a 3 s stall every 30 s the
RSS of the service and fetch processes went 208 -> 217 MB and wandered 211-217 MB after.
Pinning the threshold where glibc starts keeps them on mmap: 208 -> 210 MB at the first
stall, then flat.

What still came from the heap (blocks under 128 kB) kept its high-water mark: free()
shrinks the heap only from its top, so free pages below a block in use stay resident.
With the test broker falling further behind, and sending bigger fetches, the fetch
process's RSS rose in 0.1-0.3 MB steps (0.5 MB in 4 minutes). Both processes now call
malloc_trim every 10 s (about 0.4 ms), which hands every whole free page back; in a
5-minute soak the two processes then stayed at 209.4-209.9 MB from 70 s on.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager

# numpy's NBUCKETS and NCACHE (numpy/_core/src/multiarray/alloc.c), unchanged since 1.x:
# a freed buffer of n < 1024 bytes is kept if fewer than 7 of that size are kept already.
NUMPY_CACHED_BELOW_BYTES = 1024
NUMPY_CACHED_PER_SIZE = 7


# malloc.h: mallopt's parameter number for M_MMAP_THRESHOLD, and glibc's default for it.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


# How often a long-running process hands its heap's free pages back (malloc_trim).
HEAP_TRIM_INTERVAL_S = 10.0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None  # musl and others: neither a dynamic threshold nor malloc_trim
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def pin_malloc_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (no dynamic raise); False if not glibc."""
    libc = _glibc()
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes)) if libc is not None else False


def trim_malloc_heap() -> bool:
    """Give every whole free page of the heap back to the system; False if not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class HeapTrimmer:
    """Calls ``trim_malloc_heap`` at most once per ``interval_s``, from a process's loop."""

    def __init__(self, interval_s: float = HEAP_TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            trim_malloc_heap()


def fill_numpy_buffer_cache() -> None:
    """Allocate and free seven buffers of every cached size, so the cache is full."""
    import numpy as np  # here, not at the top: the fetch process imports this module too

    for nbytes in range(1, NUMPY_CACHED_BELOW_BYTES):
        held = [np.empty(nbytes, dtype=np.uint8) for _ in range(NUMPY_CACHED_PER_SIZE)]
        del held  # freed together: all seven go into the cache's slots for this size


def freeze_startup_objects() -> None:
    """Collect once, then move every surviving object out of future collections.

    Full collections then walk only what was created since. Collecting first keeps
    garbage from being frozen (frozen objects are never collected).
    """
    gc.collect()
    gc.freeze()


@contextmanager
def tuned_for_scoring() -> Iterator[None]:
    """The process set up for the scoring loop, for as long as it runs.

    RSS stays flat under load only if big buffers stay on mmap and numpy's buffer cache is
    full from the start; full collections stall batches only if they need not walk the
    imported modules (the measurements are above). One BLAS thread: batches are ~1000 x d,
    too small to gain from threads, and idle OpenBLAS workers spin on the cores the Kafka
    client (and often the broker) needs.
    """
    from threadpoolctl import threadpool_limits

    pin_malloc_mmap_threshold()
    fill_numpy_buffer_cache()
    freeze_startup_objects()
    with threadpool_limits(limits=1):
        yield
